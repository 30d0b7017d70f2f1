#!/usr/bin/env python3
"""Where one denoising step of the ATI generator spends its time, at the real 14B size.

The transformer is built straight on the GPU with random weights at the real dimensions (no
layouts on disk: this is about the forward, not loading), at ATI's precisions
(:func:`tracefield.generate.pipeline.match_ati_precision`), and fed one step's inputs for
81 frames at 480x832 (ATI's bucket 832x464: 31,668 video tokens) with both guidance
branches in one batch. It reports:

* every attention backend PyTorch offers on this machine, alone, at the step's shape
  (B=2, 40 heads, 31,668 tokens, head 128, in the layout diffusers hands over), in TFLOP/s;
* a forward eager and with the blocks compiled (`tracefield generate --compile`);
* a profile of the compiled forward by kind of kernel (matrix products, attention, fused
  elementwise, the rest) and its top kernels, so a change can be aimed where the time is;
* with ``--fa4`` (flash-attn-4 installed): the same with FlashAttention-4
  (:mod:`tracefield.generate.attention`), its attention alone, and each compiled forward's
  relative error against the eager forward with PyTorch's default kernel.

    python benchmarks/profile_generate.py --out results/ [--fa4]

Needs one GPU with ~40 GiB free; ``--layers`` shortens the stack for a quick look.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from tracefield.generate.attention import FA4, FA4Switch, choose_attention
from tracefield.generate.layouts import _fill_random, ati_config
from tracefield.generate.pipeline import match_ati_precision
from tracefield.generate.weights import _build_empty, diffusers_transformer_config, target_dtype

log = logging.getLogger("profile_generate")
KINDS = (  # kernel-name fragments -> kind, first match wins
    ("attention", ("flash", "fmha", "attention", "sdpa", "cudnn_generated", "flex")),
    ("matrix products", ("gemm", "nvjet", "cutlass", "xmma", "sm90_", "cublas", "mm_")),
    ("fused elementwise (Triton)", ("triton",)),
)


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def attention_backends(tokens: int, heads: int, head_dim: int, batch: int, fa4: bool = False) -> list[dict]:
    """Each SDPA backend (and flex attention) alone at the step's shape; with ``fa4``, the flash kernel is FA4's."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(batch, tokens, heads, head_dim, device="cuda", dtype=torch.bfloat16).transpose(1, 2) for _ in range(3))
    flop = 4 * batch * heads * tokens * tokens * head_dim
    rows = []
    candidates = {"default": None, "flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                  "efficient": SDPBackend.EFFICIENT_ATTENTION}
    if fa4:
        started = time.perf_counter()
        switch = FA4Switch()
        switch.on()
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            F.scaled_dot_product_attention(q, k, v)  # FA4 compiles its kernel for this shape on first use
        torch.cuda.synchronize()
        rows.append({"backend": "FA4 first call (JIT)", "s": time.perf_counter() - started})
        candidates = {"default": None, "flash (FA4)": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
    reference = F.scaled_dot_product_attention(q, k, v)
    for name, backend in candidates.items():
        def run(backend=backend):
            if backend is None:
                return F.scaled_dot_product_attention(q, k, v)
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v)
        try:
            out = run()
            seconds = sorted(timed(run, 5))[2]
            rows.append({"backend": name, "ms": seconds * 1e3, "tflops": flop / seconds / 1e12,
                         "max_diff_vs_default": float((out - reference).abs().max())})
        except Exception as exc:
            rows.append({"backend": name, "error": f"{type(exc).__name__}: {str(exc)[:100]}"})
    try:
        from torch.nn.attention.flex_attention import flex_attention
        flex = torch.compile(flex_attention, dynamic=False)
        out = flex(q, k, v)
        seconds = sorted(timed(lambda: flex(q, k, v), 5))[2]
        rows.append({"backend": "flex (compiled)", "ms": seconds * 1e3, "tflops": flop / seconds / 1e12,
                     "max_diff_vs_default": float((out - reference).abs().max())})
    except Exception as exc:
        rows.append({"backend": "flex (compiled)", "error": f"{type(exc).__name__}: {str(exc)[:100]}"})
    if fa4:
        switch.off()
    return rows


def build_transformer(layers: int):
    from diffusers import WanTransformer3DModel

    config = diffusers_transformer_config({**ati_config("14b"), "num_layers": layers}, 1280)
    model = _fill_random(_build_empty(WanTransformer3DModel, config), 0, "cuda", torch.bfloat16)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.data = p.data.to(target_dtype(name, p.data, torch.bfloat16))
    return match_ati_precision(model.eval().requires_grad_(False))


def kind_of(name: str) -> str:
    lowered = name.lower()
    for kind, fragments in KINDS:
        if any(f in lowered for f in fragments):
            return kind
    return "other"


def profile(forward, out: Path, name: str) -> dict:
    from torch.profiler import ProfilerActivity, profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        forward()
        torch.cuda.synchronize()
    per_kernel: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[event.name] += event.device_time_total / 1e6
            counts[event.name] += 1
    by_kind: dict[str, float] = defaultdict(float)
    for name, seconds in per_kernel.items():
        by_kind[kind_of(name)] += seconds
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1])[:25]
    (out / f"kernels_{name}.txt").write_text("\n".join(f"{s:8.4f} s  x{counts[n]:<5} [{kind_of(n)}] {n[:200]}" for n, s in top))
    return {"by_kind_s": dict(by_kind), "kernel_total_s": sum(per_kernel.values()),
            "top": [(n[:120], round(s, 4), counts[n]) for n, s in top[:12]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--layers", type=int, default=40)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-eager", action="store_true", help="no eager timing and profile (the eager output is still the reference)")
    parser.add_argument("--fa4", action="store_true", help="also FlashAttention-4 (needs flash-attn-4)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results: dict = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    latent_frames, height, width = (args.frames - 1) // 4 + 1, 464 // 8, 832 // 8
    tokens = latent_frames * (height // 2) * (width // 2)

    results["attention_alone"] = attention_backends(tokens, 40, 128, 2, fa4=False)
    if args.fa4:
        results["attention_alone"] += attention_backends(tokens, 40, 128, 2, fa4=True)
    log.info("attention: %s", json.dumps(results["attention_alone"]))

    started = time.perf_counter()
    model = build_transformer(args.layers)
    results["build_s"] = time.perf_counter() - started
    x = torch.randn(2, 36, latent_frames, height, width, device="cuda")
    t = torch.full((2,), 999, device="cuda")
    contexts = torch.randn(2, 512, 4096, device="cuda")
    clip = torch.randn(2, 257, 1280, device="cuda")

    @torch.no_grad()
    def forward():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return model(hidden_states=x, timestep=t, encoder_hidden_states=contexts, encoder_hidden_states_image=clip, return_dict=False)[0]

    reference = forward().float()
    if not args.skip_eager:
        results["eager_forward_s"] = timed(forward, 2)
        log.info("eager: %s", results["eager_forward_s"])
        results["eager_profile"] = profile(forward, args.out, "eager")
    model.compile_repeated_blocks(fullgraph=True)
    variants = ["compiled"] + (["compiled, FA4"] if args.fa4 else [])
    for name in variants:
        if name.endswith("FA4"):
            choose_attention(model, FA4, torch.device("cuda"))
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        out = forward().float()
        torch.cuda.synchronize()
        results[name] = {"first_forward_s": time.perf_counter() - started, "forward_s": timed(forward, args.repeats),
                         "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                         "error_vs_eager_default": float((out - reference).abs().max() / reference.abs().max()),
                         "profile": profile(forward, args.out, name.replace(", ", "_"))}
        log.info("%s: %s", name, {k: v for k, v in results[name].items() if k != "profile"})
        (args.out / "profile_generate.json").write_text(json.dumps(results, indent=1))

    print(f"\n{results['device']}, torch {results['torch']}, {args.layers} layers, {tokens} tokens x 2 branches")
    for row in results["attention_alone"]:
        print("  attention " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    if "eager_forward_s" in results:
        print(f"eager forward {min(results['eager_forward_s']):.3f} s; by kind {json.dumps({k: round(v, 3) for k, v in results['eager_profile']['by_kind_s'].items()})}")
    for name in variants:
        r = results[name]
        print(f"{name}: forward {min(r['forward_s']):.3f} s (first {r['first_forward_s']:.1f} s), peak {r['peak_gib']:.1f} GiB, "
              f"error vs eager default {r['error_vs_eager_default']:.2e}")
        print(f"  by kind {json.dumps({k: round(v, 3) for k, v in r['profile']['by_kind_s'].items()})}")
        for kernel, seconds, count in r["profile"]["top"][:4]:
            print(f"  {seconds:7.3f} s x{count:<4} {kernel}")


if __name__ == "__main__":
    main()
