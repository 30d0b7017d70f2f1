"""A tiny synthetic trajectory field with known cameras, for geometry and export tests.

A tilted background plane filmed by a camera that slides right and turns a little, and a
square card that moves right in front of it. Every pixel's curve is exact: background
points are constant, card points move linearly (a clamped cubic B-spline reproduces a
linear motion when its control points sit at the Greville abscissae).

``background_drift`` makes the background's curves move too: each background point slides
linearly along the plane at that velocity (world units per unit of clip time) through the
point its frame saw at its own time, so reductions over time (the viewer's time mean) have
something to get wrong. The default keeps the background still (the exports' camera tests
rely on it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tracefield import curves
from tracefield.field import FrameInfo, TraceField
from tracefield.geometry import Camera, Intrinsics
from tracefield.io.preprocess import Preprocess

HEIGHT, WIDTH, FOCAL = 72, 128, 110.0
PLANE = (4.0, 0.25)  # background: Z = 4 + 0.25 X
CARD_Z, CARD_HALF = 2.0, 0.35
CARD_START, CARD_END = np.array([-0.6, 0.0]), np.array([0.4, 0.1])  # card centre (X, Y) at t = 0 and t = 1


@dataclass
class Scene:
    field: TraceField
    cameras: list[Camera]  # the true camera of each frame
    card_velocity: np.ndarray  # world units per unit of clip time


def true_camera(i: int, frames: int, height: int = HEIGHT, width: int = WIDTH) -> Camera:
    t = i / (frames - 1)
    yaw = np.radians(3.0 * t)
    rotation = np.array([[np.cos(yaw), 0, -np.sin(yaw)], [0, 1, 0], [np.sin(yaw), 0, np.cos(yaw)]])
    centre = np.array([0.5 * t, -0.05 * t, 0.1 * t])
    focal = FOCAL * width / WIDTH
    return Camera(Intrinsics(focal, (width - 1) / 2, (height - 1) / 2), rotation, -rotation @ centre)


def _card_centre(t: float) -> np.ndarray:
    return CARD_START + (CARD_END - CARD_START) * t


def _rays(camera: Camera, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    k = camera.intrinsics
    directions_cam = np.stack([(xs - k.cx) / k.focal, (ys - k.cy) / k.focal, np.ones_like(xs)], axis=-1)
    return camera.centre, directions_cam @ camera.rotation  # world direction = R^T d


def background_velocity(drift: float) -> np.ndarray:
    """A velocity of length ``drift`` along the background plane Z = a + b X (x right, z rising with it)."""
    return drift * np.array([1.0, 0.0, PLANE[1]]) / np.hypot(1.0, PLANE[1])


def make_scene(frames: int = 5, num_ctrl: int = 4, transform: Preprocess | None = None, height: int = HEIGHT, width: int = WIDTH,
               background_drift: float = 0.0) -> Scene:
    cameras = [true_camera(i, frames, height, width) for i in range(frames)]
    greville = np.array([curves.knot_vector(num_ctrl)[k + 1 : k + 4].mean().item() for k in range(num_ctrl)])
    velocity = np.array([*(CARD_END - CARD_START), 0.0])
    ctrl = np.zeros((frames, num_ctrl, height, width, 3))
    masks = np.zeros((frames, height, width), bool)
    for i, camera in enumerate(cameras):
        t = i / (frames - 1)
        origin, direction = _rays(camera, height, width)
        # background plane Z = a + b X  ->  origin_z + s d_z = a + b (origin_x + s d_x)
        s_plane = (PLANE[0] + PLANE[1] * origin[0] - origin[2]) / (direction[..., 2] - PLANE[1] * direction[..., 0])
        s_card = (CARD_Z - origin[2]) / direction[..., 2]
        hit_card = origin + s_card[..., None] * direction
        centre = _card_centre(t)
        on_card = (np.abs(hit_card[..., 0] - centre[0]) <= CARD_HALF) & (np.abs(hit_card[..., 1] - centre[1]) <= CARD_HALF)
        on_card &= (s_card > 0) & (s_card < s_plane)
        point = np.where(on_card[..., None], hit_card, origin + s_plane[..., None] * direction)
        for k, xi in enumerate(greville):
            ctrl[i, k] = point + np.where(on_card[..., None], velocity, background_velocity(background_drift)) * (xi - t)
        masks[i] = on_card
    images = np.zeros((frames, height, width, 3), np.uint8)
    images[..., 0] = (masks * 200 + 40).astype(np.uint8)
    images[..., 1] = np.tile((np.arange(width) * 2 % 256).astype(np.uint8), (frames, height, 1))
    field = TraceField(
        ctrl_pts=torch.from_numpy(ctrl).float(),
        ctrl_conf=torch.full((frames, num_ctrl, height, width), 2.0),
        times=torch.linspace(0, 1, frames),
        time_steps=torch.linspace(0, 1, frames),
        images=torch.from_numpy(images),
        fg_masks=torch.from_numpy(masks),
        transform=transform or Preprocess.identity(height, width),
        frames=FrameInfo(source="", names=[f"{i:03d}.png" for i in range(frames)], indices=list(range(frames)), fps=10.0),
    )
    return Scene(field=field, cameras=cameras, card_velocity=velocity)
