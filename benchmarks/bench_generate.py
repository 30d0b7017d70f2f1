#!/usr/bin/env python3
"""ATI generation speed on one GPU: a mid-size random pipeline at 480x832, 81 frames.

The transformer has Wan2.1-1.3B's widths and depth (with the I2V image branch), the VAE the
real Wan VAE's widths; weights are random (the 14B weights cannot be fetched here). Prints
seconds per denoising step (both guidance branches), the rest (encoders, motion patch, VAE
encode and decode), and peak GiB:

    python benchmarks/bench_generate.py --steps 4
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tracefield.generate.pipeline import GenerationOptions
from tracefield.generate.random_pipeline import random_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--tracks", type=int, default=64)
    parser.add_argument("--attention", default=None, help="diffusers attention backend (default: native SDPA)")
    args = parser.parse_args()
    started = time.perf_counter()
    pipe = random_pipeline("mid", dtype=torch.bfloat16).to("cuda")
    pipe.vae.to(torch.float32)  # Wan's VAE runs in fp32, as diffusers advises
    if args.attention:
        pipe.transformer.set_attention_backend(args.attention)
    pipe.set_progress_bar_config(disable=True)
    billions = sum(p.numel() for p in pipe.transformer.parameters()) / 1e9
    image = (np.random.default_rng(0).random((480, 832, 3)) * 255).astype(np.uint8)
    tracks = torch.rand(81, args.tracks, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    tracks[..., 3] = 1.0
    stamps: list[float] = []

    def on_step(pipeline, step, timestep, kwargs):
        torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        return kwargs

    pipe.generate(image, "w1 w2", tracks, GenerationOptions(steps=1))  # warm-up: kernels, cuDNN plans
    torch.cuda.reset_peak_memory_stats()
    stamps.clear()
    begin = time.perf_counter()
    video = pipe.generate(image, "w1 w2", tracks, GenerationOptions(steps=args.steps), on_step=on_step)
    torch.cuda.synchronize()
    total = time.perf_counter() - begin
    per_step = float(np.median(np.diff(stamps))) if len(stamps) > 1 else stamps[0] - begin
    print(f"\nATI pipeline, random weights: transformer {billions:.2f} B parameters (Wan2.1-1.3B widths + I2V branch), bf16, "
          f"{video.shape[1]}x{video.shape[2]}, {len(video)} frames, {args.tracks} tracks, {args.steps} steps, "
          f"{torch.cuda.get_device_name()} (set-up {begin - started:.0f} s)")
    print(f"{'s/step (cond+uncond)':>21} {'rest s':>7} {'total s':>8} {'peak GiB':>9}")
    print(f"{per_step:21.2f} {total - per_step * args.steps:7.2f} {total:8.2f} {torch.cuda.max_memory_allocated() / 2**30:9.2f}")


if __name__ == "__main__":
    main()
