#!/usr/bin/env python3
"""ATI generation on one GPU at the real 14B size, weights read from the published layouts.

Random weights at the real dimensions (ATI/Wan2.1 I2V 14B transformer, UMT5-XXL, CLIP
ViT-H/14, the Wan VAE) are written once in the layouts `tracefield download --generator`
leaves (:mod:`tracefield.generate.layouts`), dropped from the page cache, and loaded through
the same code as `tracefield generate`. Then, at 480x832 and 81 frames:

* load time (from disk) and peak GPU memory;
* seconds per denoising step (both guidance branches) for each variant: ATI's order (two
  forwards), both branches in one batch, cuDNN attention, torch.compile of the blocks, and
  with ``--offload``; each variant's latents after the timed steps against ATI's order
  (the exact path: ATI's precisions, one branch at a time);
* the rest of a video (encoders, VAE encode, motion patch, VAE decode) and so the
  whole-video time for 40 steps;
* with ``--ati-code DIR`` (a folder holding ATI's ``wan/modules/model.py`` and
  ``attention.py``, not part of this project): the same transformer forward through ATI's
  ``WanModel`` (float32 weights under bfloat16 autocast, as ATI runs it; attention through
  PyTorch SDPA since flash-attn is not installed) for the ratio.

    python benchmarks/bench_generate.py --root /tmp/gen --steps 3 --out results/

A short table is printed last; ``--size tiny --device cpu`` runs the same code in seconds.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tracefield.generate.layouts import write_layouts
from tracefield.generate.pipeline import GenerationOptions
from tracefield.generate.warmup import StepShape, TransformerSetup
from tracefield.generate.weights import ATI_DIR, WAN_DIR, load_pipeline

log = logging.getLogger("bench_generate")
ROWS: list[dict] = []
RESULTS: list[Path] = []  # where each row is written as it comes (a run cut short keeps what it measured)


def record(row: dict) -> None:
    ROWS.append(row)
    log.info("%s", json.dumps(row))
    for path in RESULTS:
        path.write_text(json.dumps(ROWS, indent=2))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def drop_page_cache(root: Path) -> None:
    """Evict the written weights from the page cache, so that loading reads the disk as a first load would."""
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def inputs(height: int, width: int, frames: int, tracks: int):
    rng = np.random.default_rng(0)
    image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    condition = torch.rand(frames, tracks, 4, generator=torch.Generator().manual_seed(0)) * 2 - 1
    condition[..., 3] = 1.0
    return image, condition


def time_steps(pipe, conditions, options: GenerationOptions, device: torch.device) -> tuple[list[float], torch.Tensor]:
    stamps = []

    def on_stage(name, tensor):
        if name.startswith("latents."):
            sync(device)
            stamps.append(time.perf_counter())

    sync(device)
    start = time.perf_counter()
    latent = pipe.denoise(conditions, options, on_stage=on_stage, progress=False)
    return list(np.diff([start, *stamps])), latent


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max())


def variant(name: str, pipe, conditions, options, device, reference=None, **row) -> torch.Tensor:
    reset_peak(device)
    try:
        per_step, latent = time_steps(pipe, conditions, options, device)
    except Exception as exc:  # a backend missing on this machine: report and go on
        log.warning("%s: %s", name, exc)
        record({"variant": name, "error": f"{type(exc).__name__}: {str(exc)[:120]}", **row})
        return None
    timed = per_step[1:] if len(per_step) > 1 else per_step  # the first step carries warm-up work
    result = {"variant": name, "s_per_step": float(np.median(timed)), "first_step_s": per_step[0], "peak_gib": peak_gib(device), **row}
    if reference is not None:
        result["error_vs_exact"] = relative_error(latent, reference)
    record(result)
    return latent


def ati_reference_forward(code: Path, pipe, conditions, device: torch.device, repeats: int = 2) -> dict:
    """One transformer forward (one guidance branch) through ATI's own WanModel, against ours on the same inputs."""
    package = code / "atiwan"
    sys.path.insert(0, str(code))
    model_module = importlib.import_module("atiwan.model")

    def sdpa(q, k, v, q_lens=None, k_lens=None, dropout_p=0.0, softmax_scale=None, q_scale=None, causal=False,
             window_size=(-1, -1), deterministic=False, dtype=torch.bfloat16, version=None):
        out = torch.nn.functional.scaled_dot_product_attention(*(x.to(dtype).transpose(1, 2) for x in (q, k, v)))
        return out.transpose(1, 2).to(q.dtype)

    model_module.flash_attention = sdpa
    config = pipe.transformer.config
    cfg = dict(model_type="i2v", patch_size=tuple(config.patch_size), text_len=512, in_dim=config.in_channels,
               dim=config.num_attention_heads * config.attention_head_dim, ffn_dim=config.ffn_dim, freq_dim=config.freq_dim,
               text_dim=config.text_dim, out_dim=config.out_channels, num_heads=config.num_attention_heads,
               num_layers=config.num_layers, window_size=(-1, -1), qk_norm=True, cross_attn_norm=True, eps=1e-6)
    x = torch.cat([conditions.noise, conditions.y])
    seq_len = x.shape[1] * (x.shape[2] // 2) * (x.shape[3] // 2)
    t = torch.tensor([999], device=device)

    def ours():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pipe.transformer(hidden_states=x[None], timestep=t, encoder_hidden_states=conditions.contexts[:1],
                             encoder_hidden_states_image=conditions.clip_features, return_dict=False)

    def timed(fn) -> float:
        fn()
        sync(device)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - start)
        return float(np.median(times))

    with torch.no_grad():
        reset_peak(device)
        ours_s, ours_gib = timed(ours), peak_gib(device)
        contexts, clip = conditions.contexts[:1].clone(), conditions.clip_features.clone()
        y, noise = conditions.y.clone(), conditions.noise.clone()
        pipe.transformer.to("cpu")
        gc.collect()
        reset_peak(device)
        with torch.device(device):
            model = model_module.WanModel(**cfg).eval().requires_grad_(False)  # float32 weights, as ATI loads them
        context = [contexts[0]]

        def theirs():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                model([noise], t=t, context=context, seq_len=seq_len, clip_fea=clip, y=[y])

        theirs_s, theirs_gib = timed(theirs), peak_gib(device)
        del model
        gc.collect()
        pipe.transformer.to(device)
    del package
    return {"ours_forward_s": ours_s, "ours_peak_gib": ours_gib, "ati_forward_s": theirs_s, "ati_peak_gib": theirs_gib,
            "ratio": theirs_s / ours_s}


def whole_video(args: argparse.Namespace, device: torch.device) -> None:
    """Load, then one whole video as `tracefield generate` makes it (uint8 frames), timed from the start of loading."""
    from tracefield.generate.pipeline import to_uint8

    image, tracks = inputs(args.height, args.width, args.frames, args.tracks)
    options = GenerationOptions(steps=args.whole_video, max_area=args.height * args.width, frames=args.frames)
    start = time.perf_counter()
    # As tracefield generate sets the transformer up: beside the loading of the other components.
    shape = None if args.offload or args.no_warm_up else StepShape.of(image.shape[:2], args.frames, options.max_area, args.root / WAN_DIR / "image_encoder")
    setup = TransformerSetup(device, args.attention, args.compile, shape, options.batch_guidance)
    pipe = load_pipeline(args.root / WAN_DIR, args.root / ATI_DIR, None, device, offload=args.offload, on_transformer=setup)
    attention = setup.attention
    sync(device)
    loaded = time.perf_counter()
    reset_peak(device)
    stamps = {}

    def on_stage(name, tensor):  # when each stage's tensor is ready (the device synchronised)
        sync(device)
        stamps[name] = time.perf_counter()

    frames = to_uint8(pipe.generate(image, "w1 w2 w3", tracks, options, on_stage=on_stage, progress=True))
    done = time.perf_counter()
    steps = [stamps[f"latents.{i}"] for i in range(args.whole_video)]
    first_step, later = steps[0] - stamps["noise"], np.diff(steps)
    record({"variant": f"whole video, {args.whole_video} steps, offload {args.offload}, attention {attention}, "
                       f"compile {args.compile}, warm-up {shape is not None}", "load_s": loaded - start, "video_s": done - loaded, "total_s": done - start,
            "peak_gib": peak_gib(device), "frames": int(frames.shape[0]), "size": f"{frames.shape[2]}x{frames.shape[1]}",
            "prepare_s": stamps["noise"] - loaded, "first_step_s": first_step, "median_step_s": float(np.median(later)) if len(later) else None,
            "decode_s": done - steps[-1]})
    print("\n" + json.dumps(ROWS[-1], indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="14b", choices=["tiny", "14b"])
    parser.add_argument("--root", type=Path, default=Path("/tmp/tracefield-generator"), help="where the layouts are written (once)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for the JSON results and the log")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (the first is not counted)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--tracks", type=int, default=64)
    parser.add_argument("--variants", default="ati,batched,cudnn,compile,offload", help="comma-separated subset")
    parser.add_argument("--ati-code", type=Path, help="folder with atiwan/{model,attention}.py from bytedance/ATI, for the ratio")
    parser.add_argument("--whole-video", type=int, metavar="STEPS", help="instead: time whole videos of STEPS steps, load included "
                        "(with --attention / --compile / --offload as tracefield generate takes them)")
    parser.add_argument("--attention", default="native", help="for --whole-video, as tracefield generate takes it (default: native, PyTorch's choice)")
    parser.add_argument("--compile", action="store_true", help="compile the blocks for --whole-video")
    parser.add_argument("--offload", choices=["model", "blocks"], help="offload mode for --whole-video")
    parser.add_argument("--no-warm-up", action="store_true", help="for --whole-video: no warm-up beside the loading (the first step sets up)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(args.out / "bench_generate.log")])
    RESULTS.append(args.out / "bench_generate.json")
    device = torch.device(args.device)
    wanted = set(args.variants.split(","))
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    if not (args.root / WAN_DIR / "model_index.json").is_file():
        start = time.perf_counter()
        write_layouts(args.root, args.size, device=device, dtype=dtype)
        sync(device)
        gib = sum(p.stat().st_size for p in args.root.rglob("*") if p.is_file()) / 2**30
        record({"variant": "write layouts", "seconds": time.perf_counter() - start, "disk_gib": gib})
        gc.collect()
        reset_peak(device)
    drop_page_cache(args.root)
    if args.whole_video:
        return whole_video(args, device)
    start = time.perf_counter()
    pipe = load_pipeline(args.root / WAN_DIR, args.root / ATI_DIR, None, device)
    sync(device)
    record({"variant": "load (page cache dropped)", "seconds": time.perf_counter() - start, "peak_gib": peak_gib(device)})
    billions = sum(p.numel() for p in pipe.transformer.parameters()) / 1e9
    log.info("transformer: %.2f B parameters", billions)

    image, tracks = inputs(args.height, args.width, args.frames, args.tracks)
    area = args.height * args.width
    options = GenerationOptions(steps=args.steps, max_area=area, frames=args.frames, batch_guidance=False)
    sync(device)
    start = time.perf_counter()
    conditions = pipe.prepare(image, "w1 w2 w3", tracks, options)
    sync(device)
    prepare_s = time.perf_counter() - start

    exact = variant("ATI's order (2 forwards a step)", pipe, conditions, options, device)
    if "batched" in wanted:
        variant("both branches in one batch", pipe, conditions, GenerationOptions(**{**vars(options), "batch_guidance": True}), device, exact)
    if "cudnn" in wanted:
        pipe.transformer.set_attention_backend("_native_cudnn")
        variant("batch + cuDNN attention", pipe, conditions, GenerationOptions(**{**vars(options), "batch_guidance": True}), device, exact)
    if "compile" in wanted:
        pipe.transformer.compile_repeated_blocks(fullgraph=True)  # compiles lazily: the first (uncounted) step carries it
        variant("batch + cuDNN + compiled blocks", pipe, conditions, GenerationOptions(**{**vars(options), "batch_guidance": True}), device, exact)
    sync(device)
    start = time.perf_counter()
    video = pipe.decode(exact)
    sync(device)
    decode_s = time.perf_counter() - start
    record({"variant": "rest of a video", "prepare_s": prepare_s, "decode_s": decode_s, "frames": int(video.shape[1]),
                 "size": f"{video.shape[3]}x{video.shape[2]}"})
    if args.ati_code:
        try:
            record({"variant": "one forward: ours vs ATI's WanModel", **ati_reference_forward(args.ati_code, pipe, conditions, device)})
        except Exception as exc:
            record({"variant": "one forward: ours vs ATI's WanModel", "error": f"{type(exc).__name__}: {str(exc)[:200]}"})
            pipe.transformer.to(device)
    if "offload" in wanted and device.type == "cuda":
        del pipe, conditions
        gc.collect()
        reset_peak(device)
        start = time.perf_counter()
        pipe = load_pipeline(args.root / WAN_DIR, args.root / ATI_DIR, None, device, offload="model")
        load_s = time.perf_counter() - start
        reset_peak(device)
        stamps = []
        start = time.perf_counter()
        pipe.generate(image, "w1 w2 w3", tracks, GenerationOptions(steps=2, max_area=area, frames=args.frames),
                      on_stage=lambda n, t: (sync(device), stamps.append((n, time.perf_counter()))), progress=False)
        sync(device)
        total = time.perf_counter() - start
        at = dict(stamps)
        step = at["latents.1"] - at["latents.0"]
        record({"variant": "--offload model (2 steps, batched)", "load_s": load_s, "s_per_step": step, "total_2_steps_s": total,
                     "peak_gib": peak_gib(device), "whole_video_40_steps_s": total - 2 * step + 40 * step})

    steps = {r["variant"]: r for r in ROWS if "s_per_step" in r}
    rest = next(r for r in ROWS if r["variant"] == "rest of a video")
    print(f"\nATI generation, random weights at {args.size}: transformer {billions:.2f} B, {args.width}x{args.height}, {args.frames} frames, "
          f"{args.tracks} tracks, {torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}")
    for r in ROWS:
        if "s_per_step" not in r:
            print("  " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.items()))
    print(f"{'variant':<40} {'s/step':>7} {'peak GiB':>9} {'err vs exact':>13} {'40-step video s':>16}")
    for name, r in steps.items():
        whole = r.get("whole_video_40_steps_s", rest["prepare_s"] + 40 * r["s_per_step"] + rest["decode_s"])
        print(f"{name:<40} {r['s_per_step']:7.2f} {r['peak_gib']:9.1f} {r.get('error_vs_exact', 0.0):13.2e} {whole:16.1f}")


if __name__ == "__main__":
    main()
