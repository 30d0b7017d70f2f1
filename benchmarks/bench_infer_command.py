#!/usr/bin/env python3
"""The whole `tracefield infer` command, as a user runs it: cold, warm, and clips per minute.

Made once and kept in ``--cache``: a random checkpoint of the chosen config in our
safetensors format (full-precision weights and the config in its metadata, as `tracefield
download` writes the public one: 2.7 GB for the full network, so loading is real), and a
``--frames``-frame ``--size`` H.264 clip of moving textured shapes over a panning room.

* **cold**: process start to done, a subprocess running `tracefield infer clip.mp4`
  (median of ``--cold-runs``), with the command's own per-stage seconds (``--profile``);
* **warm**: the network loaded and warmed up, one more clip through the same steps
  (plan, decode, network, masks, field, writing), each timed with the device synchronised
  (median of ``--warm-runs``);
* **many**: `tracefield infer clips/` over ``--clips`` copies of the clip in a subprocess:
  wall time, steady clips/minute (between the first and the last scene written), seconds
  per clip of each stage, and the disk's own write rate (with fsync), to see what bounds it.
  Scene folders are kept when the disk has room for them all, else each is removed as soon
  as it is complete (said in the table).

Everything goes under ``--out`` (logs, JSON profiles, results.json); a short table is
printed last. On one H200 (the issue's targets: cold <= 8 s, warm <= 1.5 s):

    python benchmarks/bench_infer_command.py --cache /tmp/tf_cache --out /tmp/tf_bench

On a CPU, small settings:

    python benchmarks/bench_infer_command.py --config small --frames 8 --size 320x180 --clips 3 \\
        --cold-runs 1 --warm-runs 1 --cache /tmp/tf_cache --out /tmp/tf_bench_cpu
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

STAGES = ("imports", "load", "plan", "decode", "warm-up", "network", "masks", "field", "writing")


# --------------------------------------------------------------------------- inputs, made once


def make_checkpoint(config: str, cache: Path) -> Path:
    """A random checkpoint of ``config`` in tracefield's safetensors format (fp32, config in the metadata)."""
    import tracefield
    from tracefield.model.checkpoint import save_checkpoint
    from tracefield.paths import config_path

    path = cache / f"random_{config}.safetensors"
    if path.is_file():
        return path
    print(f"making {path} (once) ...", file=sys.stderr)
    model = tracefield.load_model(config_path(config), None, device="cpu", dtype="float32")
    save_checkpoint(model.state_dict(), path, model.net_config.to_json(), extra={"source": "bench_infer_command random weights"})
    return path


def make_clip(cache: Path, frames: int, width: int, height: int, fps: float = 24.0) -> Path:
    """Textured shapes moving over a panning, textured room: compresses and decodes like real footage."""
    import imageio.v2 as iio

    path = cache / f"clip_{frames}f_{width}x{height}.mp4"
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = rng.random((height // 8 + 1, width // 8 + 1, 3)).astype(np.float32)
    texture = np.kron(texture, np.ones((8, 8, 1), np.float32))[:height, :width]
    writer = iio.get_writer(path, fps=fps, codec="libx264", quality=8, macro_block_size=16, pixelformat="yuv420p")
    for i in range(frames):
        t = i / max(frames - 1, 1)
        shift = int(0.2 * width * t)
        room = 0.5 + 0.25 * np.sin((xs + shift) / width * 9)[..., None] * np.array([1.0, 0.7, 0.4], np.float32)
        image = 0.7 * room + 0.3 * np.roll(texture, -shift, axis=1)
        for k in range(3):
            cx = width * (0.2 + 0.3 * k + 0.15 * np.sin(2 * np.pi * t + k))
            cy = height * (0.5 + 0.25 * np.cos(2 * np.pi * t + 2 * k))
            disc = (xs - cx) ** 2 + (ys - cy) ** 2 < (0.08 * width) ** 2
            image[disc] = np.array([0.9, 0.3 + 0.3 * k, 0.2], np.float32) * (0.8 + 0.2 * texture[disc])
        writer.append_data((np.clip(image, 0, 1) * 255).astype(np.uint8))
    writer.close()
    return path


# --------------------------------------------------------------------------- measurements


def infer_command(inputs: Path, out: Path, config: str, checkpoint: Path, device: str, profile: Path, max_frames: int, extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "tracefield", "infer", str(inputs), "-o", str(out), "--config", config, "--checkpoint", str(checkpoint),
            "--device", device, "--max-frames", str(max_frames), "--profile", str(profile), "--overwrite", "-q", *extra]


def run_logged(command: list[str], log: Path) -> float:
    """Run ``command`` with its output in ``log``; returns its wall seconds (process start to exit)."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}); see {log}")
    return seconds


def cold(args: argparse.Namespace, clip: Path, checkpoint: Path, name: str = "cold", extra: Sequence[str] = ()) -> dict:
    runs = []
    for i in range(args.cold_runs):
        profile = args.out / f"{name}_{i}.json"
        seconds = run_logged(infer_command(clip, args.out / "cold", args.config, checkpoint, args.device, profile, args.frames, extra), args.out / f"{name}_{i}.log")
        runs.append((seconds, json.loads(profile.read_text())["seconds"]))
    seconds = [s for s, _ in runs]
    median = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    size = sum(p.stat().st_size for p in (args.out / "cold").rglob("*") if p.is_file())
    return {"seconds": statistics.median(seconds), "all": seconds, "stages": median[1], "scene_bytes": size}


def warm(args: argparse.Namespace, clip: Path, checkpoint: Path) -> dict:
    """In this process: the network loaded and warmed, then one more clip through the steps the command takes."""
    import torch

    from tracefield.infer import InferOptions, build_field, plan_scene, predict, prepare_scene, warm_up
    from tracefield.io.frames import discover_scenes
    from tracefield.masks import foreground_masks
    from tracefield.model import load_model, resolve_device
    from tracefield.paths import config_path
    from tracefield.runner import PNG_WORKERS
    from tracefield.scene_writer import scene_output, write_scene
    from tracefield.stages import Stages

    device = resolve_device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    start = time.perf_counter()
    model = load_model(config_path(args.config), checkpoint, device=device)
    if sync:
        sync()
    load_seconds = time.perf_counter() - start
    options = InferOptions(max_frames=args.frames, long_side=model.runtime.long_side, progress=False)
    [scene] = discover_scenes([clip])
    warm_up(model, plan_scene(scene, options))
    runs = []
    with ThreadPoolExecutor(PNG_WORKERS) as pngs:
        for i in range(args.warm_runs + 1):  # the first of these runs is not counted (first-time costs of the steps' own code)
            stages = Stages(sync)
            began = time.perf_counter()
            with stages("plan"):
                plan = plan_scene(scene, options)
            with stages("decode"):
                prepared = prepare_scene(plan, options, progress=False)
            with stages("network", gpu=True):
                out = predict(model, prepared.frames, prepared.time_steps, scene.name, progress=False)
            with stages("masks", gpu=True):
                masks = foreground_masks(out["ctrl_pts3d"])
            with stages("field", gpu=True):
                output = scene_output(build_field(model, prepared, out, options, masks=masks), scene.name)
            with stages("writing"):
                write_scene(output, args.out / "warm" / scene.name, pngs)
            if i:
                runs.append((time.perf_counter() - began, dict(stages.seconds)))
    median = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    return {"seconds": median[0], "all": [r[0] for r in runs], "stages": median[1], "load_in_process": load_seconds}


def disk_write_rate(folder: Path, gigabytes: float = 2.0) -> float:
    """GB/s of writing ``gigabytes`` to ``folder`` and fsync-ing them (what sustained scene writing meets)."""
    path = folder / "disk_probe.bin"
    block = np.random.default_rng(0).integers(0, 255, 64 << 20, dtype=np.uint8).tobytes()
    start = time.perf_counter()
    with open(path, "wb") as handle:
        for _ in range(max(1, int(gigabytes * 1e9 / len(block)))):
            handle.write(block)
        handle.flush()
        os.fsync(handle.fileno())
    seconds = time.perf_counter() - start
    written = path.stat().st_size
    path.unlink()
    return written / seconds / 1e9


def many(args: argparse.Namespace, clip: Path, checkpoint: Path, scene_bytes: int) -> dict:
    clips = args.out / "clips"
    shutil.rmtree(clips, ignore_errors=True)
    clips.mkdir(parents=True)
    for i in range(args.clips):
        (clips / f"clip_{i:04d}.mp4").symlink_to(clip.resolve())
    out = args.out / "many"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    room = shutil.disk_usage(out).free > 1.3 * args.clips * scene_bytes
    stop = threading.Event()
    sweeper = None if room else threading.Thread(target=_sweep, args=(out, stop), daemon=True)
    if sweeper is not None:
        sweeper.start()
    profile = args.out / "many.json"
    try:
        seconds = run_logged(infer_command(clips, out, args.config, checkpoint, args.device, profile, args.frames), args.out / "many.log")
    finally:
        stop.set()
    data = json.loads(profile.read_text())
    finished = sorted(t for _, t in data["events"])
    steady = 60 * (len(finished) - 1) / (finished[-1] - finished[0]) if len(finished) > 1 else float("nan")
    per_clip = {k: v / args.clips for k, v in data["seconds"].items() if k not in ("imports", "load", "warm-up")}
    return {"seconds": seconds, "clips_per_min": 60 * args.clips / seconds, "steady_clips_per_min": steady,
            "per_clip": per_clip, "kept": room, "disk_gb_s": disk_write_rate(args.out)}


def _sweep(out: Path, stop: threading.Event) -> None:
    """Remove complete scene folders (they appear atomically) so a small disk holds the run."""
    while not stop.is_set():
        for scene in out.iterdir():
            if not scene.name.startswith(".") and scene.is_dir():
                shutil.rmtree(scene, ignore_errors=True)
        time.sleep(0.5)


# --------------------------------------------------------------------------- report


def report(args: argparse.Namespace, device_name: str, results: dict) -> str:
    c, w, m = results.get("cold"), results.get("warm"), results.get("many")
    lines = [f"\ntracefield infer, {args.config} config, random weights, {args.frames} frames {args.width}x{args.height}, "
             f"{device_name}, torch {results['torch']}, {os.cpu_count()} CPUs"]
    lines.append(f"{'measure':<40}{'value':>10}  target")
    if c:
        lines.append(f"{'cold: process start to done (s)':<40}{c['seconds']:>10.2f}  {'<= 8' if args.config == 'eval' else ''}")
        for name, variant in results.get("variants", {}).items():
            lines.append(f"{f'cold, {name} (s)':<40}{variant['seconds']:>10.2f}  (network {variant['stages'].get('network', 0):.2f})")
        lines.append(f"{'outputs of one clip (MiB)':<40}{c['scene_bytes'] / 2**20:>10.1f}")
    if w:
        lines.append(f"{'warm: one more clip (s)':<40}{w['seconds']:>10.2f}  {'<= 1.5' if args.config == 'eval' else ''}")
    if m:
        lines.append(f"{f'many: {args.clips} clips, wall (s)':<40}{m['seconds']:>10.1f}")
        lines.append(f"{'many: clips/minute, start-up included':<40}{m['clips_per_min']:>10.1f}")
        lines.append(f"{'many: clips/minute, steady':<40}{m['steady_clips_per_min']:>10.1f}")
        lines.append(f"{'disk write rate, fsync (GB/s)':<40}{m['disk_gb_s']:>10.2f}  "
                     f"{'' if m['kept'] else '(scene folders removed as they completed: too little disk)'}")
    lines.append(f"{'seconds per stage':<14}{'cold':>8}{'warm':>8}{'many/clip':>11}")
    for stage in STAGES:
        values = [c["stages"].get(stage) if c else None, w["stages"].get(stage) if w else None, m["per_clip"].get(stage) if m else None]
        if any(v is not None for v in values):
            lines.append(f"{stage:<14}" + "".join(f"{v:>8.3f}" if v is not None else f"{'-':>8}" for v in values[:2])
                         + (f"{values[2]:>11.3f}" if values[2] is not None else f"{'-':>11}"))
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True, help="folder for the random checkpoint and the clip (made once)")
    parser.add_argument("--out", type=Path, required=True, help="folder for outputs, logs and results.json")
    parser.add_argument("--config", default="eval", help="bundled config (default: eval, the full network)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=40, help="frames of the clip (all traced; default: 40)")
    parser.add_argument("--size", default="1280x720", help="WxH of the clip (default: 1280x720)")
    parser.add_argument("--clips", type=int, default=100, help="clips of the many-clips run (0: skip it; default: 100)")
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument("--warm-runs", type=int, default=3)
    parser.add_argument("--cold-variant", nargs=2, action="append", default=[], metavar=("NAME", "ARGS"),
                        help='also time cold runs with more infer options, e.g. --cold-variant sdpa "--attention sdpa"')
    args = parser.parse_args(argv)
    args.width, args.height = (int(v) for v in args.size.lower().split("x"))
    args.cache.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = make_checkpoint(args.config, args.cache)
    clip = make_clip(args.cache, args.frames, args.width, args.height)

    import torch

    device_name = torch.cuda.get_device_name() if torch.cuda.is_available() and args.device != "cpu" else "CPU"
    results: dict = {"torch": torch.__version__}
    results["cold"] = cold(args, clip, checkpoint) if args.cold_runs else None
    results["variants"] = {name: cold(args, clip, checkpoint, f"cold_{name}", extra.split()) for name, extra in args.cold_variant if args.cold_runs}
    results["warm"] = warm(args, clip, checkpoint) if args.warm_runs else None
    if args.clips:
        results["many"] = many(args, clip, checkpoint, results["cold"]["scene_bytes"] if results["cold"] else 500 << 20)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(report(args, device_name, results))


if __name__ == "__main__":
    main()
