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
TIME_SNAP = 5e-4  # half the time slider's step: a time this close to a grid time (or frame time) is on it
MAX_FRAMES_TEXT = 200  # characters of a frames text such as "0,mid,last"
ANCHOR_GAP = 0.75  # frames closer than this many time steps are not all anchors of the time grid
THICKNESS_STEP = 0.25  # trail thickness moves in these steps (screen pixels), so a time step re-sends few nodes
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
        """Segments from the last grid time before ``t`` to the curves at ``t`` itself (none when ``t`` is on the grid)."""
        k = int(np.searchsorted(self.times, t, side="right")) - 1
        if k < 0 or k >= len(self.times) - 1 or not len(self) or on_time(self.times, t) is not None:
            return np.zeros((0, 2, 3), np.float32), np.zeros((0, 2, 3), np.uint8)
        here = curves.evaluate(self.ctrl, [float(t)], dim=1)[:, 0].numpy()
        return np.stack([self.samples[:, k], here], axis=1), np.repeat(self.colors[:, k : k + 1], 2, axis=1)


def time_grid(t_step: float, frame_times: Sequence[float] = ()) -> np.ndarray:
    """Sample times from 0 to 1, about ``t_step`` apart, through the frames' times.

    The frame times are the grid's anchors (with 0 and 1); the gap between two anchors is
    cut into ``round(gap / t_step)`` equal steps. So a step of the time slider that lands on
    a frame (playback, frame stepping) ends exactly on a grid time: the trails only change
    visibility and thickness, and no head piece is drawn. Frames closer together than
    ``0.75 t_step`` (long clips) keep only every few as anchors, so the grid, and the
    bytes of every trajectory, do not grow with the clip's length.
    """
    step = max(t_step, 1e-3)
    anchors = np.unique(np.clip(np.concatenate([[0.0, 1.0], np.asarray(frame_times, np.float64)]), 0.0, 1.0))
    kept = [float(anchors[0])]
    for anchor in anchors[1:]:
        if anchor - kept[-1] >= ANCHOR_GAP * step:
            kept.append(float(anchor))
    kept[-1] = 1.0  # the end is always on the grid (it may replace a frame just before it)
    pieces = [np.linspace(a, b, max(int(round((b - a) / step)), 1) + 1)[:-1] for a, b in zip(kept[:-1], kept[1:])]
    return np.concatenate(pieces + [[1.0]]) if pieces else np.array([0.0, 1.0])


def on_time(times: np.ndarray, t: float) -> Optional[int]:
    """Index of the entry of sorted ``times`` within :data:`TIME_SNAP` of ``t``, or None."""
    k = int(np.searchsorted(times, t))
    near = [i for i in (k - 1, k) if 0 <= i < len(times) and abs(times[i] - t) <= TIME_SNAP]
    return min(near, key=lambda i: abs(times[i] - t)) if near else None


def parse_frames(text: str, num_frames: int) -> list[int]:
    """``"0,mid,last"`` -> frame indices; also ``first``, negative indices, ranges ``a-b`` and ``none``.

    Every item is checked against the frame count before anything is made from it, so a
    range such as ``0-30000000`` costs nothing. Invalid text raises ValueError saying why:
    an unknown item, a frame outside the clip, a range that runs backwards, or no frame at
    all (write ``none`` for no frame).
    """
    if len(text) > MAX_FRAMES_TEXT:
        raise ValueError(f"is longer than {MAX_FRAMES_TEXT} characters")
    if text.strip().lower() == "none":
        return []
    named = {"first": 0, "mid": num_frames // 2, "last": num_frames - 1}
    last = num_frames - 1
    frames: set[int] = set()
    for item in (part.strip().lower() for part in text.split(",")):
        if not item:
            continue
        ends = re.fullmatch(r"(\d+)-(\d+)", item)
        if item in named:
            frames.add(named[item])
        elif ends is not None:
            lo, hi = int(ends.group(1)), int(ends.group(2))
            if lo > hi:
                raise ValueError(f"range {item} runs backwards; write {hi}-{lo}")
            if hi > last:
                raise ValueError(f"range {_short(item)} ends after the last frame, {last}")
            frames.update(range(lo, hi + 1))
        elif re.fullmatch(r"-?\d+", item):
            value = int(item)
            if not -num_frames <= value <= last:
                raise ValueError(f"frame {_short(item)} is outside 0..{last}")
            frames.add(value + num_frames if value < 0 else value)
        else:
            raise ValueError(f"{_short(item)!r} is not a frame (numbers, a-b, first, mid, last)")
    if not frames:
        raise ValueError("names no frame (write none for no frame)")
    return sorted(frames)


def _short(item: str, chars: int = 16) -> str:
    return item if len(item) <= chars else item[:chars] + "..."


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
    """Per grid interval: shown at time ``t`` (passed, within ``trail``) and its thickness (thinner when older).

    Thicknesses are rounded to :data:`THICKNESS_STEP`, so that a step of time changes only
    the intervals whose thickness crosses a step, not every interval shown.
    """
    ends = times[1:]
    age = t - ends
    shown = (age >= -TIME_SNAP) & (age <= trail + TIME_SNAP)
    fade = 1.0 - np.clip(age / max(trail, 1e-9), 0.0, 1.0) * (1.0 - THINNEST_FADE)
    return shown, np.maximum(np.round(width * fade / THICKNESS_STEP), 1.0) * THICKNESS_STEP
