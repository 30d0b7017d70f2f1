"""2D rotary position embedding (CroCo's RoPE2D), computed in fp32.

Each head's channels split in two halves: the first half rotates with the token's row (y),
the second with its column (x). Within a half of width d the rotate-half convention holds:
x * cos + rotate_half(x) * sin with inv_freq = base^(-arange(0, d, 2) / d) and tables
cat(freqs, freqs). The tables depend only on the patch grid, so they are built once per
pass; rotate_half becomes a fixed channel permutation with its signs folded into the sin
table, so applying RoPE to q and k together is four elementwise kernels.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch

from tracefield.model.fast_ops import fast_path, fused_kernels


class RopeTables(NamedTuple):
    cos: torch.Tensor  # [L, head_dim] fp32
    sin: torch.Tensor  # [L, head_dim] fp32, signs of rotate_half folded in
    perm: torch.Tensor  # [head_dim] channel order of rotate_half


@functools.lru_cache(maxsize=32)
def rope_tables(grid_h: int, grid_w: int, head_dim: int, base: float, device: torch.device) -> RopeTables:
    """Tables for the row-major tokens of a ``grid_h`` x ``grid_w`` patch grid (cached: they are constants).

    Built outside inference mode whatever the caller's mode: tables cached by an inference
    pass would be inference tensors, which a later training pass of the same grid in the
    same process (evaluate, then train) cannot save for backward.
    """
    with torch.inference_mode(False):
        return _tables(grid_h, grid_w, head_dim, base, device)


def _tables(grid_h: int, grid_w: int, head_dim: int, base: float, device: torch.device) -> RopeTables:
    half, quarter = head_dim // 2, head_dim // 4
    inv_freq = 1.0 / (base ** (torch.arange(0, half, 2, device=device, dtype=torch.float32) / half))
    ys = torch.arange(grid_h, device=device, dtype=torch.float32).repeat_interleave(grid_w)
    xs = torch.arange(grid_w, device=device, dtype=torch.float32).repeat(grid_h)
    freqs_y = torch.outer(ys, inv_freq)
    freqs_x = torch.outer(xs, inv_freq)
    angles = torch.cat((freqs_y, freqs_y, freqs_x, freqs_x), dim=-1)  # [L, head_dim]
    # rotate_half per half: (a, b, c, d) -> (-b, a, -d, c), with a..d the four quarters
    quarters = torch.arange(head_dim, device=device).view(4, quarter)
    perm = quarters[[1, 0, 3, 2]].reshape(-1)
    sign = torch.tensor([-1.0, 1.0, -1.0, 1.0], device=device).repeat_interleave(quarter)
    return RopeTables(angles.cos(), angles.sin() * sign, perm)


def apply_rope(x: torch.Tensor, tables: RopeTables) -> torch.Tensor:
    """Rotate ``x`` ``[B, L, ..., D]`` (any axes between L and D); fp32 arithmetic, x's dtype out."""
    shape = (x.shape[1],) + (1,) * (x.dim() - 3) + (x.shape[-1],)
    rotated = torch.addcmul(x * tables.cos.view(shape), x.index_select(-1, tables.perm), tables.sin.view(shape))
    return rotated.to(x.dtype)


def rope_in_place(qkv: torch.Tensor, tables: RopeTables) -> bool:
    """Rotate q and k of a ``[B, L, 3, H, D]`` qkv tensor in place with one fused kernel, if possible.

    Applies to half precision on CUDA in eager inference, with a power-of-two head width;
    returns False (doing nothing) otherwise, and the caller uses :func:`apply_rope`.
    """
    dim = qkv.shape[-1]
    usable = dim & (dim - 1) == 0 and fast_path(qkv, memory_format=torch.contiguous_format)
    kernels = fused_kernels() if usable else None
    if kernels is None:
        return False
    kernels.rope_qk_inplace(qkv, tables.cos, tables.sin)
    return True
