"""Fused elementwise kernels (Triton) for the half-precision CUDA path.

Eager PyTorch spends a quarter of a 40-view pass in small elementwise kernels around the
matrix products: RoPE on q/k (a gather, two broadcast multiplies, an add and two casts),
the convolutions' bias adds, ReLUs and residual adds, the transformer's residual add and
LayerNorm, and the heads' point activations and layout change. Each kernel here does one
of those chains in a single read and write, in fp32 registers. Imported only on CUDA with
Triton present (it ships with PyTorch's CUDA builds); :mod:`tracefield.model.fast_ops` and
:mod:`tracefield.model.blocks` fall back to PyTorch otherwise.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

_ROWS_PER_PROGRAM = 16


@triton.jit
def _rope_kernel(qkv, cos, sin, rows, heads2, seq_len, HEAD_DIM: tl.constexpr, QUARTER: tl.constexpr, ROWS: tl.constexpr):
    row = tl.program_id(0) * ROWS + tl.arange(0, ROWS)[:, None]  # over (b, l, {q, k}, h)
    col = tl.arange(0, HEAD_DIM)[None, :]
    mask = row < rows
    token = row // heads2  # b * L + l
    base = token * (3 * heads2 // 2) * HEAD_DIM + (row % heads2) * HEAD_DIM  # skips each token's v
    pos = token % seq_len
    x = tl.load(qkv + base + col, mask=mask).to(tl.float32)
    partner = tl.load(qkv + base + (col ^ QUARTER), mask=mask).to(tl.float32)  # rotate_half's channel swap
    c = tl.load(cos + pos * HEAD_DIM + col, mask=mask)
    s = tl.load(sin + pos * HEAD_DIM + col, mask=mask)
    tl.store(qkv + base + col, (x * c + partner * s).to(qkv.dtype.element_ty), mask=mask)


def rope_qk_inplace(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """Rotate q and k of a contiguous ``[B, L, 3, H, D]`` qkv tensor in place (sin carries rotate_half's signs)."""
    batch, length, _, heads, dim = qkv.shape
    rows = batch * length * 2 * heads
    grid = (triton.cdiv(rows, _ROWS_PER_PROGRAM),)
    _rope_kernel[grid](qkv, cos, sin, rows, 2 * heads, length, HEAD_DIM=dim, QUARTER=dim // 4, ROWS=_ROWS_PER_PROGRAM)


@triton.jit
def _bias_act_kernel(y, bias, residual, total, channels, HAS_RESIDUAL: tl.constexpr, RELU: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    value = tl.load(y + offs, mask=mask).to(tl.float32) + tl.load(bias + offs % channels, mask=mask).to(tl.float32)
    if HAS_RESIDUAL:
        value += tl.load(residual + offs, mask=mask).to(tl.float32)
    if RELU:
        value = tl.maximum(value, 0.0)
    tl.store(y + offs, value.to(y.dtype.element_ty), mask=mask)


def bias_act_inplace(y: torch.Tensor, bias: torch.Tensor, residual: Optional[torch.Tensor], relu: bool) -> None:
    """``y = act(y + bias [+ residual])`` in place over channels-last ``[N, C, H, W]`` tensors."""
    total = y.numel()
    block = 2048
    _bias_act_kernel[(triton.cdiv(total, block),)](
        y, bias, residual if residual is not None else y, total, y.shape[1],
        HAS_RESIDUAL=residual is not None, RELU=relu, BLOCK=block,
    )


@triton.jit
def _points_kernel(raw, points, conf, pixels, hw, K: tl.constexpr, KP: tl.constexpr, PIX: tl.constexpr):
    pix = tl.program_id(0) * PIX + tl.arange(0, PIX)[:, None]  # b * H * W + h * W + w
    k = tl.arange(0, KP)[None, :]
    mask = (pix < pixels) & (k < K)
    src = raw + pix * (4 * K) + k  # channels-last raw head output: x, y, z planes then confidences
    x = tl.load(src, mask=mask).to(tl.float32)
    y = tl.load(src + K, mask=mask).to(tl.float32)
    z = tl.load(src + 2 * K, mask=mask).to(tl.float32)
    c = tl.load(src + 3 * K, mask=mask).to(tl.float32)
    norm = tl.sqrt(x * x + y * y + z * z)
    factor = libdevice.expm1(norm) / tl.maximum(norm, 1e-8)
    dst = (pix // hw * K + k) * hw + pix % hw  # [B, K, H, W] index
    tl.store(points + dst * 3, x * factor, mask=mask)
    tl.store(points + dst * 3 + 1, y * factor, mask=mask)
    tl.store(points + dst * 3 + 2, z * factor, mask=mask)
    tl.store(conf + dst, 1.0 + tl.exp(c), mask=mask)


def points_into(raw: torch.Tensor, points: torch.Tensor, conf: torch.Tensor) -> None:
    """Channels-last ``[B, 4K, H, W]`` head output -> fp32 ``points [B, K, H, W, 3]`` and ``conf [B, K, H, W]``."""
    batch, channels, height, width = raw.shape
    num_ctrl = channels // 4
    pixels, block = batch * height * width, 64
    _points_kernel[(triton.cdiv(pixels, block),)](
        raw, points, conf, pixels, height * width, K=num_ctrl, KP=triton.next_power_of_2(num_ctrl), PIX=block
    )


@triton.jit
def _add_layernorm_kernel(x, y, total_out, norm_out, weight, bias, width, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    col = tl.arange(0, BLOCK)
    mask = col < width
    offs = row * width + col
    total = tl.load(x + offs, mask=mask, other=0.0).to(tl.float32) + tl.load(y + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(total_out + offs, total.to(total_out.dtype.element_ty), mask=mask)
    mean = tl.sum(total, axis=0) / width
    centred = tl.where(mask, total - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centred * centred, axis=0) / width + eps)
    w = tl.load(weight + col, mask=mask).to(tl.float32)
    b = tl.load(bias + col, mask=mask).to(tl.float32)
    tl.store(norm_out + offs, (centred * rstd * w + b).to(norm_out.dtype.element_ty), mask=mask)


def add_layernorm(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``s = x + y`` and ``LayerNorm(s)`` in one pass over contiguous ``[..., D]`` tensors (fp32 arithmetic)."""
    width = x.shape[-1]
    total, normed = torch.empty_like(x), torch.empty_like(x)
    rows = x.numel() // width
    _add_layernorm_kernel[(rows,)](x, y, total, normed, weight, bias, width, eps, BLOCK=triton.next_power_of_2(width))
    return total, normed
