"""The Trace Anything objective on ground-truth trajectories.

For every pixel of every view, the predicted curve is evaluated at the frame times and
compared with the true 3D positions there: a confidence-weighted L2 distance minus
alpha * log(confidence) (DUSt3R's confidence loss), after normalising prediction and truth
each by its mean distance to the origin (the network predicts up to scale). The local head
gets the same loss on trajectories in each view's own camera frame; the time head an L1
loss on the frame times.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tracefield import curves


@dataclass
class LossWeights:
    conf_alpha: float = 0.2
    time: float = 1.0
    local: float = 1.0


def _normalised(points: torch.Tensor) -> torch.Tensor:
    """Divide each batch item by its mean point norm (DUSt3R's ``avg_dis``)."""
    scale = points.norm(dim=-1).flatten(1).mean(dim=1).clamp(min=1e-6)
    return points / scale.view(-1, *([1] * (points.dim() - 1)))


def confidence_loss(ctrl: torch.Tensor, conf: torch.Tensor, target: torch.Tensor, times: torch.Tensor, alpha: float) -> torch.Tensor:
    """``ctrl`` ``[B, N, K, H, W, 3]``, ``conf`` ``[B, N, K, H, W]``, ``target`` ``[B, N, T, H, W, 3]`` at ``times`` ``[T]``."""
    basis = curves.basis(times, ctrl.shape[2]).to(ctrl.dtype)  # [T, K]
    points = torch.einsum("tk,bnkhwc->bnthwc", basis, ctrl)
    confidence = torch.einsum("tk,bnkhw->bnthw", basis, conf)
    error = (_normalised(points) - _normalised(target)).norm(dim=-1)
    return (confidence * error - alpha * torch.log(confidence)).mean()


def to_camera_frames(tracks: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
    """World trajectories ``[B, N, T, H, W, 3]`` -> each view n's own camera frame (local-head targets)."""
    rotation, translation = poses[..., :3, :3], poses[..., :3, 3]  # [B, N, ...]
    return torch.einsum("bnij,bnthwj->bnthwi", rotation, tracks) + translation[:, :, None, None, None, :]


def trace_anything_loss(
    prediction: dict[str, torch.Tensor], tracks: torch.Tensor, poses: torch.Tensor, times: torch.Tensor, weights: LossWeights
) -> dict[str, torch.Tensor]:
    """Total and per-term losses; ``tracks`` ``[B, N, T, H, W, 3]`` world, ``poses`` ``[B, N, 4, 4]``, ``times`` ``[T]``."""
    terms = {"trajectory": confidence_loss(prediction["ctrl_pts3d"], prediction["ctrl_conf"], tracks, times, weights.conf_alpha)}
    if "ctrl_pts3d_local" in prediction and weights.local:
        local = to_camera_frames(tracks, poses)
        terms["local"] = confidence_loss(prediction["ctrl_pts3d_local"], prediction["ctrl_conf_local"], local, times, weights.conf_alpha)
    terms["time"] = (prediction["time"] - times[None, : prediction["time"].shape[1]]).abs().mean()
    terms["total"] = terms["trajectory"] + weights.local * terms.get("local", 0.0) + weights.time * terms["time"]
    return terms
