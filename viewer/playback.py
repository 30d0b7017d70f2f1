"""Playing the clip: the time goes from one frame's time to the next at the state's FPS.

Landing on frame times is what makes playback light: each step shows nodes made on the
frame's first visit (see :mod:`viewer.layers.frame_cache`). The rate never exceeds
:data:`~viewer.state.MAX_FPS`, whatever the state says, and the pause between steps
counts from the start of the last one, so a slow redraw does not slow playback further.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Optional

import numpy as np

from viewer.state import MAX_FPS, ViewerState
from viewer.trajectories import TIME_SNAP

IDLE_POLL = 0.05  # seconds between looks at the play button while paused


def step_frame(times: np.ndarray, t: float, direction: int) -> Optional[float]:
    """The time of the next (``direction`` 1) or previous (-1) frame after ``t``, or None past the end."""
    if direction > 0:
        later = times[times > t + TIME_SNAP]
        return float(later.min()) if len(later) else None
    earlier = times[times < t - TIME_SNAP]
    return float(earlier.max()) if len(earlier) else None


class Playback:
    """The thread that plays the clip while ``state.playing``: ``set_time`` moves the time slider,
    ``set_playing(False)`` ends playback at the end of the clip without loop."""

    def __init__(self, state: ViewerState, frame_times: np.ndarray, set_time: Callable[[float], None],
                 set_playing: Callable[[bool], None]) -> None:
        self.state, self.times = state, np.sort(np.asarray(frame_times, np.float64))
        self.set_time, self.set_playing = set_time, set_playing
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="viewer-playback", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.state.playing:
                self._stop.wait(IDLE_POLL)
                continue
            started = time.perf_counter()
            t = step_frame(self.times, self.state.t, 1)
            if t is None:
                if self.state.loop:
                    t = float(self.times[0])
                else:
                    self.set_playing(False)
                    continue
            self.set_time(t)
            period = 1.0 / min(max(self.state.fps, 1), MAX_FPS)
            self._stop.wait(max(period - (time.perf_counter() - started), 0.0))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
