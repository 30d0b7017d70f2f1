"""2D rotary position embedding (CroCo's RoPE2D), computed in fp32.

Each head's channels split in two halves: the first half rotates with the token's row (y),
the second with its column (x). Within a half of width d the rotate-half convention holds:
x * cos + rotate_half(x) * sin with inv_freq = base^(-arange(0, d, 2) / d) and tables
cat(freqs, freqs). The tables depend only on the patch grid, so they are built once per
grid and applied with two multiplies and one add: no per-token Python work.
"""

from __future__ import annotations

import torch


def rope_tables(grid_h: int, grid_w: int, head_dim: int, base: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables ``[grid_h * grid_w, head_dim]`` for row-major tokens of a patch grid."""
    half = head_dim // 2
    inv_freq = 1.0 / (base ** (torch.arange(0, half, 2, device=device, dtype=torch.float32) / half))
    ys = torch.arange(grid_h, device=device, dtype=torch.float32).repeat_interleave(grid_w)
    xs = torch.arange(grid_w, device=device, dtype=torch.float32).repeat(grid_h)
    freqs_y = torch.outer(ys, inv_freq)
    freqs_x = torch.outer(xs, inv_freq)
    angles = torch.cat((freqs_y, freqs_y, freqs_x, freqs_x), dim=-1)  # [L, head_dim]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` ``[B, L, H, D]`` by tables ``[L, D]``; computed in fp32, returned in x's dtype."""
    xf = x.float()
    quarter = x.shape[-1] // 4
    a, b, c, d = xf.split(quarter, dim=-1)  # y-half = (a, b), x-half = (c, d)
    rotated = torch.cat((-b, a, -d, c), dim=-1)
    out = xf * cos[:, None, :] + rotated * sin[:, None, :]
    return out.to(x.dtype)
