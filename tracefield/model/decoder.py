"""Decoder (``decoder.*``): all views' tokens in one sequence, tagged with their time.

Only the outputs the DPT heads read are kept (the hooks), so memory does not grow with
decoder depth.

With ``decoder_args.position_embedding`` (tracefield's option; the release has none) each
token is also tagged with its patch's row and column. Without it a decoder token knows where
it is only through image content: the encoder's RoPE acts on attention logits, never on the
values, so a token that finds its match in another frame cannot learn *where* that match
is, which is what a trajectory needs. A linear probe of our small network's decoder tokens
recovers their column with R^2 0.16 (7.4 patches rms).
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


def position_embedding_table(dim: int, rows: int, cols: int) -> torch.Tensor:
    """Fixed 2D sin-cos table ``[rows * cols, dim]`` (row-major): the first half embeds the row, the second the column (MAE's layout)."""
    row_table, col_table = time_embedding_table(dim // 2, rows), time_embedding_table(dim // 2, cols)
    return torch.cat([row_table[:, None].expand(rows, cols, -1), col_table[None].expand(rows, cols, -1)], dim=-1).reshape(rows * cols, dim)


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
        self.position_embedding = args.position_embedding
        self._time_table: torch.Tensor | None = None
        self._position_tables: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def time_embedding(self, times: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``[B, N]`` view times -> ``[B, N, D]`` embeddings (a cached constant, not a parameter)."""
        table = self._time_table
        if table is None or table.device != times.device:
            table = time_embedding_table(self.decoder_embed.out_features).to(times.device)
            self._time_table = table
        return table[time_rows(times)].to(dtype)

    def tags(self, times: torch.Tensor, grid: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """What is added to every token: its view's time embedding and, if enabled, its patch's position; ``[B, N, 1 or P, D]``."""
        tags = self.time_embedding(times, dtype)[:, :, None, :]
        if not self.position_embedding:
            return tags
        key = (*grid, times.device)
        if key not in self._position_tables:
            self._position_tables[key] = position_embedding_table(self.decoder_embed.out_features, *grid).to(times.device)
        return tags + self._position_tables[key].to(dtype)

    def forward(
        self, tokens: torch.Tensor, times: torch.Tensor, grid: tuple[int, int], hooks: Sequence[int], on_step=None
    ) -> dict[int, torch.Tensor]:
        """``tokens`` ``[B, N, P, C]`` encoder outputs on a ``grid`` (rows, cols) of patches, ``times`` ``[B, N]`` -> {hook: ``[B, N, P, D]``}.

        Hook 0 is the encoder output itself; hook ``depth`` is normalised by ``dec_norm``.
        """
        batch, views, patches, _ = tokens.shape
        wanted = set(hooks)
        kept: dict[int, torch.Tensor] = {0: tokens} if 0 in wanted else {}
        x = self.decoder_embed(tokens) + self.tags(times, grid, tokens.dtype)
        x = x.reshape(batch, views * patches, -1)
        depth = len(self.dec_blocks)
        normed, outputs = run_blocks(self.dec_blocks, x, self.dec_norm, keep=wanted - {depth}, on_block=on_step)
        outputs[depth] = normed
        kept.update({index: outputs[index].view(batch, views, patches, -1) for index in sorted(wanted - {0})})
        return kept
