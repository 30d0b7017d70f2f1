"""What the user has chosen: time, filters, sizes, trajectory settings, picks (no viser calls).

The GUI writes these values and the layers read them; keeping them in one plain object is
what lets the slow work (rebuilding point clouds, trajectories) run on a worker thread
from the latest values, whatever arrived in between.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

DEFAULT_DROP_PERCENT = 10.0  # confidence filter: drop the bottom 10%, as the release does
DEFAULT_POINT_SIZE_PX = 1.5  # point size in pixels at the median depth (scene-scale free)
DEFAULT_TRAIL_WIDTH_PX = 2.0  # trajectory thickness, screen pixels
DEFAULT_FPS = 10
DEFAULT_TRAJECTORY_FRAMES = "0,mid,last"
DEFAULT_PER_FRAME = 1000  # trajectories per chosen frame


@dataclass
class Pick:
    """Picked trajectories: pixels of one frame (a clicked pixel or a whole object)."""

    frame: int
    pixels: np.ndarray  # flat network-frame pixel indices
    label: str


@dataclass
class ViewerState:
    t: float = 0.0
    playing: bool = False
    fps: int = DEFAULT_FPS
    loop: bool = True
    fg_drop: float = DEFAULT_DROP_PERCENT
    bg_drop: float = DEFAULT_DROP_PERCENT
    fg_size: float = DEFAULT_POINT_SIZE_PX
    bg_size: float = DEFAULT_POINT_SIZE_PX
    show_background: bool = True
    show_trajectories: bool = True
    trajectory_frames: str = DEFAULT_TRAJECTORY_FRAMES
    per_frame: int = DEFAULT_PER_FRAME
    color_by: str = "time"
    colormap: str = "turbo"
    trail: float = 1.0  # how far back trails reach, in clip time (1 = the whole past)
    width: float = DEFAULT_TRAIL_WIDTH_PX
    picks: list[Pick] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def add_pick(self, pick: Pick) -> None:
        with self.lock:
            self.picks.append(pick)

    def clear_picks(self) -> None:
        with self.lock:
            self.picks.clear()
