#!/usr/bin/env python3
"""The shipped small checkpoint on the CPU: one 16-frame 256x448 pass, and the whole `tracefield infer` on the example.

    python benchmarks/bench_small_cpu.py [--repeats 3]

The training issue's target is a 16-frame 256x448 pass in <= 10 s on a 2-core CPU. The
first figure times ``predict`` on the heads ``tracefield infer`` runs (and with the local
head too); the second runs the command a user types, imports, masks, writing and preview
included, on ``examples/synthetic``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from tracefield.model import TraceAnything, load_model
from tracefield.paths import REPO_ROOT, checkpoint_dir, config_path

FRAMES, HEIGHT, WIDTH = 16, 256, 448


def time_predict(model: TraceAnything, repeats: int, local_head: bool) -> list[float]:
    images = torch.rand(1, FRAMES, 3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0)) * 2 - 1
    times = torch.linspace(0, 1, FRAMES)[None]
    seconds = []
    with torch.inference_mode():
        for _ in range(repeats):
            start = time.perf_counter()
            model.predict(images, times, local_head=local_head)
            seconds.append(time.perf_counter() - start)
    return seconds


def time_infer_command(repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "tracefield", "infer", str(REPO_ROOT / "examples" / "synthetic"), "--config", "small", "-o", out, "-q"], check=True)
            seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = load_model(config_path("small"), checkpoint_dir() / "tracefield-small.safetensors", device="cpu")
    rows = [
        ("predict, track + time heads (what infer runs)", time_predict(model, args.repeats, local_head=False)),
        ("predict, all three heads", time_predict(model, args.repeats, local_head=True)),
        ("`tracefield infer examples/synthetic --config small`", time_infer_command(args.repeats)),
    ]
    print(f"{torch.get_num_threads()} CPU threads, {FRAMES} frames of {HEIGHT}x{WIDTH}, {args.repeats} runs each (target: <= 10 s)")
    for name, seconds in rows:
        print(f"{name:55} median {statistics.median(seconds):5.2f} s  (min {min(seconds):.2f}, max {max(seconds):.2f})")


if __name__ == "__main__":
    main()
