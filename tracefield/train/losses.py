"""The Trace Anything objective on ground-truth trajectories.

For every pixel of every view, the predicted curve is evaluated at the frame times and
compared with the true 3D positions there: a confidence-weighted L2 distance minus
alpha * log(confidence) (DUSt3R's confidence loss), after normalising prediction and truth
each by its mean distance to the origin (the network predicts up to scale). The local head
gets the same loss on trajectories in each view's own camera frame; the time head an L1
loss on the frame times.

Two optional terms keep moving pixels in play. The confidence loss lets a network settle
hard pixels with low confidence: its gradient there shrinks like alpha / error, so moving
pixels (a fifth of a scene, errors 20x the static ones) pull twenty times less than static
ones and a network learns geometry long before it learns motion. ``plain`` adds the
unweighted distance (a constant pull on every pixel), and ``moving`` multiplies the loss of
pixels whose true trajectory moves by ``1 + moving``.

``displacement`` adds a term on moving pixels alone (:func:`displacement_loss`): the
squared error of each one's displacement from its own-time point, so that only the
motion is scored, not where the pixel is. ``motion_start_step`` trains the geometry
objective alone before it (today's recipe: a geometry stage, then the motion terms);
0 turns the motion terms on from the first step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import torch

from tracefield import curves

MOVING_FRACTION = 0.01  # a pixel moves when its trajectory leaves its own-time point by 1% of the scene scale


@dataclass
class LossWeights:
    conf_alpha: float = 0.2
    time: float = 1.0
    local: float = 1.0
    plain: float = 0.0  # weight of the unweighted trajectory distance
    moving: float = 0.0  # extra weight of moving pixels (1 + moving)
    match: float = 0.0  # weight of the correspondence term (tracefield.train.matching)
    displacement: float = 0.0  # weight of the moving pixels' displacement term (displacement_loss)
    motion_start_step: int = 0  # plain, moving and displacement count from this training step on


def weights_at(weights: LossWeights, step: int) -> LossWeights:
    """The weights training step ``step`` uses: before ``motion_start_step``, the geometry objective alone."""
    return weights if step >= weights.motion_start_step else replace(weights, plain=0.0, moving=0.0, displacement=0.0)


def _scale(points: torch.Tensor) -> torch.Tensor:
    """Each batch item's mean point norm (DUSt3R's ``avg_dis``), shaped to broadcast."""
    scale = points.norm(dim=-1).flatten(1).mean(dim=1).clamp(min=1e-6)
    return scale.view(-1, *([1] * (points.dim() - 1)))


def moving_pixels(tracks: torch.Tensor) -> torch.Tensor:
    """bool ``[B, N, H, W]``: pixels of view n whose true trajectory ``[B, N, T, H, W, 3]`` leaves their time-n point."""
    n = tracks.shape[1]
    own = tracks[:, torch.arange(n), torch.arange(n)]  # [B, N, H, W, 3]
    travel = (tracks - own[:, :, None]).norm(dim=-1).amax(dim=2)  # [B, N, H, W]
    return travel > MOVING_FRACTION * _scale(tracks)[..., 0, 0]


def confidence_loss(
    ctrl: torch.Tensor, conf: torch.Tensor, target: torch.Tensor, times: torch.Tensor, weights: LossWeights, moving: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """``ctrl`` ``[B, N, K, H, W, 3]``, ``conf`` ``[B, N, K, H, W]``, ``target`` ``[B, N, T, H, W, 3]`` at ``times`` ``[T]``."""
    points = curves.evaluate(ctrl, times.to(ctrl.dtype), dim=2)  # [B, N, T, H, W, 3]
    confidence = curves.evaluate(conf, times.to(conf.dtype), dim=2)  # [B, N, T, H, W]
    error = (points / _scale(points) - target / _scale(target)).norm(dim=-1)
    per_point = confidence * error - weights.conf_alpha * torch.log(confidence) + weights.plain * error
    if moving is not None and weights.moving:
        per_point = per_point * (1 + weights.moving * moving[:, :, None].to(per_point.dtype))
    return per_point.mean()


def displacement_loss(ctrl: torch.Tensor, target: torch.Tensor, times: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    """Mean over moving pixels and times of |(p(t) - p(t_n)) - (x(t) - x(t_n))|^2, prediction and truth each scale-normalised.

    ``ctrl`` ``[B, N, K, H, W, 3]``, ``target`` ``[B, N, T, H, W, 3]`` at ``times`` ``[T]`` (view n
    at time ``times[n]``), ``moving`` bool ``[B, N, H, W]``; 0 when nothing moves. Only the
    motion since the pixel's own time is scored, so a network that has its geometry cannot
    lower this term by standing still; squared (unlike the trajectory term) so that partial
    knowledge of where a point goes already pays: the optimum under an uncertain direction
    is the mean displacement, not the median (which for motion in any direction is zero).
    Not confidence-weighted: a network cannot give up on it.
    """
    points = curves.evaluate(ctrl, times.to(ctrl.dtype), dim=2)  # [B, N, T, H, W, 3]
    views = torch.arange(points.shape[1], device=points.device)
    pred, true = points / _scale(points), target / _scale(target)
    pred = pred - pred[:, views, views][:, :, None]
    true = true - true[:, views, views][:, :, None]
    error = ((pred - true) ** 2).sum(-1)  # [B, N, T, H, W]
    mask = moving[:, :, None].expand_as(error)
    return error[mask].mean() if mask.any() else error.sum() * 0.0


def to_camera_frames(tracks: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
    """World trajectories ``[B, N, T, H, W, 3]`` -> each view n's own camera frame (local-head targets)."""
    rotation, translation = poses[..., :3, :3], poses[..., :3, 3]  # [B, N, ...]
    return torch.einsum("bnij,bnthwj->bnthwi", rotation, tracks) + translation[:, :, None, None, None, :]


def trace_anything_loss(
    prediction: dict[str, torch.Tensor], tracks: torch.Tensor, poses: torch.Tensor, times: torch.Tensor, weights: LossWeights
) -> dict[str, torch.Tensor]:
    """Total and per-term losses; ``tracks`` ``[B, N, T, H, W, 3]`` world, ``poses`` ``[B, N, 4, 4]``, ``times`` ``[T]``."""
    moving = moving_pixels(tracks) if weights.moving or weights.displacement else None
    terms = {"trajectory": confidence_loss(prediction["ctrl_pts3d"], prediction["ctrl_conf"], tracks, times, weights, moving)}
    if "ctrl_pts3d_local" in prediction and weights.local:
        local = to_camera_frames(tracks, poses)
        terms["local"] = confidence_loss(prediction["ctrl_pts3d_local"], prediction["ctrl_conf_local"], local, times, weights, moving)
    terms["time"] = (prediction["time"] - times[None, : prediction["time"].shape[1]]).abs().mean()
    terms["total"] = terms["trajectory"] + weights.local * terms.get("local", 0.0) + weights.time * terms["time"]
    if weights.displacement:
        terms["displacement"] = displacement_loss(prediction["ctrl_pts3d"], tracks, times, moving)
        terms["total"] = terms["total"] + weights.displacement * terms["displacement"]
    return terms
