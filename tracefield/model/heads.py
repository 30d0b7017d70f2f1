"""The network's outputs: per-pixel B-spline control points with confidences, and a time per view.

Both heads wrap a :class:`DPTAdapter` under the attribute ``dpt`` (checkpoint names).
Activations are applied in fp32 whatever the network's dtype, because ``expm1``/``exp``
amplify rounding: points v -> v / |v| * expm1(|v|), confidences c -> 1 + exp(c).

``head_args.ctrl_offsets`` (ours; off in the release, whose weights and conformance
vectors it leaves untouched) predicts each pixel's point at its own view's time and K
offsets instead of K free control points (:func:`points_from_offsets`): standing still is
then all offsets equal (e.g. zero) and motion a departure from it, while the point the
pixel shows is pinned by one output rather than spread over K.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from tracefield import curves
from tracefield.model.config import NetConfig
from tracefield.model.dpt import DPTAdapter
from tracefield.model.fast_ops import fast_path, fused_kernels


def _dpt_for(net: NetConfig, out_channels: int) -> DPTAdapter:
    enc, dec = net.encoder_args.embed_dim, net.decoder_args.embed_dim
    return DPTAdapter(
        token_dims=[enc, dec, dec, dec],
        layer_dims=net.head_dims.layer_dims,
        feature_dim=net.head_dims.feature_dim,
        last_dim=net.head_dims.last_dim,
        out_channels=out_channels,
    )


def points_from_raw(raw: torch.Tensor, num_ctrl: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, 4K, H, W]`` head output -> points ``[B, K, H, W, 3]`` and confidences ``[B, K, H, W]``.

    Channels [0, 3K) are xyz-major, control-point-minor; [3K, 4K) are the K confidences.
    The points come back as a permuted view; :func:`write_points` copies them into place.
    """
    raw = raw.float()
    xyz = raw[:, : 3 * num_ctrl].unflatten(1, (3, num_ctrl))
    x, y, z = xyz.unbind(1)
    norm = (x * x + y * y + z * z).sqrt().unsqueeze(1)  # elementwise over the three planes: fast in any layout
    factor = torch.expm1(norm) / norm.clamp(min=1e-8)
    conf = 1.0 + raw[:, 3 * num_ctrl :].exp()
    return (xyz * factor).permute(0, 2, 3, 4, 1), conf


def write_points(raw: torch.Tensor, points: torch.Tensor, conf: torch.Tensor) -> None:
    """:func:`points_from_raw` into preallocated ``points``/``conf``; one fused kernel on the fast path."""
    kernels = fused_kernels() if fast_path(raw) and points.is_contiguous() and conf.is_contiguous() else None
    if kernels is not None:
        kernels.points_into(raw, points, conf)
        return
    values, confidences = points_from_raw(raw, points.shape[1])
    points.copy_(values)
    conf.copy_(confidences)


def points_from_offsets(raw: torch.Tensor, num_ctrl: int, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[B, 3 + 4K, H, W]`` -> control points ``[B, K, H, W, 3]`` through each pixel's own-time point, and confidences.

    Channels [0, 3) are the point at the view's time ``times`` ``[B]`` (activated like the
    release's points), [3, 3 + 3K) K offsets (xyz-major, no activation), the last K the
    confidences. Control point k = anchor + offset_k - sum_j B_j(time) offset_j, so the
    curve passes through the anchor at the view's own time whatever the offsets are (the
    basis sums to 1).
    """
    raw = raw.float()
    anchor = raw[:, :3]
    norm = anchor.norm(dim=1, keepdim=True)
    anchor = (anchor * torch.expm1(norm) / norm.clamp(min=1e-8)).permute(0, 2, 3, 1)  # [B, H, W, 3]
    offsets = raw[:, 3 : 3 + 3 * num_ctrl].unflatten(1, (3, num_ctrl)).permute(0, 2, 3, 4, 1)  # [B, K, H, W, 3]
    at_own_time = torch.einsum("bk,bkhwc->bhwc", curves.basis(times, num_ctrl).to(offsets), offsets)
    conf = 1.0 + raw[:, 3 + 3 * num_ctrl :].exp()
    return anchor[:, None] + offsets - at_own_time[:, None], conf


class PointsHead(nn.Module):
    """K control points and K confidences per pixel (``ds_head_track`` / ``ds_head_local``)."""

    def __init__(self, net: NetConfig) -> None:
        super().__init__()
        self.num_ctrl = net.num_ctrl_pts
        self.offsets = net.head_args.ctrl_offsets
        self.dpt = _dpt_for(net, 4 * self.num_ctrl + (3 if self.offsets else 0))

    def forward(
        self, tokens: Sequence[torch.Tensor], grid: tuple[int, int], out: tuple[torch.Tensor, torch.Tensor], times: Optional[torch.Tensor] = None
    ) -> None:
        """Write ``[B, K, H, W, 3]`` points and ``[B, K, H, W]`` confidences (fp32) into ``out``; ``times`` ``[B]``: the views' times (offset heads only)."""
        raw = self.dpt(tokens, grid)
        if not self.offsets:
            write_points(raw, *out)
            return
        points, conf = points_from_offsets(raw, self.num_ctrl, times)
        out[0].copy_(points)
        out[1].copy_(conf)


class TimeHead(nn.Module):
    """One time in (0, 1) per view: mean of a 1-channel DPT map, Linear(1, 1), sigmoid (``ds_head_time``)."""

    def __init__(self, net: NetConfig) -> None:
        super().__init__()
        self.dpt = _dpt_for(net, 1)
        self.scalar_head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1, 1), nn.Sigmoid())

    def forward(self, tokens: Sequence[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        return self.scalar_head(self.dpt(tokens, grid)).float().squeeze(-1)
