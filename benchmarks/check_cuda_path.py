#!/usr/bin/env python3
"""Check the CUDA path of the full-size network against its fp32 function (random weights).

Runs the 668 M-parameter network on N views of 512x288 in float32 (math attention: the CPU
reference function) and in the default CUDA setting (bfloat16 + SDPA / flash-attn), and
prints the relative error of the control points and times, with the forward time (CUDA
events, median of repeats) and peak memory of each. Speed work belongs to the GPU issue;
this only shows that the half-precision path computes the same function.

    python benchmarks/check_cuda_path.py --views 8
"""

from __future__ import annotations

import argparse

import torch

import tracefield
from bench_infer import inputs, relative_error, time_forward  # beside this script
from tracefield.paths import config_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    images, times = inputs(args.views)
    rows = []
    reference = None
    for dtype, attention in (("float32", "math"), ("float32", "sdpa"), ("bfloat16", "auto")):
        model = tracefield.load_model(config_path("eval"), device="cuda", dtype=dtype, attention=attention)
        ms, peak = time_forward(model, args.views, args.repeats)
        with torch.inference_mode():
            out = model.predict(images, times)
        if reference is None:
            reference = {k: v.float() for k, v in out.items()}
        errors = {k: relative_error(out[k], reference[k]) for k in ("ctrl_pts3d", "ctrl_conf", "time")}
        rows.append((dtype, model.attention_backend, ms, peak, errors))
        del model, out
        torch.cuda.empty_cache()
    print(f"\nfull-size network, random weights, {args.views} views 512x288, {torch.cuda.get_device_name()}")
    print(f"{'dtype':9} {'attention':10} {'ms':>8} {'peak GiB':>9} {'rel.err pts':>12} {'conf':>9} {'time':>9}")
    for dtype, backend, ms, peak, e in rows:
        print(f"{dtype:9} {backend:10} {ms:8.1f} {peak:9.2f} {e['ctrl_pts3d']:12.2e} {e['ctrl_conf']:9.2e} {e['time']:9.2e}")


if __name__ == "__main__":
    main()
