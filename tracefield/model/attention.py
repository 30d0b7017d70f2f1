"""Attention backends: cuDNN, flash-attn, PyTorch SDPA, and an exact chunked math path.

All compute softmax(q k^T * scale) v; they differ in kernels and memory. Inputs are
``[B, L, H, D]`` (the layout a fused qkv projection yields without copies, and the one
flash-attn wants); the output is ``[B, L, H * D]``.

* ``cudnn``: SDPA restricted to cuDNN's fused kernel, the fastest measured on Hopper
  (489 TFLOP/s at the 40-view decoder shape on an H200, against 311 for SDPA's flash);
* ``flash_attn``: the flash-attn package (optional ``gpu`` extra);
* ``sdpa``: whatever kernel PyTorch picks;
* ``math``: the reference on CPU; it never materialises more than one block of queries'
  scores, so 40 full-size views (23k tokens) fit in a laptop's memory.

``auto`` takes cuDNN on CUDA when it runs there, else flash-attn if installed, else SDPA;
on CPU it takes ``math``.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from tracefield.errors import TracefieldError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "cudnn", "flash_attn", "sdpa", "math")

# Scores of one query block are kept below this many elements in the math path.
_MATH_SCORE_BUDGET = 1 << 25  # ~128 MiB of fp32 scores: fastest block size measured on CPU


def flash_attn_available() -> bool:
    """flash-attn 2, whose ``flash_attn_func`` this backend calls: its compiled extension is there.

    flash-attn-4 (the generator's optional FA4) installs ``flash_attn/cute`` alone: a
    ``flash_attn`` namespace without ``flash_attn_func``, which must not count.
    """
    return all(importlib.util.find_spec(name) is not None for name in ("flash_attn", "flash_attn_2_cuda"))


@functools.lru_cache(maxsize=None)
def cudnn_attention_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether cuDNN's fused attention runs here (it needs a recent cuDNN, sm80+ and half precision)."""
    if device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16):
        return False
    q = torch.zeros(1, 1, 128, 64, device=device, dtype=dtype)
    try:
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            F.scaled_dot_product_attention(q, q, q)
        return True
    except RuntimeError as exc:
        log.debug("cuDNN attention unavailable on %s: %s", device, exc)
        return False


def resolve_backend(requested: str, device: torch.device, dtype: torch.dtype) -> str:
    """Pick the concrete backend for ``requested`` (``auto`` or a name) on this device/dtype."""
    half = dtype in (torch.float16, torch.bfloat16)
    if requested == "auto":
        if device.type != "cuda":
            return "math"
        if cudnn_attention_works(device, dtype):
            return "cudnn"
        return "flash_attn" if half and flash_attn_available() else "sdpa"
    if requested == "flash_attn":
        if not flash_attn_available():
            raise TracefieldError(
                "runtime.attention=flash_attn but the flash-attn package is not installed; "
                "install the gpu extra (pip install 'tracefield[gpu]') or use attention 'sdpa'"
            )
        if device.type != "cuda" or not half:
            raise TracefieldError(
                f"runtime.attention=flash_attn needs CUDA and bfloat16/float16 (got {device.type}, {dtype}); "
                "use attention 'sdpa' or 'math'"
            )
    if requested == "cudnn" and not cudnn_attention_works(device, dtype):
        raise TracefieldError(
            f"runtime.attention=cudnn does not run on {device} with {dtype} (needs CUDA sm80+, cuDNN 9, half precision); "
            "use attention 'auto' or 'sdpa'"
        )
    if requested not in BACKENDS:
        raise TracefieldError(f"attention {requested!r} is unknown; use one of {', '.join(BACKENDS)}")
    return requested


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float, backend: str) -> torch.Tensor:
    """softmax(q k^T * scale) v for ``[B, L, H, D]`` inputs -> ``[B, L, H * D]``."""
    batch, length, heads, dim = q.shape
    if backend == "flash_attn":
        from flash_attn import flash_attn_func

        out = flash_attn_func(q, k, v, softmax_scale=scale)
    elif backend in ("sdpa", "cudnn"):
        qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if backend == "cudnn":
            with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                out = F.scaled_dot_product_attention(qt, kt, vt, scale=scale)
        else:
            out = F.scaled_dot_product_attention(qt, kt, vt, scale=scale)
        out = out.transpose(1, 2)
    elif backend == "math":
        out = _math_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale).transpose(1, 2)
    else:
        raise ValueError(f"unknown attention backend {backend!r}")
    return out.reshape(batch, length, heads * dim)


def _math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Explicit scores + softmax (in fp32) + weighted sum, in query blocks; ``[B, H, L, D]``."""
    batch, heads, length, _ = q.shape
    block = max(1, _MATH_SCORE_BUDGET // max(1, batch * heads * k.shape[2]))
    kt = k.transpose(-2, -1)
    q = q * scale  # on L x D values rather than the L x L scores
    outs = []
    for start in range(0, length, block):
        scores = q[:, :, start : start + block] @ kt
        weights = scores.softmax(dim=-1, dtype=torch.float32).to(v.dtype)
        outs.append(weights @ v)
    return outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
