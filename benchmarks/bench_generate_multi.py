#!/usr/bin/env python3
"""ATI generation across the GPUs of one machine, at the real 14B size: s/step, whole video, scaling, memory, error.

Random weights at the real dimensions are written once in the published layouts (as
``bench_generate.py`` does) and every run loads them through ``load_pipeline``. For each
GPU count G (1 and the powers of two up to the GPUs present, or ``--gpus``) and each mode,
G processes are started as ``tracefield generate --gpus G`` starts them
(:func:`tracefield.distributed.launch`), the pipeline is spread as it spreads it
(:func:`tracefield.generate.parallel.spread`), and at 480x832, 81 frames:

* seconds per denoising step (both guidance branches; the first step is not counted);
* prepare (encoders, VAE encode, motion patch, conditions shared) and decode (process 0);
* the whole 40-step video (prepare + 40 steps + decode; ``--whole-video`` measures one);
* speed-up and scaling efficiency against one GPU, peak GiB of each GPU;
* the latents after the timed steps against one GPU's in the same order of work (both
  branches in one batch for ``sequence``, one at a time for ``guidance``, ATI's order).

    python benchmarks/bench_generate_multi.py --root /tmp/gen --out multi/ --gpus 1,2   # then --gpus 4,8: the table
    python benchmarks/bench_generate_multi.py --root /tmp/gen --out multi/ --gpus 4,8   # shows every row in --out
    python benchmarks/bench_generate_multi.py --root /tmp/gen --out whole/ --gpus 8 --whole-video --compile

A short table is printed last; ``--size tiny --device cpu`` runs the same code in seconds
(``--gpus 2`` there starts two CPU processes talking through gloo).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from bench_generate import inputs, peak_gib, relative_error, reset_peak, sync, time_steps
from tracefield.distributed import World, collect, join, launch, leave
from tracefield.export.wan_sizes import aspect_bucket, latent_tokens
from tracefield.generate.layouts import write_layouts
from tracefield.generate.parallel import GUIDANCE, SEQUENCE, describe, plan_sequence, spread
from tracefield.generate.pipeline import GenerationOptions
from tracefield.generate.weights import ATI_DIR, WAN_DIR, load_pipeline

log = logging.getLogger("bench_generate_multi")
MODES = {"sequence": SEQUENCE, "guidance": GUIDANCE}
VIDEO_STEPS = 40
SHAPES = {"14b": (480, 832, 81), "tiny": (64, 96, 17)}  # tiny: 120 tokens, an even split on the CPU


@dataclasses.dataclass
class Run:
    """One measurement: G processes in one mode (G = 1: the references of both orders of work)."""

    gpus: int
    mode: str
    root: str
    out: str
    device: str
    steps: int
    height: int
    width: int
    frames: int
    tracks: int
    ring: int = 1
    shard_weights: bool = False
    compile: bool = False
    attention: str | None = None
    whole_video: bool = False

    @property
    def tag(self) -> str:
        return f"{self.gpus}-{self.mode}"


def measure(run: Run) -> int:
    """Each process's part of ``run``; process 0 writes its row (and latents) to ``run.out``."""
    world = World.from_env()
    device = join(world, torch.device(run.device))
    out = Path(run.out)
    started = time.perf_counter()
    pipe = load_pipeline(Path(run.root) / WAN_DIR, Path(run.root) / ATI_DIR, None, device, offload="model" if run.shard_weights else None)
    if run.attention:
        pipe.transformer.set_attention_backend(run.attention)
    options = GenerationOptions(steps=run.steps, max_area=run.height * run.width, frames=run.frames, batch_guidance=run.mode != GUIDANCE)
    row = {"gpus": world.size, "mode": run.mode}
    if world.size > 1:
        tokens = {"video": latent_tokens(*aspect_bucket(run.width, run.height, run.height * run.width), run.frames)}  # ATI's bucket
        plan = plan_sequence(MODES[run.mode], world.size, run.ring, pipe.transformer.config.num_attention_heads, tokens, device)
        spread(pipe, plan, world, run.shard_weights)
        if run.shard_weights:
            pipe.place(device)
        row["split"] = describe(plan)
    if run.compile:
        pipe.transformer.compile_repeated_blocks(fullgraph=True)
    sync(device)
    row["load_s"] = time.perf_counter() - started
    image, tracks = inputs(run.height, run.width, run.frames, run.tracks)

    reset_peak(device)
    start = time.perf_counter()
    conditions = pipe.prepare(image, "w1 w2 w3", tracks, options)
    if pipe.parallel is not None:
        conditions = pipe.parallel.same_conditions(conditions)
    sync(device)
    row["prepare_s"] = time.perf_counter() - start
    orders = {run.mode: options}
    if world.size == 1:  # the references: both orders of work
        orders = {"sequence": dataclasses.replace(options, batch_guidance=True), "guidance": dataclasses.replace(options, batch_guidance=False)}
    for name, order in orders.items():
        per_step, latent = time_steps(pipe, conditions, order, device)
        timed = per_step[1:] if len(per_step) > 1 else per_step  # the first step carries warm-up work (and compilation)
        row[f"s_per_step.{name}"] = float(np.median(timed))
        row["first_step_s"] = per_step[0]
        if world.leader:
            torch.save(latent.cpu(), out / f"latents-{world.size}-{name}.pt")
    if world.leader:
        start = time.perf_counter()
        pipe.decode(latent)
        sync(device)
        row["decode_s"] = time.perf_counter() - start
    if run.whole_video:
        start = time.perf_counter()
        pipe.generate(image, "w1 w2 w3", tracks, dataclasses.replace(options, steps=VIDEO_STEPS), progress=world.leader)
        sync(device)
        row["whole_video_s"] = time.perf_counter() - start
    peaks = collect([peak_gib(device)], world)
    if world.leader:
        row["peak_gib_per_gpu"] = peaks
        (out / f"row-{run.tag}.json").write_text(json.dumps(row, indent=1))
    del pipe, conditions
    gc.collect()
    leave(world)
    return 0


def default_gpus(device: str) -> list[int]:
    present = torch.cuda.device_count() if device == "cuda" else 1
    return [g for g in (1, 2, 4, 8) if g <= present]


def table(rows: list[dict], out: Path, args: argparse.Namespace) -> None:
    one = next((r for r in rows if r["gpus"] == 1), None)
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"\nATI generation across GPUs, random weights at {args.size}: {args.width}x{args.height}, {args.frames} frames, "
          f"{args.tracks} tracks, {name}, compile {args.compile}, ring {args.ring}, sharded weights {args.shard_weights}")
    print(f"{'GPUs':>4} {'mode':<9} {'split':<42} {'s/step':>7} {'speed-up':>8} {'effic.':>7} {'video s':>8} {'peak GiB/GPU':>13} {'err vs 1 GPU':>13}")
    for r in rows:
        for mode in ([r["mode"]] if r["gpus"] > 1 else ["sequence", "guidance"]):
            step = r[f"s_per_step.{mode}"]
            base = one[f"s_per_step.{mode}"] if one else float("nan")
            measured = "*" if "whole_video_s" in r and mode == r["mode"] else ""
            video = r["whole_video_s"] if measured else r["prepare_s"] + VIDEO_STEPS * step + r.get("decode_s", 0.0)
            error = "-"
            if one and r["gpus"] > 1:
                spread_run, alone = (torch.load(out / f"latents-{gpus}-{mode}.pt", weights_only=True) for gpus in (r["gpus"], 1))
                error = f"{relative_error(spread_run, alone):.1e}"
            print(f"{r['gpus']:>4} {mode:<9} {r.get('split', 'one GPU (' + ('batch of 2' if mode == 'sequence' else 'one branch at a time') + ')'):<42} "
                  f"{step:7.2f} {base / step:8.2f} {base / step / r['gpus']:7.0%} {video:7.1f}{measured:1} {max(r['peak_gib_per_gpu']):13.1f} {error:>13}")
    print(f"video s: prepare + {VIDEO_STEPS} x s/step + decode (* measured whole). Target: one video <= 45 s on 8 H200s.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="14b", choices=sorted(SHAPES))
    parser.add_argument("--root", type=Path, default=Path("/tmp/tracefield-generator"), help="where the layouts are written (once)")
    parser.add_argument("--out", type=Path, default=Path("bench_generate_multi"), help="folder for the rows, latents and log")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--gpus", help="comma-separated GPU counts (default: 1, 2, 4, 8 up to the GPUs present)")
    parser.add_argument("--modes", default="sequence,guidance", help="comma-separated: sequence (Ulysses/ring over all), guidance (2 halves)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps (the first is not counted)")
    parser.add_argument("--height", type=int)
    parser.add_argument("--width", type=int)
    parser.add_argument("--frames", type=int)
    parser.add_argument("--tracks", type=int, default=64)
    parser.add_argument("--ring", type=int, default=1, help="ring degree within each split (as tracefield generate --ring)")
    parser.add_argument("--shard-weights", action="store_true", help="FSDP2 per block (as tracefield generate --shard-weights)")
    parser.add_argument("--compile", action="store_true", help="compile the transformer's blocks in every run")
    parser.add_argument("--attention", help="diffusers attention backend for every run")
    parser.add_argument("--whole-video", action="store_true", help="also generate one whole 40-step video per run and time it")
    args = parser.parse_args()
    height, width, frames = SHAPES[args.size]
    args.height, args.width, args.frames = args.height or height, args.width or width, args.frames or frames
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "bench_generate_multi.log")])
    device = torch.device(args.device)
    if not (args.root / WAN_DIR / "model_index.json").is_file():
        started = time.perf_counter()
        write_layouts(args.root, args.size, device=device, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
        sync(device)
        log.info("layouts written in %.0f s", time.perf_counter() - started)
        gc.collect()
        reset_peak(device)
    counts = [int(g) for g in args.gpus.split(",")] if args.gpus else default_gpus(args.device)
    for gpus in counts:
        for mode in (["one"] if gpus == 1 else [m for m in args.modes.split(",") if m == "sequence" or gpus % 2 == 0]):
            run = Run(gpus=gpus, mode=mode if gpus > 1 else "sequence", root=str(args.root), out=str(args.out), device=args.device,
                      steps=args.steps, height=args.height, width=args.width, frames=args.frames, tracks=args.tracks, ring=args.ring,
                      shard_weights=args.shard_weights and gpus > 1, compile=args.compile, attention=args.attention, whole_video=args.whole_video)
            log.info("%d GPU(s), %s", gpus, mode)
            started = time.perf_counter()
            code = measure(run) if gpus == 1 else launch(measure, run, gpus)
            if device.type == "cuda":
                torch.cuda.empty_cache()  # this process's one-GPU run leaves nothing on GPU 0 for the next runs
            if code:
                log.warning("%d GPU(s), %s: exit status %d", gpus, mode, code)
                continue
            path = args.out / f"row-{run.tag}.json"
            row = {**json.loads(path.read_text()), "run_s": time.perf_counter() - started}
            path.write_text(json.dumps(row, indent=1))
            log.info("%s", json.dumps(row))
    # Every row in --out, this call's and earlier calls' (a machine's runs can be split over several commands).
    rows = sorted((json.loads(p.read_text()) for p in args.out.glob("row-*.json")), key=lambda r: (r["gpus"], r["mode"]))
    (args.out / "bench_generate_multi.json").write_text(json.dumps(rows, indent=2))
    table(rows, args.out, args)


if __name__ == "__main__":
    main()
