"""What the viewer draws, computed from a :class:`TraceField` once (numpy/torch, no viser).

* **Foreground**, per frame: the moving pixels (the user's mask where drawn, else the
  automatic one) keep their whole curve (K control points, float16), so the scene at any
  slider time t is one small contraction: each frame's curves evaluated at t, shown for the
  frame whose predicted time is nearest to t (as the release's viewer does).
* **Background**: the static pixels of every frame, each at its trajectory's mean over
  time (closed form: a weighted sum of the control points, see
  :func:`tracefield.curves.time_mean`) with its mean confidence. Successive frames
  see the same static surfaces, so when the pixels of all frames exceed the point budget
  each frame keeps a different interleaved lattice of pixels: together they still cover
  the surfaces densely, and no frame is dropped.
* **Scale**: the world size of one pixel (the median distance between neighbouring
  points of frame 0) and the median depth, from which point sizes, frustum sizes and the
  initial camera follow, so any scene scale looks right.

Points whose curves hold NaN or inf are dropped; non-finite confidences count as zero.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from tracefield import curves
from tracefield.errors import TracefieldError
from tracefield.field import TraceField

log = logging.getLogger(__name__)

DEFAULT_BACKGROUND_BUDGET = 1_500_000


@dataclass
class PointSet:
    """Points ready to send: positions (float16), colours (uint8) and the frame they came from."""

    points: np.ndarray  # [n, 3] float16
    colors: np.ndarray  # [n, 3] uint8
    frame: int = -1

    def __len__(self) -> int:
        return len(self.points)


@dataclass
class FrameForeground:
    """The moving pixels of one frame, with their whole curves."""

    pixels: np.ndarray  # [n] flat index into the network frame (H * W), full resolution
    ctrl: torch.Tensor  # [n, K, 3] float16
    conf: torch.Tensor  # [n, K] float32, non-finite set to 0
    colors: np.ndarray  # [n, 3] uint8


@dataclass
class Background:
    points: np.ndarray  # [m, 3] float16, time-mean positions
    conf: np.ndarray  # [m] float32, time-mean confidences
    colors: np.ndarray  # [m, 3] uint8


@dataclass
class SceneScale:
    footprint: float  # world size of one network pixel at frame 0's median depth
    depth: float  # median depth of frame 0's points
    centre: np.ndarray  # [3] median point of frame 0


class Scene:
    """The field reduced to what the viewer shows; see the module docstring."""

    def __init__(self, field: TraceField, foreground: list[FrameForeground], background: Background, scale: SceneScale) -> None:
        self.field = field
        self.foreground = foreground
        self.background = background
        self.scale = scale
        self.times = field.times.float().numpy()

    @classmethod
    def build(cls, field: TraceField, ds: int = 1, background_budget: int = DEFAULT_BACKGROUND_BUDGET) -> "Scene":
        if ds < 1:
            raise TracefieldError(f"--ds {ds}: the pixel stride must be 1 or more")
        masks = field.masks.bool()
        grid = _strided_pixels(field.hw, ds)
        moving = masks.reshape(field.num_frames, -1)[:, grid].numpy()
        lattice = _lattice_step(int((~moving).sum()), background_budget)
        foreground, background = [], []
        for frame in range(field.num_frames):
            ctrl = field.ctrl_pts[frame].reshape(field.num_ctrl, -1, 3)  # [K, HW, 3], stored precision
            conf = field.ctrl_conf[frame].reshape(field.num_ctrl, -1)
            colors = field.images[frame].reshape(-1, 3)
            fg = grid[moving[frame]]
            foreground.append(_frame_foreground(fg, ctrl, conf, colors))
            bg = grid[~moving[frame]]
            background.append(_frame_background(bg[_interleaved(len(bg), lattice, frame)], ctrl, conf, colors))
        merged = Background(*(np.concatenate(parts) for parts in zip(*((b.points, b.conf, b.colors) for b in background))))
        scene = cls(field, foreground, merged, scene_scale(field))
        log.info("scene: %d frames, %d foreground points per frame on average, %d background points%s",
                 field.num_frames, sum(len(f.pixels) for f in foreground) // max(field.num_frames, 1), len(merged.points),
                 f" (1 static pixel in {lattice} per frame, interleaved across frames)" if lattice > 1 else "")
        return scene

    # ------------------------------------------------------------------ queries
    @property
    def num_frames(self) -> int:
        return self.field.num_frames

    def nearest_frame(self, t: float) -> int:
        """The frame whose predicted time is nearest to ``t``."""
        return int(np.argmin(np.abs(self.times - t)))

    def foreground_at(self, t: float, drop_percent: float) -> PointSet:
        """The nearest frame's moving points at time ``t``, without the least confident ``drop_percent``."""
        frame = self.nearest_frame(t)
        fg = self.foreground[frame]
        if not len(fg.pixels):
            return PointSet(np.zeros((0, 3), np.float16), np.zeros((0, 3), np.uint8), frame)
        points = curves.evaluate(fg.ctrl, [float(t)], dim=1)[:, 0].numpy()  # finite: the curves were filtered at build
        keep = _confident(curves.evaluate(fg.conf, [float(t)], dim=1)[:, 0].numpy(), drop_percent)
        return PointSet(points[keep].astype(np.float16), fg.colors[keep], frame)

    def background_kept(self, drop_percent: float) -> PointSet:
        """The static points without the least confident ``drop_percent``."""
        keep = _confident(self.background.conf, drop_percent)
        return PointSet(self.background.points[keep], self.background.colors[keep])

    def frame_pixel(self, frame: int, x: float, y: float) -> Optional[int]:
        """Flat index of the network pixel nearest to (x, y) on ``frame``, or None outside the frame."""
        height, width = self.field.hw
        if not (math.isfinite(x) and math.isfinite(y)):
            return None
        xi, yi = int(round(x)), int(round(y))
        if not (0 <= xi < width and 0 <= yi < height):
            return None
        return yi * width + xi


def scene_scale(field: TraceField) -> SceneScale:
    """Pixel footprint, median depth and centre of frame 0 (the first camera's view)."""
    points = curves.evaluate_each(field.ctrl_pts[:1], field.times[:1])[0].numpy()  # [H, W, 3]
    finite = np.isfinite(points).all(axis=-1)
    if not finite.any():
        raise TracefieldError(f"{field.frames.source or 'the field'}: frame 0 has no finite 3D points; re-run `tracefield infer`")
    steps = np.linalg.norm(points[:, 1:] - points[:, :-1], axis=-1)
    steps = steps[np.isfinite(steps) & (steps > 0)]
    depth = float(np.median(np.abs(points[finite][:, 2])))
    footprint = float(np.median(steps)) if len(steps) else max(depth, 1.0) / max(field.hw)
    return SceneScale(footprint=footprint, depth=max(depth, footprint), centre=np.median(points[finite], axis=0))


def _strided_pixels(hw: tuple[int, int], ds: int) -> np.ndarray:
    """Flat indices of every ``ds``-th pixel in both directions."""
    height, width = hw
    ys, xs = np.mgrid[0:height:ds, 0:width:ds]
    return (ys * width + xs).ravel()


def _lattice_step(total: int, budget: int) -> int:
    """Keep one background pixel in this many, so that ``total`` pixels fit the ``budget``."""
    return max(1, -(-total // max(budget, 1)))


def _interleaved(count: int, step: int, frame: int) -> np.ndarray:
    """Every ``step``-th of ``count`` items, starting at an offset that changes with the frame."""
    return np.arange(frame % step, count, step)


def _frame_foreground(pixels: np.ndarray, ctrl: torch.Tensor, conf: torch.Tensor, colors: torch.Tensor) -> FrameForeground:
    index = torch.from_numpy(pixels)
    fg_ctrl = ctrl[:, index].permute(1, 0, 2).to(torch.float16)  # [n, K, 3]
    finite = torch.isfinite(fg_ctrl).all(dim=(1, 2))
    fg_conf = torch.nan_to_num(conf[:, index].T.float(), nan=0.0, posinf=0.0, neginf=0.0)
    keep = finite.numpy()
    return FrameForeground(pixels[keep], fg_ctrl[finite].contiguous(), fg_conf[finite].contiguous(), colors[index].numpy()[keep])


def _frame_background(pixels: np.ndarray, ctrl: torch.Tensor, conf: torch.Tensor, colors: torch.Tensor) -> Background:
    index = torch.from_numpy(pixels)
    mean = curves.time_mean(ctrl[:, index])
    mean_conf = torch.nan_to_num(curves.time_mean(conf[:, index]), nan=0.0, posinf=0.0, neginf=0.0)
    keep = torch.isfinite(mean).all(dim=1)
    return Background(mean[keep].numpy().astype(np.float16), mean_conf[keep].numpy(), colors[index][keep].numpy())


def _confident(conf: np.ndarray, drop_percent: float) -> np.ndarray:
    """Mask of the points at or above the ``drop_percent`` percentile of ``conf``."""
    if drop_percent <= 0 or not len(conf):
        return np.ones(len(conf), dtype=bool)
    return conf >= np.percentile(conf, min(drop_percent, 100.0))
