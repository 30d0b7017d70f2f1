"""What the user has chosen: every choice of the panel, the picks and the time (no viser calls).

The GUI writes these values (after :mod:`viewer.inputs` has checked them) and everything
else reads them: the layers, the picker, the playback thread, exports and recordings.
Nothing reads a GUI handle back. Keeping the choices in one plain object is also what lets
the slow work (rebuilding point clouds, trajectories) run on a worker thread from the
latest values, whatever arrived in between.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from tracefield.errors import TracefieldError

DEFAULT_DROP_PERCENT = 10.0  # confidence filter: drop the bottom 10%, as the release does
DEFAULT_POINT_SIZE_PX = 1.5  # point size in pixels at the median depth (scene-scale free)
DEFAULT_TRAIL_WIDTH_PX = 2.0  # trajectory thickness, screen pixels
DEFAULT_FPS = 10
MAX_FPS = 60  # the FPS slider's end; playback never runs faster
DEFAULT_TRAJECTORY_FRAMES = "0,mid,last"
DEFAULT_PER_FRAME = 1000  # trajectories per chosen frame
MAX_PICKS = 64  # picks kept at once: each holds up to a frame of pixels and adds curves


@dataclass
class Pick:
    """Picked trajectories: pixels of one frame (a clicked pixel or a whole object)."""

    frame: int
    pixels: np.ndarray  # flat network-frame pixel indices
    label: str


@dataclass
class ViewerState:
    # time and playback
    t: float = 0.0
    playing: bool = False
    fps: int = DEFAULT_FPS
    loop: bool = True
    # points
    fg_drop: float = DEFAULT_DROP_PERCENT
    bg_drop: float = DEFAULT_DROP_PERCENT
    fg_size: float = DEFAULT_POINT_SIZE_PX
    bg_size: float = DEFAULT_POINT_SIZE_PX
    show_background: bool = True
    # trajectories: the frames whose moving pixels get curves (parsed from frames_text at Build)
    show_trajectories: bool = True
    frames_text: str = DEFAULT_TRAJECTORY_FRAMES  # as typed, not yet built
    frames: tuple[int, ...] = ()
    per_frame: int = DEFAULT_PER_FRAME
    color_by: str = "time"
    colormap: str = "turbo"
    trail: float = 1.0  # how far back trails reach, in clip time (1 = the whole past)
    width: float = DEFAULT_TRAIL_WIDTH_PX
    # picking
    click_mode: str = "pixel"  # or "whole object"
    object_source: str = "mask regions"  # or "motion clusters"
    cluster_count: int = 4
    pixel_text: str = ""  # "x,y" in video pixels, as typed
    object_choice: str = ""  # an entry of the listed objects, "N: area px"
    picks: list[Pick] = field(default_factory=list)
    # cameras, export
    show_frustums: bool = True
    export_format: str = "ati"
    prompt: str = ""
    captions: str = ""  # WorldCanvas captions as typed, "1=...; 2=..."
    edited_frame: str = ""  # path of an edited first frame (motion transfer), or ""
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def add_pick(self, pick: Pick) -> None:
        with self.lock:
            if len(self.picks) >= MAX_PICKS:
                raise TracefieldError(f"{MAX_PICKS} picks already; clear the picks before adding more")
            self.picks.append(pick)

    def clear_picks(self) -> None:
        with self.lock:
            self.picks.clear()

    def picks_now(self) -> list[Pick]:
        """A copy of the picks, safe to iterate while the GUI adds more."""
        with self.lock:
            return list(self.picks)
