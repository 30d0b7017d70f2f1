"""Pictures that come with every export: the first frame with its tracks, and a video.

Tracks are coloured by time (matplotlib's turbo: blue early, red late), start with a dot
and end with an arrow head; the video shows trails growing to the current frame and
fading with age over the frames the network saw, warped to the output's pixels. Drawing
takes pixel-centre coordinates (pixel i at i, what OpenCV draws at); an export draws what
its file holds, read back (see :mod:`tracefield.export.run`).
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable

import cv2
import imageio.v2 as iio
import matplotlib
import numpy as np
from PIL import Image

from tracefield.export.canvas import Placement
from tracefield.export.images import warp
from tracefield.field import TraceField
from tracefield.io.atomic import atomic_file

log = logging.getLogger(__name__)

COLOR_BINS = 32
SUBPIXEL = 4  # cv2 drawing with 2^4 fractional steps
TRAIL_FRAMES = 16
VIDEO_MAX_TRACKS = 400  # more trails than this are clutter in a video (the still shows them all)
TRAIL_ALPHAS = (1.0, 0.65, 0.4, 0.2)  # brightness of the newest to oldest quarter of a trail
VIDEO_MAX_WIDTH = 640


@functools.lru_cache(maxsize=1)
def _palette() -> np.ndarray:
    return (matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, COLOR_BINS))[:, :3] * 255).astype(np.uint8)


def _thickness(image: np.ndarray) -> int:
    return max(1, round(min(image.shape[:2]) / 300))


def _segments(xy: np.ndarray, visible: np.ndarray, frames: range) -> tuple[np.ndarray, np.ndarray]:
    """Visible segments k -> k+1 for k in ``frames``: endpoints ``[S, 2, 2]`` and their frame k ``[S]``."""
    ks = np.asarray(list(frames), dtype=np.int64)
    ks = ks[ks + 1 < len(xy)]
    both = visible[ks] & visible[ks + 1]  # [len(ks), N]
    k_idx, n_idx = np.nonzero(both)
    return np.stack([xy[ks[k_idx], n_idx], xy[ks[k_idx] + 1, n_idx]], axis=1), ks[k_idx]


def _draw_segments(
    image: np.ndarray, segments: np.ndarray, frame_of: np.ndarray, total: int, thickness: int, dim: float = 1.0, smooth: bool = True
) -> None:
    """Segments coloured by their frame's time; ``dim`` < 1 darkens them (older trail parts).

    ``smooth=False`` skips anti-aliasing: four times faster, fine for video frames.
    """
    palette = _palette()
    bins = np.minimum(frame_of * COLOR_BINS // max(total - 1, 1), COLOR_BINS - 1)
    fixed = np.round(segments * (1 << SUBPIXEL)).astype(np.int32)
    for b in np.unique(bins):
        lines = list(fixed[bins == b].reshape(-1, 2, 1, 2))
        cv2.polylines(image, lines, False, tuple(int(c * dim) for c in palette[b]), thickness, cv2.LINE_AA if smooth else cv2.LINE_8, SUBPIXEL)


def _dots(image: np.ndarray, points: np.ndarray, colour: tuple, diameter: int) -> None:
    """Round dots at ``points [M, 2]`` in one call (zero-length lines with round caps)."""
    if len(points):
        fixed = np.round(points * (1 << SUBPIXEL)).astype(np.int32)
        cv2.polylines(image, list(np.repeat(fixed[:, None, None, :], 2, axis=1)), False, colour, diameter, cv2.LINE_AA, SUBPIXEL)


def draw_tracks(image: np.ndarray, xy: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """``image`` with every track ``xy [T, N, 2]`` drawn where ``visible [T, N]``."""
    out = np.ascontiguousarray(image.copy())
    thickness = _thickness(out)
    segments, frame_of = _segments(xy, visible, range(len(xy)))
    _draw_segments(out, segments, frame_of, len(xy), thickness)
    starts = []
    for n in range(xy.shape[1]):
        seen = np.nonzero(visible[:, n])[0]
        if len(seen):
            starts.append(xy[seen[0], n])
            _arrow_head(out, xy[seen, n], thickness)
    _dots(out, np.asarray(starts).reshape(-1, 2), (0, 0, 0), 4 * thickness + 4)  # a black ring...
    _dots(out, np.asarray(starts).reshape(-1, 2), (255, 255, 255), 4 * thickness + 2)  # ...around a white dot
    return out


def _arrow_head(image: np.ndarray, path: np.ndarray, thickness: int) -> None:
    """A filled triangle at the path's end, pointing along its last few visible steps."""
    tip, back = path[-1], path[max(0, len(path) - 4)]
    length = np.linalg.norm(tip - back)
    if length <= thickness:
        return
    direction = (tip - back) / length
    normal = np.array([-direction[1], direction[0]])
    size = 4 * thickness + 3
    triangle = np.array([tip, tip - size * direction + 0.6 * size * normal, tip - size * direction - 0.6 * size * normal])
    colour = tuple(int(c) for c in _palette()[-1])
    cv2.fillPoly(image, [np.round(triangle * (1 << SUBPIXEL)).astype(np.int32)], colour, cv2.LINE_AA, SUBPIXEL)


def save_image(image: np.ndarray, path: Path) -> Path:
    with atomic_file(path) as tmp:
        Image.fromarray(image).save(tmp, format=path.suffix.lstrip(".").upper().replace("JPG", "JPEG"))
    return path


def background_frames(field: TraceField, placement: Placement, clip_times: np.ndarray, scale: float) -> Callable[[int], np.ndarray]:
    """For output frame k, the network frame nearest in time, warped to the (scaled) placed image.

    Nearest by the time the network placed each frame (``field.times``), the time at which that frame's
    pixels sit on their curves: the trails are those curves at ``clip_times``, so they then lie on the
    picture. The times the frames were given (``time_steps``) differ by the network's timing error."""
    size = (_even(placement.width * scale), _even(placement.height * scale))
    placed = field.times.numpy()
    nearest = [int(np.argmin(np.abs(placed - t))) for t in clip_times]
    images = field.images.numpy()
    return lambda k: warp(field.transform, placement, images[nearest[k]], size=size)


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def overlay_video(field: TraceField, placement: Placement, xy: np.ndarray, visible: np.ndarray, clip_times: np.ndarray, fps: float, path: Path) -> Path:
    """An mp4 (gif for a .gif path) of the field's frames with trails up to each frame, fading with age.

    ``xy`` ``[T, N, 2]``: pixel-centre coordinates of the placed image.
    """
    scale = min(1.0, VIDEO_MAX_WIDTH / placement.width)
    return write_trail_video(path, background_frames(field, placement, clip_times, scale), xy, visible, fps, scale)


def write_trail_video(path: Path, backgrounds: Callable[[int], np.ndarray], xy: np.ndarray, visible: np.ndarray, fps: float, scale: float = 1.0) -> Path:
    """Frames from ``backgrounds(k)`` with each track's trail drawn up to frame k (``xy`` in unscaled pixels)."""
    shown = np.unique(np.round(np.linspace(0, xy.shape[1] - 1, min(xy.shape[1], VIDEO_MAX_TRACKS))).astype(int))
    xy_scaled, visible = (xy[:, shown] + 0.5) * scale - 0.5, visible[:, shown]
    total = len(xy)
    with atomic_file(path) as tmp:
        options = (
            {"fps": fps, "codec": "libx264", "quality": 7, "macro_block_size": 1, "ffmpeg_params": ["-preset", "veryfast"]}
            if path.suffix == ".mp4"
            else {"duration": 1000 / fps, "loop": 0}
        )
        with iio.get_writer(tmp, format="FFMPEG" if path.suffix == ".mp4" else "GIF", **options) as writer:
            for k in range(total):
                writer.append_data(_video_frame(backgrounds(k), xy_scaled, visible, k, total))
    return path


def write_video(path: Path, frames: np.ndarray, fps: float) -> Path:
    """Plain frames ``[F, H, W, 3]`` as an mp4, atomically."""
    with atomic_file(path) as tmp:
        iio.mimwrite(tmp, list(frames), format="FFMPEG", fps=fps, codec="libx264", quality=8, macro_block_size=1)
    return path


def _video_frame(background: np.ndarray, xy: np.ndarray, visible: np.ndarray, k: int, total: int) -> np.ndarray:
    """The trail of the last TRAIL_FRAMES frames, older parts thinner and darker, and a dot per current point."""
    frame = background.copy()
    thickness = _thickness(background)
    quarter = max(TRAIL_FRAMES // len(TRAIL_ALPHAS), 1)
    for age in reversed(range(len(TRAIL_ALPHAS))):  # oldest first, newest drawn on top
        first, last = max(0, k - (age + 1) * quarter), k - age * quarter
        if last > first:
            segments, frame_of = _segments(xy, visible, range(first, last))
            _draw_segments(frame, segments, frame_of, total, max(1, thickness - age // 2), 0.4 + 0.6 * TRAIL_ALPHAS[age], smooth=False)
    _dots(frame, xy[k][visible[k]], (255, 255, 255), 2 * thickness + 2)
    return frame
