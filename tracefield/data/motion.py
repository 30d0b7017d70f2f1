"""How the synthetic scenes move: shapes' rest-to-world transforms over time, camera paths, and the seeded draws behind them.

Shared by the full scenes (:mod:`tracefield.data.synthetic`) and the toy family
(:mod:`tracefield.data.toy`), so both move things the same way and differ only in what
they draw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

CAMERA_MOTIONS = ("static", "pan", "dolly", "orbit", "shake")
SHAPES = ("sphere", "box")


def uniform(g: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    """``shape`` float64 draws from U(lo, hi) out of ``g`` (every draw of a scene comes from its own generator)."""
    return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=torch.float64)


def rotation_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: ``[..., 3]`` axis-angle -> ``[..., 3, 3]`` rotation matrices (float64)."""
    angle = axis_angle.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    k = axis_angle / angle
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    cross = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], dim=-1).reshape(*k.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype).expand_as(cross)
    s, c = angle.sin()[..., None], angle.cos()[..., None]
    return eye + s * cross + (1 - c) * (cross @ cross)


@dataclass
class ObjectMotion:
    """Per-frame rest-to-world transforms of every shape: X = R (S * m) + c (material point m in the shape's rest space)."""

    rotation: torch.Tensor  # [O, T, 3, 3]
    scale: torch.Tensor  # [O, T, 3]
    centre: torch.Tensor  # [O, T, 3]
    shape: list[str]
    palette: torch.Tensor  # [O, 2, 3] two colours per object
    frequency: torch.Tensor  # [O] texture frequency


def sample_cameras(g: torch.Generator, times: torch.Tensor, motion: str, depth: float) -> torch.Tensor:
    """World -> camera ``[T, 4, 4]``; camera 0 is the world frame."""
    t = times
    yaw, pitch, roll = torch.zeros_like(t), torch.zeros_like(t), torch.zeros_like(t)
    centre = torch.zeros(len(t), 3, dtype=torch.float64)
    if motion == "pan":
        yaw = uniform(g, -0.35, 0.35, 1) * t
        pitch = uniform(g, -0.1, 0.1, 1) * t
    elif motion == "dolly":
        centre = torch.stack([uniform(g, -0.3, 0.3, 1) * t, uniform(g, -0.1, 0.1, 1) * t, uniform(g, 0.4, 1.2, 1) * t], dim=-1)
    elif motion == "orbit":
        angle = uniform(g, -0.4, 0.4, 1) * t
        centre = torch.stack([depth * torch.sin(angle), torch.zeros_like(t), depth * (1 - torch.cos(angle))], dim=-1)
        yaw = -angle
    elif motion == "shake":
        for angles in (yaw, pitch, roll):
            angles += 0.02 * torch.sin(2 * math.pi * uniform(g, 3, 7, 1) * t + uniform(g, 0, 6.3, 1))
        centre = 0.05 * torch.sin(2 * math.pi * uniform(g, 2, 5, 3) * t[:, None] + uniform(g, 0, 6.3, 3))
    rotation = rotation_matrix(torch.stack([pitch, yaw, roll], dim=-1))  # camera -> world
    rotation = rotation @ rotation[0].T  # keep camera 0 axis-aligned
    centre = centre - centre[0]
    pose = torch.eye(4, dtype=torch.float64).repeat(len(t), 1, 1)
    pose[:, :3, :3] = rotation.transpose(1, 2)
    pose[:, :3, 3] = -(rotation.transpose(1, 2) @ centre[..., None])[..., 0]
    return pose
