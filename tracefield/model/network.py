"""The Trace Anything network: N frames in, one trajectory field out, in one pass.

``predict`` is the tensor API (batched, differentiable, used by inference and training);
``forward`` keeps the release's calling convention (a list of ``{"img", "time_step"}``
views in, a list of per-view dicts out) so code written for the release keeps working.
Evaluated tracks are never built here: callers evaluate curves with
:mod:`tracefield.curves` at the times they need.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
from torch import nn

from tracefield.model.attention import resolve_backend
from tracefield.model.blocks import Attention
from tracefield.model.config import NetConfig, RuntimeArgs, rope_frequency
from tracefield.model.decoder import Decoder
from tracefield.model.encoder import Encoder
from tracefield.model.graphs import GraphCache
from tracefield.model.heads import PointsHead, TimeHead

# Release name -> our canonical name; the release registers every head under both.
HEAD_ALIASES = {"time_head": "ds_head_time", "track_head": "ds_head_track", "local_head": "ds_head_local"}

OnStep = Optional[Callable[[], None]]


class TraceAnything(nn.Module):
    def __init__(self, net: NetConfig, runtime: Optional[RuntimeArgs] = None) -> None:
        super().__init__()
        self.net_config = net
        self.runtime = runtime or RuntimeArgs()
        self.encoder = Encoder(net.encoder_args, rope_frequency(net))
        self.decoder = Decoder(net.decoder_args)
        self.ds_head_time = TimeHead(net)
        self.ds_head_track = PointsHead(net)
        self.ds_head_local = PointsHead(net) if net.with_local_head else None
        # Same modules under the release's second names, so state_dict keys match the checkpoint.
        self.time_head = self.ds_head_time
        self.track_head = self.ds_head_track
        if self.ds_head_local is not None:
            self.local_head = self.ds_head_local
        self.attention_backend = "math"  # every Attention starts on it; load_model picks the real one
        # Provenance, filled in by load_model and recorded in every field file.
        self.untrained = True
        self.checkpoint_source: Optional[str] = None
        self.config_source = "<defaults>"
        self._graphs = GraphCache()

    # ----------------------------------------------------------------- configuration
    @property
    def num_ctrl_pts(self) -> int:
        return self.net_config.num_ctrl_pts

    @property
    def patch_size(self) -> int:
        return self.net_config.encoder_args.patch_size

    def set_attention(self, requested: str) -> str:
        """Choose the attention kernel for this model's device and dtype; returns the one chosen."""
        param = next(self.parameters())
        backend = resolve_backend(requested, param.device, param.dtype)
        for module in self.modules():
            if isinstance(module, Attention):
                module.backend = backend
        self.attention_backend = backend
        return backend

    def compile_parts(self) -> None:
        """torch.compile every block and head in place (names and checkpoints unchanged).

        Blocks of one kind share their compiled code, and shapes are dynamic, so this costs
        one compilation per kind of part rather than per block or per view count. Compiled
        parts use Inductor's fusions instead of ours, and no CUDA graphs of our own.
        """
        self.runtime.cuda_graph_max_views = 0
        for part in [*self.encoder.enc_blocks, *self.decoder.dec_blocks, self.ds_head_time, self.ds_head_track, self.ds_head_local]:
            if part is not None:
                part.compile(dynamic=True)

    def num_forward_steps(self, num_views: int, local_head: bool = True) -> int:
        """How many times ``predict`` calls ``on_step`` for ``num_views`` views (for progress bars)."""
        heads = 3 if self._runs_local_head(local_head) else 2
        return (
            math.ceil(num_views / self.runtime.encoder_chunk_views)
            + self.net_config.decoder_args.depth
            + heads * math.ceil(num_views / self.runtime.head_chunk_views)
        )

    # ----------------------------------------------------------------- tensor API
    def predict(self, images: torch.Tensor, times: torch.Tensor, on_step: OnStep = None, local_head: bool = True) -> dict[str, torch.Tensor]:
        """Run the network on ``images`` ``[B, N, 3, H, W]`` in [-1, 1] with view ``times`` ``[B, N]``.

        Returns fp32 tensors: ``time`` ``[B, N]``, ``ctrl_pts3d`` ``[B, N, K, H, W, 3]``,
        ``ctrl_conf`` ``[B, N, K, H, W]`` and, with the local head, ``ctrl_pts3d_local`` and
        ``ctrl_conf_local``. All points are in the first view's camera frame.
        ``local_head=False`` skips the local head (a third of the heads' work) where nothing
        reads its output: the other outputs are the same either way.
        """
        batch, views, _, height, width = images.shape
        self._check_image_size(height, width)
        param = next(self.parameters())
        images, times = images.to(param.device), times.to(param.device)
        local_head = self._runs_local_head(local_head)
        forward = functools.partial(self._forward, local_head=local_head)
        if self._use_graph(batch * views):
            out = self._graphs.run(forward, images, times, variant=local_head)
            for _ in range(self.num_forward_steps(views, local_head) if on_step is not None else 0):
                on_step()
            return out
        return forward(images, times, on_step)

    def _runs_local_head(self, asked: bool) -> bool:
        return asked and self.ds_head_local is not None

    def _use_graph(self, num_views: int) -> bool:
        return (
            next(self.parameters()).device.type == "cuda"
            and num_views <= self.runtime.cuda_graph_max_views
            and not torch.is_grad_enabled()
        )

    def _forward(self, images: torch.Tensor, times: torch.Tensor, on_step: OnStep = None, *, local_head: bool) -> dict[str, torch.Tensor]:
        batch, views, _, height, width = images.shape
        param = next(self.parameters())
        flat = images.reshape(batch * views, 3, height, width).to(dtype=param.dtype)
        tokens = self._encode(flat, on_step)
        grid = (height // self.patch_size, width // self.patch_size)
        hooked = self.decoder(tokens.unflatten(0, (batch, views)), times, grid, self.net_config.hooks, on_step)
        layers = [hooked[h].flatten(0, 1) for h in self.net_config.hooks]
        out = self._run_heads(layers, grid, on_step, local_head, times.reshape(-1))
        return {key: value.unflatten(0, (batch, views)) for key, value in out.items()}

    def _check_image_size(self, height: int, width: int) -> None:
        p = self.patch_size
        if height % p or width % p:
            raise ValueError(f"image size {height}x{width} must be a multiple of the patch size {p}")
        if width < height:
            raise ValueError(f"image size {height}x{width} is portrait; rotate views to landscape (W >= H) first")

    def _encode(self, flat: torch.Tensor, on_step: OnStep) -> torch.Tensor:
        chunks = []
        for chunk in flat.split(self.runtime.encoder_chunk_views):
            chunks.append(self.encoder(chunk))
            self._step(on_step)
        return torch.cat(chunks)

    def _run_heads(
        self, layers: Sequence[torch.Tensor], grid: tuple[int, int], on_step: OnStep, local_head: bool, times: Optional[torch.Tensor] = None
    ) -> dict[str, torch.Tensor]:
        """Heads over chunks of views, so full-resolution DPT features stay bounded in memory.

        ``local_head``: run the local head too (already checked against the network).
        ``times`` ``[views]``: each view's time, which heads with ``ctrl_offsets`` need.

        Outputs are allocated once and each chunk's results are written straight into them.
        """
        total, step, k = layers[0].shape[0], self.runtime.head_chunk_views, self.num_ctrl_pts
        height, width = grid[0] * self.patch_size, grid[1] * self.patch_size
        empty = functools.partial(torch.empty, device=layers[0].device, dtype=torch.float32)
        points_heads = {"": self.ds_head_track}
        if local_head:
            points_heads["_local"] = self.ds_head_local
        out = {"time": empty(total)}
        for suffix in points_heads:
            out["ctrl_pts3d" + suffix] = empty(total, k, height, width, 3)
            out["ctrl_conf" + suffix] = empty(total, k, height, width)
        for start in range(0, total, step):
            chunk, rows = [layer[start : start + step] for layer in layers], slice(start, start + step)
            out["time"][rows] = self.ds_head_time(chunk, grid)
            self._step(on_step)
            for suffix, head in points_heads.items():
                head(chunk, grid, out=(out["ctrl_pts3d" + suffix][rows], out["ctrl_conf" + suffix][rows]), times=None if times is None else times[rows])
                self._step(on_step)
        return out

    @staticmethod
    def _step(on_step: OnStep) -> None:
        if on_step is not None:
            on_step()

    # ----------------------------------------------------------------- release API
    @torch.no_grad()
    def forward(self, views: Sequence[Mapping[str, Any]]) -> list[dict[str, torch.Tensor]]:
        """The release's interface: views ``[{"img": [B, 3, H, W], "time_step": t}, ...]``.

        Per view: ``time`` ``[B]``, ``ctrl_pts3d`` / ``ctrl_pts3d_local`` ``[K, H, W, 3]`` and
        ``ctrl_conf`` / ``ctrl_conf_local`` ``[K, H, W]`` (a leading B axis when B > 1).
        """
        images = torch.stack([v["img"] for v in views], dim=1)
        batch = images.shape[0]
        times = torch.stack(
            [torch.as_tensor(v["time_step"], dtype=torch.float32).reshape(-1).expand(batch) for v in views], dim=1
        )
        out = self.predict(images, times)
        results = []
        for i in range(len(views)):
            view = {key: value[:, i] for key, value in out.items()}
            if batch == 1:
                view = {key: (value if key == "time" else value[0]) for key, value in view.items()}
            results.append(view)
        return results
