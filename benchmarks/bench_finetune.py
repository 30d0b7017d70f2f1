#!/usr/bin/env python3
"""Fine-tuning at full size (issue 18): seconds per step, peak GiB, and whether the loss falls over 200 steps.

    python benchmarks/bench_finetune.py                                   # one H200: 16 frames of 288x512, 200 steps
    python benchmarks/bench_finetune.py --device cpu --net configs/toy.yaml --frames 4 --size 64x112 --steps 20   # CPU smoke

Random weights at the full size (configs/eval.yaml, 668 M parameters) stand in for the
public checkpoint: they are written in tracefield's safetensors format, as `tracefield
download` leaves the public one, and ``tracefield train --config configs/train_finetune.yaml
init_checkpoint=<that file>`` runs in this process exactly as a user would type it (so
that the GPU's peak memory can be read). Scenes are the synthetic ones rendered on the fly.
Seconds per step are the median over the steps after the first 10 (``log.csv``'s
``seconds``); the loss is the mean total of the first and of the last 20 steps.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tracefield.cli import main as tracefield
from tracefield.model import load_model, resolve_device
from tracefield.model.checkpoint import save_checkpoint
from tracefield.paths import REPO_ROOT

WINDOW = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", default=str(REPO_ROOT / "configs" / "eval.yaml"), help="network config (default: the full size)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", default="288x512", help="HxW (default: 288x512)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work", type=Path, help="folder for the stand-in checkpoint and the run (default: a temporary one)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    height, width = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        stand_in = load_model(args.net, None, device=device, dtype="float32")
        weights = save_checkpoint(stand_in.state_dict(), work / "stand_in.safetensors", stand_in.net_config.to_json())
        del stand_in
        written = time.perf_counter() - started
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        code = tracefield(["train", "--config", str(REPO_ROOT / "configs" / "train_finetune.yaml"), "--device", str(device), "-q",
                           f"model={args.net}", f"init_checkpoint={weights}", f"output={work / 'run'}", f"optim.steps={args.steps}",
                           f"data.min_frames={args.frames}", f"data.max_frames={args.frames}", f"data.height={height}", f"data.width={width}",
                           f"checkpoint_every={args.steps}"])
        wall = time.perf_counter() - started
        if code:
            raise SystemExit(f"tracefield train exited with {code}")
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        with open(work / "run" / "log.csv") as handle:
            rows = list(csv.DictReader(handle))
    seconds = statistics.median(float(r["seconds"]) for r in rows[10:] or rows)
    first = statistics.mean(float(r["total"]) for r in rows[:WINDOW])
    last = statistics.mean(float(r["total"]) for r in rows[-WINDOW:])
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"\n{args.net}, {args.frames} frames of {height}x{width}, batch 1, {len(rows)} steps on {gpu}")
    print("| what | figure |\n|---|---|")
    print(f"| stand-in checkpoint written | {written:.0f} s |")
    print(f"| whole run (load, {len(rows)} steps, checkpoint) | {wall:.0f} s |")
    print(f"| seconds per step (median after 10) | {seconds:.3f} |")
    print(f"| peak GPU memory | {peak:.1f} GiB |")
    print(f"| loss, mean of first {WINDOW} -> last {WINDOW} steps | {first:.3f} -> {last:.3f} ({'falls' if last < first else 'does NOT fall'}) |")


if __name__ == "__main__":
    main()
