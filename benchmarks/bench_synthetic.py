#!/usr/bin/env python3
"""Synthetic scene rendering speed: frames per second at 256x448 (16-frame clips, full ground truth).

    python benchmarks/bench_synthetic.py [--device cuda] [--scenes 10]
"""

from __future__ import annotations

import argparse
import time

import torch

from tracefield.data.synthetic import SceneConfig, render_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--scenes", type=int, default=10)
    args = parser.parse_args()
    config = SceneConfig(frames=16, height=256, width=448)
    render_scene(0, config, device=args.device)  # warm-up
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for seed in range(1, args.scenes + 1):
        render_scene(seed, config, device=args.device)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(f"{args.scenes} scenes x 16 frames at 256x448 on {args.device}: {args.scenes * 16 / seconds:.0f} frames/s "
          f"({seconds / args.scenes * 1000:.0f} ms per scene, images + trajectories + visibility)")


if __name__ == "__main__":
    main()
