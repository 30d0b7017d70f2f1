"""ATI's motion patch: trajectories written into Wan's image-condition latents.

The condition ``y`` is ``[20, 21, h, w]``: 4 mask channels and 16 VAE latent channels for
21 latent frames (the first frame, then groups of 4 of the 80 following pixel frames). For
each later latent frame, every latent cell takes up to two nearby tracks (Gaussian weight
exp(-220 d^2), d in units where the short side spans [-1, 1]) and receives the first
frame's latent feature sampled at each track's starting point, blended over the original
condition by the total weight; the mask channels become that weight (1 on frame 0).

Same function as ATI's inference-mode ``patch_motion``, but tracks are processed in chunks
that keep a running top-2, so memory grows with the latent size, not with tracks x cells
(ATI needs about 2 MB per track at 480x832; thousands of tracks fit here).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TEMPERATURE = 220.0
TOP_K = 2
MASK_CHANNELS = 4
FRAMES_PER_LATENT = 4
DEFAULT_CHUNK = 64


def patch_motion(tracks: torch.Tensor, condition: torch.Tensor, chunk: int = DEFAULT_CHUNK) -> torch.Tensor:
    """``tracks`` ``[1, 81, N, 4]`` (t, x, y, visibility as ATI's reader gives), ``condition`` ``[20, T, h, w]``."""
    _, frames, height, width = condition.shape
    short = min(height, width)
    xy, visible = tracks[0, :, :, 1:3].float(), tracks[0, :, :, 3:4].float().clamp(0, 1)  # [81, N, 2], [81, N, 1]
    groups = frames - 1
    later_visible = visible[1:].reshape(groups, FRAMES_PER_LATENT, *visible.shape[1:])
    seen = later_visible.sum(1)  # [T-1, N, 1]
    centres = (xy[1:] * visible[1:]).reshape(groups, FRAMES_PER_LATENT, *xy.shape[1:]).sum(1) / (seen + 1e-5)  # [T-1, N, 2]
    grid = _latent_grid(height, width, xy.device)  # [h, w, 2]
    features = _start_features(xy[0], condition, short)  # [N, 16]

    # Running top-2 over chunks of tracks: weights and which track each came from.
    best_weight = torch.zeros(groups, height, width, 0, device=condition.device)
    best_track = torch.zeros(groups, height, width, 0, dtype=torch.long, device=condition.device)
    for start in range(0, xy.shape[1], chunk):
        stop = min(start + chunk, xy.shape[1])
        distance = (centres[:, None, None, start:stop] - grid[None, :, :, None]).pow(2).sum(-1)  # [T-1, h, w, n]
        weight = torch.exp(-distance * TEMPERATURE) * seen[:, start:stop, 0].clamp(0, 1)[:, None, None]
        tracks_here = torch.arange(start, stop, device=condition.device).expand(*weight.shape)
        candidates, owners = torch.cat([best_weight, weight], dim=-1), torch.cat([best_track, tracks_here], dim=-1)
        best_weight, index = torch.topk(candidates, k=min(TOP_K, candidates.shape[-1]), dim=-1)
        best_track = torch.gather(owners, -1, index)
    total = best_weight.sum(-1)  # [T-1, h, w]
    moved = (features[best_track] * best_weight[..., None]).sum(-2).permute(3, 0, 1, 2)  # [16, T-1, h, w]
    latents = condition[MASK_CHANNELS:]
    mixed = moved.to(latents.dtype) + latents[:, 1:] * (1 - total.clamp(0, 1)).to(latents.dtype)
    mask = torch.cat([torch.ones_like(total[:1]), total]).to(condition.dtype)
    return torch.cat([mask[None].expand(MASK_CHANNELS, -1, -1, -1), torch.cat([latents[:, :1], mixed], dim=1)])


def _latent_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Each latent cell's position in track units: x spans +-W/short, y spans +-H/short."""
    short = min(height, width)
    xs = torch.linspace(-width / short, width / short, width, device=device)
    ys = torch.linspace(-height / short, height / short, height, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def _start_features(start: torch.Tensor, condition: torch.Tensor, short: int) -> torch.Tensor:
    """The first latent frame's 16 channels, bilinearly sampled at each track's frame-0 point -> ``[N, 16]``."""
    _, _, height, width = condition.shape
    normalised = (start / torch.tensor([width / short, height / short], device=start.device)).clamp(-1, 1)
    first = condition[MASK_CHANNELS:, :1].permute(1, 0, 2, 3)  # [1, 16, h, w]
    sampled = F.grid_sample(first, normalised[None, None].to(first.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return sampled[0, :, 0].T
