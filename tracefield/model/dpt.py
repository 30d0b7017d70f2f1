"""DPT adapter (as in DUSt3R/CroCo): four token maps fused into a full-resolution map.

Module names follow the checkpoint (``act_postprocess``, ``scratch.layer{1..4}_rn`` with
its alias list ``scratch.layer_rn``, ``scratch.refinenet{1..4}``, ``head``). Reading the
hooked tokens at 1/16 resolution, it projects them to 4x, 2x, 1x and 1/2x of the patch
grid, fuses coarse-to-fine with residual conv units and 2x bilinear upsampling
(align_corners=True), and ends in conv3x3 -> 2x upsample -> conv3x3 -> ReLU -> conv1x1.
Convolutions and upsampling come from :mod:`tracefield.model.fast_ops` (same parameters,
faster in half precision on CUDA).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tracefield.model.fast_ops import Conv2d, ConvTranspose2d, Upsample2x, conv_act, project_upsampled


class ResidualConvUnit(nn.Module):
    """x + conv(relu(conv(relu(x)))), no batch norm."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = Conv2d(features, features, 3, padding=1)
        self.conv2 = Conv2d(features, features, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = conv_act(self.conv1, F.relu(x), relu=True)
        return conv_act(self.conv2, hidden, residual=x)


class FusionBlock(nn.Module):
    """Add the refined skip input, refine, upsample 2x, project (``refinenet{i}``)."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = Conv2d(features, features, 1)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        return project_upsampled(self.out_conv, x)


class Scratch(nn.Module):
    """Per-level 3x3 projections to ``feature_dim`` and the four fusion blocks."""

    def __init__(self, layer_dims: Sequence[int], features: int) -> None:
        super().__init__()
        self.layer1_rn = Conv2d(layer_dims[0], features, 3, padding=1, bias=False)
        self.layer2_rn = Conv2d(layer_dims[1], features, 3, padding=1, bias=False)
        self.layer3_rn = Conv2d(layer_dims[2], features, 3, padding=1, bias=False)
        self.layer4_rn = Conv2d(layer_dims[3], features, 3, padding=1, bias=False)
        # The release also lists the same four convolutions here; the checkpoint has both names.
        self.layer_rn = nn.ModuleList([self.layer1_rn, self.layer2_rn, self.layer3_rn, self.layer4_rn])
        self.refinenet1 = FusionBlock(features)
        self.refinenet2 = FusionBlock(features)
        self.refinenet3 = FusionBlock(features)
        self.refinenet4 = FusionBlock(features)


def _act_postprocess(token_dims: Sequence[int], layer_dims: Sequence[int]) -> nn.ModuleList:
    """Project each hook's tokens and resample the patch grid by 4, 2, 1 and 1/2."""
    resample = [
        ConvTranspose2d(layer_dims[0], layer_dims[0], kernel_size=4, stride=4),
        ConvTranspose2d(layer_dims[1], layer_dims[1], kernel_size=2, stride=2),
        None,
        Conv2d(layer_dims[3], layer_dims[3], kernel_size=3, stride=2, padding=1),
    ]
    stages = []
    for dim_in, dim_out, extra in zip(token_dims, layer_dims, resample):
        layers = [Conv2d(dim_in, dim_out, 1)] + ([extra] if extra is not None else [])
        stages.append(nn.Sequential(*layers))
    return nn.ModuleList(stages)


class DPTAdapter(nn.Module):
    def __init__(
        self,
        token_dims: Sequence[int],
        layer_dims: Sequence[int],
        feature_dim: int,
        last_dim: int,
        out_channels: int,
    ) -> None:
        super().__init__()
        self.act_postprocess = _act_postprocess(token_dims, layer_dims)
        self.scratch = Scratch(layer_dims, feature_dim)
        self.head = nn.Sequential(
            Conv2d(feature_dim, feature_dim // 2, 3, padding=1),
            Upsample2x(),  # the act_postprocess stages upsample 16-pixel patches by 8; this is the last 2x
            Conv2d(feature_dim // 2, last_dim, 3, padding=1),
            nn.ReLU(inplace=True),
            Conv2d(last_dim, out_channels, 1),
        )

    def forward(self, tokens: Sequence[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        """Four ``[B, P, C_i]`` token tensors on a ``grid`` of patches -> ``[B, out, H, W]``."""
        maps = [
            self.scratch.layer_rn[i](stage(t.transpose(1, 2).unflatten(2, grid)))
            for i, (stage, t) in enumerate(zip(self.act_postprocess, tokens))
        ]
        # The 1/2-resolution level rounds odd grids up; crop its upsampled output to match.
        path = self.scratch.refinenet4(maps[3])[:, :, : maps[2].shape[2], : maps[2].shape[3]]
        path = self.scratch.refinenet3(path, maps[2])
        path = self.scratch.refinenet2(path, maps[1])
        path = self.scratch.refinenet1(path, maps[0])
        head = self.head  # conv3x3, 2x upsample, conv3x3, ReLU, conv1x1 (ReLU fused into its conv)
        return head[4](conv_act(head[2], head[1](head[0](path)), relu=True))
