#!/usr/bin/env python3
"""Forward-pass speed of the full-size network on one GPU (random weights, 512x288 views).

Times ``model.predict`` with CUDA events after warm-up (median of repeats) at each view
count and prints ms, ms/view, achieved TFLOP/s (FLOPs counted by torch's FlopCounterMode on
the meta device), peak GiB and the attention backend, then the bf16-vs-fp32 error of the
control points on the same weights. The main columns time the pass ``tracefield infer``
runs (track and time heads; the local head only with ``--local-head``); the last column
times the release's full set of outputs (all three heads). One command, one device call,
a short table last:

    python benchmarks/bench_infer.py                     # 2 8 24 40 100 200 views
    python benchmarks/bench_infer.py --sweep             # also compare backends / chunking at 2 and 40 views
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Optional

import torch
from torch.utils.flop_counter import FlopCounterMode

import tracefield
from tracefield.model import TraceAnything, load_config
from tracefield.paths import config_path

HEIGHT, WIDTH = 288, 512


def count_flops(num_views: int, local_head: bool = False) -> float:
    """FLOPs of one forward pass, counted on the meta device (no memory, no GPU)."""
    with torch.device("meta"):
        model = TraceAnything(load_config(config_path("eval")).net).eval()
    model.set_attention("sdpa")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.predict(
            torch.zeros(1, num_views, 3, HEIGHT, WIDTH, device="meta"), torch.zeros(1, num_views, device="meta"), local_head=local_head
        )
    return float(counter.get_total_flops())


def inputs(num_views: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(1, num_views, 3, HEIGHT, WIDTH, generator=g) * 2 - 1
    return images.cuda(), torch.linspace(0, 1, num_views)[None].cuda()


def time_forward(model: TraceAnything, num_views: int, repeats: int, warmup: int = 2, local_head: bool = False) -> tuple[float, float]:
    """Median ms over ``repeats`` timed passes, and peak GiB allocated during them."""
    images, times = inputs(num_views)
    with torch.inference_mode():
        for _ in range(warmup):
            model.predict(images, times, local_head=local_head)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        durations = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model.predict(images, times, local_head=local_head)
            end.record()
            torch.cuda.synchronize()
            durations.append(start.elapsed_time(end))
    return statistics.median(durations), torch.cuda.max_memory_allocated() / 2**30


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def fp32_agreement(model: TraceAnything, num_views: int) -> dict[str, float]:
    """The bf16 model vs its fp32 original (same seeded random weights) with the exact math attention."""
    images, times = inputs(num_views, seed=1)
    with torch.inference_mode():
        fast = model.predict(images, times)
    reference = tracefield.load_model(config_path("eval"), device="cuda", dtype="float32", attention="math")
    with torch.inference_mode():
        exact = reference.predict(images, times)
    del reference
    torch.cuda.empty_cache()
    return {key: relative_error(fast[key], exact[key]) for key in ("ctrl_pts3d", "ctrl_conf", "time", "ctrl_pts3d_local")}


def sweep(model: TraceAnything, repeats: int) -> None:
    """Backends, channels-last and head chunking at small and mid-size inputs."""
    print("\nsweep (ms at 2 / 40 views, peak GiB at 40)")
    chunk0 = model.runtime.head_chunk_views
    for backend in ("cudnn", "sdpa", "flash_attn"):
        try:
            model.set_attention(backend)
        except tracefield.errors.TracefieldError as exc:
            print(f"  {backend:10} skipped: {exc}")
            continue
        for channels_last in (True, False):
            model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
            for chunk in (8, 20, 40):
                model.runtime.head_chunk_views = chunk
                small, _ = time_forward(model, 2, repeats)
                mid, peak = time_forward(model, 40, repeats)
                print(f"  {backend:10} channels_last={channels_last!s:5} head_chunk={chunk:2}  {small:7.1f} {mid:8.1f} {peak:6.2f}")
    model.runtime.head_chunk_views = chunk0
    model.to(memory_format=torch.channels_last)
    model.set_attention("auto")


def stage_times(model: TraceAnything, num_views: int) -> dict[str, float]:
    """ms spent in the encoder, the decoder and the heads (CUDA events around each stage)."""
    images, times = inputs(num_views)
    flat = images.reshape(num_views, 3, HEIGHT, WIDTH).to(next(model.parameters()).dtype)
    grid = (HEIGHT // model.patch_size, WIDTH // model.patch_size)
    events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    with torch.inference_mode():
        for _ in range(2):
            events[0].record()
            tokens = model._encode(flat, None)
            events[1].record()
            hooked = model.decoder(tokens[None], times, grid, model.net_config.hooks)
            events[2].record()
            model._run_heads([hooked[h][0] for h in model.net_config.hooks], grid, None, local_head=model.ds_head_local is not None, times=times[0])
            events[3].record()
            torch.cuda.synchronize()
    names = ("encoder", "decoder", "heads")
    return {name: events[i].elapsed_time(events[i + 1]) for i, name in enumerate(names)}


def profile(model: TraceAnything, num_views: int, rows: int = 30) -> None:
    """Top CUDA kernels of one pass, by self CUDA time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    images, times = inputs(num_views)
    with torch.inference_mode():
        model.predict(images, times)
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            model.predict(images, times)
            torch.cuda.synchronize()
    print(f"\nprofile at {num_views} views; stages (ms): {stage_times(model, num_views)}")
    print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=60))


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, nargs="+", default=[2, 8, 24, 40, 100, 200])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sweep", action="store_true", help="compare backends, channels-last and head chunking first")
    parser.add_argument("--check-views", type=int, default=8, help="views for the bf16-vs-fp32 check (0: skip)")
    parser.add_argument("--profile", type=int, default=0, help="print the top kernels of one pass at this many views")
    parser.add_argument("--compile", action="store_true", help="torch.compile the blocks and heads (runtime.compile)")
    parser.add_argument("--graph-max-views", type=int, default=None, help="override runtime.cuda_graph_max_views")
    parser.add_argument("--head-chunk", type=int, default=None, help="override runtime.head_chunk_views")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    model = tracefield.load_model(config_path("eval"), device="cuda")  # the defaults tracefield infer uses
    if args.compile:
        model.compile_parts()
    if args.graph_max_views is not None:
        model.runtime.cuda_graph_max_views = args.graph_max_views
    if args.head_chunk is not None:
        model.runtime.head_chunk_views = args.head_chunk
    if args.sweep:
        sweep(model, args.repeats)
    if args.profile:
        profile(model, args.profile)
    rows = []
    for views in args.views:
        repeats = args.repeats if views <= 100 else max(2, args.repeats // 2)
        try:
            ms, peak = time_forward(model, views, repeats)
            all_heads, _ = time_forward(model, views, repeats, local_head=True)
        except torch.cuda.OutOfMemoryError:
            rows.append((views, None, None, None, None))
            torch.cuda.empty_cache()
            continue
        rows.append((views, ms, count_flops(views) / (ms / 1e3) / 1e12, peak, all_heads))
    check = fp32_agreement(model, args.check_views) if args.check_views else {}
    param = next(model.parameters())
    print(f"\nfull-size network (668 M), random weights, {HEIGHT}x{WIDTH} views, {torch.cuda.get_device_name()}, "
          f"torch {torch.__version__}, {str(param.dtype).replace('torch.', '')}, attention {model.attention_backend}, "
          f"head chunk {model.runtime.head_chunk_views}, compiled {args.compile}, "
          f"CUDA graphs up to {model.runtime.cuda_graph_max_views} views; total {time.perf_counter() - started:.0f} s")
    print(f"{'views':>5} {'ms':>9} {'ms/view':>8} {'TFLOP/s':>8} {'peak GiB':>9} {'all heads ms':>13}")
    for views, ms, tflops, peak, all_heads in rows:
        if ms is None:
            print(f"{views:5d} {'out of memory':>9}")
        else:
            print(f"{views:5d} {ms:9.1f} {ms / views:8.2f} {tflops:8.0f} {peak:9.2f} {all_heads:13.1f}")
    if check:
        print(f"bf16 vs fp32 ({args.check_views} views), relative error: " + ", ".join(f"{k} {v:.1e}" for k, v in check.items()))


if __name__ == "__main__":
    main()
