"""Pre-norm transformer block shared by the encoder and the decoder.

Parameter names (``norm1``, ``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``,
``mlp.fc2``) are the checkpoint's. The encoder's blocks rotate q/k with 2D RoPE; the
decoder's attend globally and, in inference, sharpen their softmax as the release does.
"""

from __future__ import annotations

import math
from typing import Collection, Optional, Sequence

import torch
from torch import nn

from tracefield.model.attention import attention
from tracefield.model.fast_ops import add_and_norm, linear_gelu
from tracefield.model.rope import RopeTables, apply_rope, rope_in_place

# The release trained the decoder on 20-token sequences of views and, in eval mode, scales
# the logits by sqrt(ln(137) / ln(20)) to stay sharp on longer ones.
_TRAIN_SEQ, _INFER_SEQ = 20, 137
INFERENCE_LOGIT_GAIN = math.sqrt(math.log(_INFER_SEQ) / math.log(_TRAIN_SEQ))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(linear_gelu(self.fc1, x))


class Attention(nn.Module):
    """Multi-head self-attention with a pluggable kernel (see :mod:`tracefield.model.attention`)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, inference_gain: float = 1.0) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.inference_gain = inference_gain
        self.backend = "math"

    @property
    def scale(self) -> float:
        gain = 1.0 if self.training else self.inference_gain
        return self.head_dim**-0.5 * gain

    def forward(self, x: torch.Tensor, rope: Optional[RopeTables] = None) -> torch.Tensor:
        batch, length, dim = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.num_heads, self.head_dim)
        if rope is None or rope_in_place(qkv, rope):
            q, k, v = qkv.unbind(2)
        else:
            (q, k), v = apply_rope(qkv[:, :, :2], rope).unbind(2), qkv[:, :, 2]
        return self.proj(attention(q, k, v, self.scale, self.backend))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, inference_gain: float = 1.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = Attention(dim, num_heads, qkv_bias, inference_gain)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, normed: torch.Tensor, rope: Optional[RopeTables] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output as two terms still to be added: ``x + attention`` and the MLP's output.

        ``normed`` is ``norm1(x)``. Leaving the last add to the caller lets it fuse that add
        with the next LayerNorm (:func:`run_blocks`, the one way blocks are run).
        """
        x, hidden = add_and_norm(x, self.attn(normed, rope), self.norm2)
        return x, self.mlp(hidden)


def run_blocks(
    blocks: Sequence[Block], x: torch.Tensor, final_norm: nn.LayerNorm, rope: Optional[RopeTables] = None, keep: Collection[int] = (), on_block=None
) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """``final_norm(blocks(x))`` and the outputs of the blocks numbered (from 1) in ``keep``.

    Each block's MLP residual is added in one pass with the next block's first LayerNorm
    (and the last with ``final_norm``) through :func:`add_and_norm`: on the fast path that
    saves a read and a write of the residual stream per block; elsewhere it is the same
    arithmetic in the same order as calling the blocks one by one. ``on_block`` is called
    after each block (progress bars).
    """
    outputs: dict[int, torch.Tensor] = {}
    normed, pending = blocks[0].norm1(x), None
    for index, block in enumerate(blocks, start=1):
        if pending is not None:
            x, normed = add_and_norm(x, pending, block.norm1)
            if index - 1 in keep:
                outputs[index - 1] = x
        x, pending = block(x, normed, rope)
        if on_block is not None:
            on_block()
    x, out = add_and_norm(x, pending, final_norm)
    if len(blocks) in keep:
        outputs[len(blocks)] = x
    return out, outputs
