"""Correspondence loss: teach the decoder's tokens which patch of another frame is the same point.

A trajectory across frames needs the network to find, in frame s, the patch showing what a
patch of frame t shows. Networks of this family inherit that from cross-view pre-training
(CroCo); from scratch, the trajectory loss alone reaches it only through a long detour
(our runs learnt geometry but kept moving points still). This term supervises it directly,
as MASt3R's matching head does: a training-only linear map turns decoder tokens into unit
descriptors, and for every patch centre of a few query frames the true patch of every other
frame where it is seen must win an InfoNCE softmax over that frame's patches.

The synthetic ground truth gives the targets exactly: the patch centre's world position at
time s (its trajectory) projected into camera s, kept where camera s sees it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tracefield.data.synthetic import project_to_cameras, seen_by_cameras

DESCRIPTOR_DIM = 64
TEMPERATURE = 0.1
QUERY_FRAMES = 4  # query frames per scene and step


class MatchHead(nn.Module):
    """Decoder tokens ``[..., D]`` -> unit descriptors ``[..., 64]`` (training only; not in the model file).

    Initialised from ``generator`` (not the global random state), so runs repeat exactly.
    """

    def __init__(self, dim: int, generator: torch.Generator) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, DESCRIPTOR_DIM)
        nn.init.trunc_normal_(self.proj.weight, std=0.02, generator=generator)
        nn.init.zeros_(self.proj.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.proj(tokens.float()), dim=-1)


def patch_targets(
    tracks: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor, poses: torch.Tensor, query_frames: torch.Tensor, patch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each patch centre of ``query_frames`` ``[Q]``: the patch index it falls in at every frame, and whether it is seen there.

    ``tracks`` ``[N, T, H, W, 3]``, ``depth`` ``[N, H, W]``, ``poses`` ``[N, 4, 4]`` of one scene.
    Returns ``targets`` (long) and ``valid`` (bool), both ``[Q, P, T]``; a frame never matches itself.
    """
    height, width = depth.shape[1:]
    rows, cols = height // patch, width // patch
    ys = torch.arange(rows, device=tracks.device) * patch + patch // 2
    xs = torch.arange(cols, device=tracks.device) * patch + patch // 2
    points = tracks[query_frames][:, :, ys][:, :, :, xs]  # [Q, T, rows, cols, 3]
    points = points.permute(0, 2, 3, 1, 4).flatten(1, 2)  # [Q, P, T, 3]
    u, v, _ = project_to_cameras(points, intrinsics, poses)
    targets = (v.floor().long().clamp(0, height - 1) // patch) * cols + u.floor().long().clamp(0, width - 1) // patch
    valid = seen_by_cameras(points, depth, intrinsics, poses)
    valid &= torch.arange(depth.shape[0], device=tracks.device) != query_frames[:, None, None]
    return targets, valid


def matching_loss(
    descriptors: list[torch.Tensor],
    tracks: torch.Tensor,
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    poses: torch.Tensor,
    patch: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """InfoNCE over patches, averaged over ``descriptors`` (one ``[B, N, P, C]`` unit tensor per layer read).

    Each scene contributes up to :data:`QUERY_FRAMES` random query frames, shared by every
    layer (their targets are computed once); a layer's loss is the mean cross-entropy over
    every (query patch, other frame) pair where the point is seen.
    """
    batch, frames = descriptors[0].shape[:2]
    totals, count = [descriptors[0].new_zeros(()) for _ in descriptors], 0
    for b in range(batch):
        query = torch.randperm(frames, generator=generator)[: min(QUERY_FRAMES, frames)].to(descriptors[0].device)
        targets, valid = patch_targets(tracks[b], depth[b], intrinsics[b], poses[b], query, patch)
        chosen, count = targets[valid], count + int(valid.sum())
        for layer, layer_descriptors in enumerate(descriptors):
            logits = torch.einsum("qpc,tkc->qptk", layer_descriptors[b, query], layer_descriptors[b]) / TEMPERATURE  # [Q, P, T, P]
            totals[layer] = totals[layer] + F.cross_entropy(logits[valid], chosen, reduction="sum")
    return torch.stack(totals).mean() / max(count, 1)


class DecoderMatching(nn.Module):
    """The matching term attached to a network: keeps its decoder's outputs of each pass and scores them.

    Descriptors are read at the middle and the last decoder outputs the heads use: the
    middle so that the later layers' attention can find the matching patch, the last as
    MASt3R does.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        hooks = model.net_config.hooks
        self.layers = [hooks[len(hooks) // 2], hooks[-1]]
        generator = torch.Generator().manual_seed(0)
        self.heads = nn.ModuleList(MatchHead(model.net_config.decoder_args.embed_dim, generator) for _ in self.layers)
        self.patch = model.patch_size
        self._outputs: dict[int, torch.Tensor] = {}
        model.decoder.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple, outputs: dict[int, torch.Tensor]) -> None:
        self._outputs = outputs

    def loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator) -> torch.Tensor:
        """:func:`matching_loss` over the read layers for the last pass (``batch`` as in training)."""
        descriptors = [head(self._outputs[layer]) for layer, head in zip(self.layers, self.heads)]
        self._outputs = {}
        return matching_loss(descriptors, batch["tracks"], batch["depth"], batch["intrinsics"], batch["poses"], self.patch, generator)
