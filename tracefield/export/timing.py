"""Retiming: the clip times at which a generator's frames sample the trajectories.

Curves are evaluated at these times directly (never snapped to an input frame), so any
frame count and rate works: ATI wants 121 frames at 24 fps, WorldCanvas and Wan-Move 81
at 16 fps. The first output frame is the first-frame image a generator starts from, so
``start`` defaults to the time of the frame the tracks are picked on (see
:mod:`tracefield.export.run`). Two mappings:

* fill (default): the chosen span of the clip, ``start`` to ``end`` (normalised clip time,
  0 = first traced frame, 1 = last), is stretched over all output frames;
* real time (``speed`` given): output second s shows clip second ``speed * s`` after
  ``start``, at the clip's own frame rate; past ``end`` the tracks hold still.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from tracefield.errors import TracefieldError
from tracefield.field import TraceField


@dataclass
class Timing:
    frames: int
    fps: float
    start: float = 0.0
    end: float = 1.0
    speed: Optional[float] = None  # None: fill the output with [start, end]
    source_fps: Optional[float] = None  # the clip's frame rate; defaults to the field's


def clip_times(timing: Timing, field: TraceField) -> np.ndarray:
    """Normalised clip time of each output frame, ``[frames]`` in [0, 1]."""
    if timing.frames < 2 or timing.fps <= 0:
        raise TracefieldError(f"--frames {timing.frames} --fps {timing.fps}: need at least 2 frames and a positive rate")
    if not 0 <= timing.start < timing.end <= 1:
        raise TracefieldError(f"--start {timing.start} --end {timing.end}: need 0 <= start < end <= 1 (clip fractions)")
    if timing.speed is None:
        return np.linspace(timing.start, timing.end, timing.frames)
    if timing.speed <= 0:
        raise TracefieldError(f"--speed {timing.speed}: must be positive (2 plays the motion twice as fast)")
    fps = timing.source_fps or field.frames.fps
    if not fps:
        raise TracefieldError(
            f"{field.frames.source or 'the field'}: the clip's frame rate is unknown (a folder of frames); "
            "pass --source-fps, or drop --speed to stretch the motion over the output"
        )
    indices = field.frames.indices or list(range(field.num_frames))
    clip_seconds = max(indices[-1] - indices[0], 1) / fps
    seconds = np.arange(timing.frames) / timing.fps * timing.speed
    return np.minimum(timing.start + seconds / clip_seconds, timing.end)
