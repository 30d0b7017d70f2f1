"""CroCo ViT encoder (``encoder.*``): patchify, RoPE transformer blocks, final norm. Per view."""

from __future__ import annotations

import torch
from torch import nn

from tracefield.model.blocks import Block, run_blocks
from tracefield.model.config import EncoderArgs
from tracefield.model.rope import rope_tables


class PatchEmbed(nn.Module):
    """16x16 patches to tokens, row-major over the patch grid (``patch_embed.proj``)."""

    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(images).flatten(2).transpose(1, 2)


class Encoder(nn.Module):
    def __init__(self, args: EncoderArgs, rope_base: float) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(args.patch_size, args.embed_dim)
        self.enc_blocks = nn.ModuleList(
            Block(args.embed_dim, args.num_heads, args.mlp_ratio, qkv_bias=True) for _ in range(args.depth)
        )
        self.enc_norm = nn.LayerNorm(args.embed_dim, eps=1e-6)
        self.rope_base = rope_base
        self.head_dim = args.embed_dim // args.num_heads

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[V, 3, H, W]`` images in [-1, 1] -> ``[V, (H/p)*(W/p), D]`` tokens."""
        grid_h, grid_w = (s // self.patch_embed.patch_size for s in images.shape[-2:])
        rope = rope_tables(grid_h, grid_w, self.head_dim, self.rope_base, images.device)
        return run_blocks(self.enc_blocks, self.patch_embed(images), self.enc_norm, rope)[0]
