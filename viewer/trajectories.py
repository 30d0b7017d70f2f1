"""Trajectory curves to draw: seeds, samples on a time grid, colours, and trail styling (no viser).

A trajectory is one pixel's curve, sampled at the viewer's time grid (``--t-step``) and
drawn as line segments. The segments of one grid interval, for all trajectories, form one
scene node, so a time step only toggles nodes and sets their thickness: trails grow to the
current time and older parts thin out (fade) over the trail length. The piece from the
last grid time to the exact slider time is a small extra node ("head").

Colours: by time (each sample's time through a colormap), by speed (|dP/dt| of the curve,
the curve's own derivative, per unit of clip time) or by the source pixel's image colour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

from tracefield import curves
from viewer.scene import Scene

COLOR_MODES = ("time", "speed", "image")
SPEED_RANGE_PERCENTILES = (2.0, 98.0)
THINNEST_FADE = 0.25  # the oldest visible part of a trail keeps this fraction of the width


@dataclass
class Legend:
    """What a colour means: shown as a colour bar."""

    label: str
    vmin: float
    vmax: float
    cmap: str


@dataclass
class Trajectories:
    frames: np.ndarray  # [n] frame each curve starts from
    pixels: np.ndarray  # [n] flat pixel index on that frame
    ctrl: torch.Tensor  # [n, K, 3] float32
    times: np.ndarray  # [S] sample times (the grid)
    samples: np.ndarray  # [n, S, 3] float32 positions at the grid times
    colors: np.ndarray  # [n, S, 3] uint8
    legend: Optional[Legend]

    def __len__(self) -> int:
        return len(self.frames)

    def interval_segments(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Segments ``[n, 2, 3]`` and colours ``[n, 2, 3]`` from grid time k to k + 1."""
        return self.samples[:, k : k + 2], self.colors[:, k : k + 2]

    def head_segments(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        """Segments from the last grid time at or before ``t`` to the curves at ``t`` itself."""
        k = int(np.searchsorted(self.times, t, side="right")) - 1
        if k < 0 or k >= len(self.times) - 1 or not len(self):
            return np.zeros((0, 2, 3), np.float32), np.zeros((0, 2, 3), np.uint8)
        here = curves.evaluate(self.ctrl, [float(t)], dim=1)[:, 0].numpy()
        return np.stack([self.samples[:, k], here], axis=1), np.repeat(self.colors[:, k : k + 1], 2, axis=1)


def time_grid(t_step: float) -> np.ndarray:
    """Sample times 0, t_step, ..., 1 (1 always included)."""
    count = max(int(round(1.0 / max(t_step, 1e-3))), 1)
    return np.linspace(0.0, 1.0, count + 1)


def parse_frames(text: str, num_frames: int) -> list[int]:
    """``"0,mid,last"`` -> frame indices; also ``first``, negative indices and ranges ``a-b``. Invalid items raise ValueError."""
    named = {"first": 0, "mid": num_frames // 2, "last": num_frames - 1}
    frames: list[int] = []
    for item in (part.strip().lower() for part in text.split(",")):
        if not item:
            continue
        if item in named:
            frames.append(named[item])
        elif re.fullmatch(r"\d+-\d+", item):
            lo, hi = item.split("-")
            frames.extend(range(int(lo), int(hi) + 1))
        else:
            value = int(item)
            frames.append(value + num_frames if value < 0 else value)
    bad = [f for f in frames if not 0 <= f < num_frames]
    if bad:
        raise ValueError(f"frame {bad[0]} is outside 0..{num_frames - 1}")
    return sorted(set(frames))


def spread(pixels: np.ndarray, count: int) -> np.ndarray:
    """At most ``count`` of ``pixels`` (flat indices in raster order), evenly spaced: a sparse grid over a region."""
    if len(pixels) <= count:
        return pixels
    return pixels[np.linspace(0, len(pixels) - 1, count).round().astype(int)]


def foreground_seeds(scene: Scene, frames: Sequence[int], per_frame: int) -> list[tuple[int, np.ndarray]]:
    """Up to ``per_frame`` moving pixels of each frame, evenly spread."""
    return [(frame, spread(scene.foreground[frame].pixels, per_frame)) for frame in frames]


def build_trajectories(scene: Scene, seeds: Sequence[tuple[int, np.ndarray]], times: np.ndarray, color_by: str = "time", cmap: str = "turbo") -> Trajectories:
    """Curves of the seed pixels ``[(frame, flat pixels)]`` sampled at ``times``, coloured by ``color_by``."""
    if color_by not in COLOR_MODES:
        raise ValueError(f"colour by {color_by!r}: use one of {', '.join(COLOR_MODES)}")
    field = scene.field
    frames, pixels, ctrl = [], [], []
    for frame, flat in seeds:
        flat = np.asarray(flat, dtype=np.int64)
        frames.append(np.full(len(flat), frame))
        pixels.append(flat)
        ctrl.append(field.ctrl_pts[frame].reshape(field.num_ctrl, -1, 3)[:, torch.from_numpy(flat)].permute(1, 0, 2).float())
    frames_a = np.concatenate(frames) if frames else np.zeros(0, np.int64)
    pixels_a = np.concatenate(pixels) if pixels else np.zeros(0, np.int64)
    ctrl_t = torch.cat(ctrl) if ctrl else torch.zeros((0, field.num_ctrl, 3))
    grid = torch.from_numpy(times).float()
    samples = curves.evaluate(ctrl_t, grid, dim=1).numpy()  # [n, S, 3]
    finite = np.isfinite(samples).all(axis=(1, 2))
    frames_a, pixels_a, ctrl_t, samples = frames_a[finite], pixels_a[finite], ctrl_t[torch.from_numpy(finite)], samples[finite]
    colors, legend = _colours(scene, color_by, cmap, frames_a, pixels_a, ctrl_t, grid, len(times))
    return Trajectories(frames_a, pixels_a, ctrl_t, times, samples.astype(np.float32), colors, legend)


def _colours(scene: Scene, color_by: str, cmap: str, frames: np.ndarray, pixels: np.ndarray, ctrl: torch.Tensor,
             grid: torch.Tensor, count: int) -> tuple[np.ndarray, Optional[Legend]]:
    n = len(frames)
    if color_by == "image":
        rgb = scene.field.images.reshape(scene.num_frames, -1, 3).numpy()[frames, pixels] if n else np.zeros((0, 3), np.uint8)
        return np.repeat(rgb[:, None], count, axis=1), None
    if color_by == "time":
        values = np.broadcast_to(grid.numpy()[None], (n, count))
        return apply_colormap(values, cmap, 0.0, 1.0), Legend("time (0 = first frame, 1 = last)", 0.0, 1.0, cmap)
    speed = torch.linalg.vector_norm(curves.evaluate(ctrl, grid, dim=1, derivative=1), dim=-1).numpy()
    lo, hi = (np.percentile(speed, SPEED_RANGE_PERCENTILES) if n else (0.0, 1.0))
    hi = max(float(hi), float(lo) + 1e-9)
    return apply_colormap(speed, cmap, float(lo), hi), Legend("speed (scene units per clip)", float(lo), hi, cmap)


def apply_colormap(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """Values -> uint8 RGB through a matplotlib colormap (``ValueError`` for an unknown name)."""
    import matplotlib

    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError as exc:
        raise ValueError(f"colormap {cmap!r} is unknown to matplotlib") from exc
    normalised = np.clip((np.asarray(values, dtype=np.float64) - vmin) / (vmax - vmin), 0.0, 1.0)
    return (colormap(normalised)[..., :3] * 255).round().astype(np.uint8)


def trail_style(times: np.ndarray, t: float, trail: float, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Per grid interval: shown at time ``t`` (passed, within ``trail``) and its thickness (thinner when older)."""
    ends = times[1:]
    age = t - ends
    shown = (age >= -1e-9) & (age <= trail + 1e-9)
    fade = 1.0 - np.clip(age / max(trail, 1e-9), 0.0, 1.0) * (1.0 - THINNEST_FADE)
    return shown, width * fade
