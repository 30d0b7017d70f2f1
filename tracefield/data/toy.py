"""The toy family: the synthetic data as a curriculum, from one translating square up to the full scenes.

Motion is what the small network fails to learn from the full scenes (checkpoints/README.md),
so these stages take the scenes apart and add one difficulty at a time:

* ``square``: one textured square (a thin box facing the camera) translating parallel to
  the image plane over the static room, static camera. Its image is the square shifted by
  ``f * travel / depth``: the simplest motion a tracker can be asked for.
* ``rotate``: the same square also turning about the camera axis and squashing and
  stretching along its own axes (non-rigid), still at a constant depth.
* ``camera``: ``rotate``'s square seen by a moving camera (pan, dolly, orbit or shake),
  so the room moves in the image while it stays put in the world.
* ``full``: the full scenes of :mod:`tracefield.data.synthetic` (2-4 spheres and boxes
  turning in 3D, every camera motion).

A stage is ``SceneConfig.stage``; ``render_scene`` draws the room, focal length and
palettes the same way for every stage, and only the objects and camera from here. A
training run picks stages by step with :func:`stage_at` (``data.curriculum`` and
``data.stage_steps`` of the training config).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from tracefield.data.motion import CAMERA_MOTIONS, ObjectMotion, rotation_matrix, uniform

STAGES = ("square", "rotate", "camera", "full")
SQUARE_THICKNESS = 0.02  # half-depth of the square (a box), world units: flat, but a closed solid for the ray caster


def camera_motion(g: torch.Generator, stage: str) -> str:
    """The camera of a toy stage: still for ``square`` and ``rotate``, one of the moving kinds for ``camera``."""
    if stage == "camera":
        moving = CAMERA_MOTIONS[1:]
        return moving[int(torch.randint(0, len(moving), (1,), generator=g))]
    return "static"


def sample_square(g: torch.Generator, stage: str, times: torch.Tensor) -> ObjectMotion:
    """The one square of a toy stage: its size, path (a straight line), and for ``rotate``/``camera`` its turn and squash.

    The square faces the camera at a constant depth (3 to 4.5 world units; the camera looks
    along +z), travels 1 to 2 units in a random direction across the middle of the
    view (vertically 0.6 times as far: frames are wider than tall), so its image moves a
    sizeable fraction of the frame in any direction.
    """
    t = times[:, None]
    half = uniform(g, 0.4, 0.65, 1)[0]
    depth = uniform(g, 3.0, 4.5, 1)[0]
    angle = uniform(g, 0, 2 * math.pi, 1)[0]
    length = uniform(g, 1.0, 2.0, 1)[0]
    travel = torch.stack([length * angle.cos(), 0.6 * length * angle.sin(), torch.zeros((), dtype=torch.float64)])
    start = -travel / 2 + torch.cat([uniform(g, -0.3, 0.3, 1), uniform(g, -0.15, 0.15, 1), depth[None]])
    centre = start + travel * t  # [T, 3]
    size = torch.stack([half, half, torch.tensor(SQUARE_THICKNESS, dtype=torch.float64)])
    if stage == "square":
        rotation = torch.eye(3, dtype=torch.float64).expand(len(times), 3, 3)
        scale = size.expand(len(times), 3)
    else:
        spin = uniform(g, 0.5, 2.0, 1) * (1 if torch.rand(1, generator=g) < 0.5 else -1)  # radians over the clip
        axis = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
        rotation = rotation_matrix(axis * spin * t)  # [T, 3, 3] about the camera axis
        amount = torch.cat([uniform(g, 0.15, 0.4, 2), torch.zeros(1, dtype=torch.float64)])  # squash in x and y, never in depth
        rate = uniform(g, 0.5, 1.5, 1)
        scale = size * (1 + amount * torch.sin(2 * math.pi * rate * t + uniform(g, 0, 2 * math.pi, 3)))
    palette = torch.rand(1, 2, 3, generator=g, dtype=torch.float64) * 0.8 + 0.1
    frequency = uniform(g, 2.0, 6.0, 1)
    return ObjectMotion(rotation[None].clone(), scale[None].clone(), centre[None], ["box"], palette, frequency)


def check_curriculum(curriculum: str, stage_steps: Sequence[int]) -> list[str]:
    """The stages of ``curriculum`` (comma-separated names of :data:`STAGES`); ValueError naming what is wrong."""
    stages = [name.strip() for name in curriculum.split(",")]
    unknown = [name for name in stages if name not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage {unknown[0]!r}; use one of {', '.join(STAGES)} (comma-separated to go through several)")
    if len(stage_steps) != len(stages) - 1:
        raise ValueError(f"{len(stages)} stages need {len(stages) - 1} step(s) where the next starts, got {list(stage_steps)}")
    if any(a >= b for a, b in zip(stage_steps, stage_steps[1:])) or any(s <= 0 for s in stage_steps):
        raise ValueError(f"the steps where stages start must be positive and increasing, got {list(stage_steps)}")
    return stages


def stage_at(step: int, curriculum: str, stage_steps: Sequence[int]) -> str:
    """The stage training step ``step`` renders: stage i + 1 starts at ``stage_steps[i]``."""
    stages = check_curriculum(curriculum, stage_steps)
    return stages[sum(step >= start for start in stage_steps)]
