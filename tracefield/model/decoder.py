"""Decoder (``decoder.*``): all views' tokens in one sequence, tagged with their time.

Only the outputs the DPT heads read are kept (the hooks), so memory does not grow with
decoder depth.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn

from tracefield.model.blocks import INFERENCE_LOGIT_GAIN, Block, run_blocks
from tracefield.model.config import DecoderArgs

TIME_TABLE_ROWS = 1000


def time_embedding_table(dim: int, rows: int = TIME_TABLE_ROWS) -> torch.Tensor:
    """Fixed 1-D sin-cos table ``[rows, dim]``: row p = [sin(p * w_j), cos(p * w_j)], w_j = 10000^(-j/(dim/2)).

    Computed in float64 and rounded once to float32, as the release does with numpy.
    """
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    angles = np.outer(np.arange(rows, dtype=np.float64), omega)
    return torch.from_numpy(np.concatenate([np.sin(angles), np.cos(angles)], axis=1)).float()


def time_rows(times: torch.Tensor, rows: int = TIME_TABLE_ROWS) -> torch.Tensor:
    """Row index floor(t * (rows - 1)) of each time, in float32 arithmetic like the release."""
    return (times.float() * (rows - 1)).long().clamp(0, rows - 1)


class Decoder(nn.Module):
    def __init__(self, args: DecoderArgs) -> None:
        super().__init__()
        self.decoder_embed = nn.Linear(args.enc_embed_dim, args.embed_dim)
        self.dec_blocks = nn.ModuleList(
            Block(args.embed_dim, args.num_heads, args.mlp_ratio, args.qkv_bias, inference_gain=INFERENCE_LOGIT_GAIN)
            for _ in range(args.depth)
        )
        self.dec_norm = nn.LayerNorm(args.embed_dim, eps=1e-6)
        self._time_table: torch.Tensor | None = None

    def time_embedding(self, times: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``[B, N]`` view times -> ``[B, N, D]`` embeddings (a cached constant, not a parameter)."""
        table = self._time_table
        if table is None or table.device != times.device:
            table = time_embedding_table(self.decoder_embed.out_features).to(times.device)
            self._time_table = table
        return table[time_rows(times)].to(dtype)

    def forward(
        self, tokens: torch.Tensor, times: torch.Tensor, hooks: Sequence[int], on_step=None
    ) -> dict[int, torch.Tensor]:
        """``tokens`` ``[B, N, P, C]`` encoder outputs, ``times`` ``[B, N]`` -> {hook: ``[B, N, P, D]``}.

        Hook 0 is the encoder output itself; hook ``depth`` is normalised by ``dec_norm``.
        """
        batch, views, patches, _ = tokens.shape
        wanted = set(hooks)
        kept: dict[int, torch.Tensor] = {0: tokens} if 0 in wanted else {}
        x = self.decoder_embed(tokens) + self.time_embedding(times, tokens.dtype)[:, :, None, :]
        x = x.reshape(batch, views * patches, -1)
        depth = len(self.dec_blocks)
        normed, outputs = run_blocks(self.dec_blocks, x, self.dec_norm, keep=wanted - {depth}, on_block=on_step)
        outputs[depth] = normed
        kept.update({index: outputs[index].view(batch, views, patches, -1) for index in sorted(wanted - {0})})
        return kept
