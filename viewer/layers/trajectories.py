"""Trajectory curves: one line-segment node per grid interval plus a head node to the exact time.

Showing new trajectories sends every segment once. After that, a time step only flips the
visibility and thickness of the interval nodes whose state changed (a few bytes each):
trails grow to the current time and thin out with age. Between grid times a small head
node reaches from the last grid time to the exact time; on a grid time (every frame time
is one) the head is hidden, so playback and frame steps send no points at all.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import viser

from viewer.state import ViewerState
from viewer.trajectories import Trajectories, trail_style

THICKNESS_UNITS = "screen"  # pixels on screen: visible at any zoom and scene scale


class TrajectoryLayer:
    def __init__(self, server: viser.ViserServer, state: ViewerState, times: np.ndarray) -> None:
        self.server, self.state, self.times = server, state, times
        self.trajectories: Optional[Trajectories] = None
        self.nodes: list[viser.LineSegmentsHandle] = []
        self.head: Optional[viser.LineSegmentsHandle] = None
        self._shown = np.zeros(0, bool)
        self._thickness = np.zeros(0)
        self._head_shown = False

    def show(self, trajectories: Trajectories) -> None:
        """Replace the drawn trajectories with ``trajectories`` (built on the grid of this layer's times)."""
        self.clear()
        self.trajectories = trajectories
        if not len(trajectories):
            return
        with self.server.atomic():
            for k in range(len(self.times) - 1):
                points, colors = trajectories.interval_segments(k)
                self.nodes.append(self.server.scene.add_line_segments(
                    f"/trajectories/t{k:04d}", points=points, colors=colors, thickness=self.state.width,
                    thickness_units=THICKNESS_UNITS, visible=False,
                ))
            self.head = self.server.scene.add_line_segments(
                "/trajectories/head", points=np.zeros((0, 2, 3), np.float32), colors=np.zeros((0, 2, 3), np.uint8),
                thickness=self.state.width, thickness_units=THICKNESS_UNITS, visible=False,
            )
        self._shown = np.zeros(len(self.nodes), bool)
        self._thickness = np.zeros(len(self.nodes))
        self._head_shown = False
        self.update_time()

    def clear(self) -> None:
        with self.server.atomic():
            for node in self.nodes:
                node.remove()
            if self.head is not None:
                self.head.remove()
        self.nodes, self.head, self.trajectories = [], None, None

    def update_time(self) -> None:
        """Show the trails up to the state's time, thinner with age; move the head to that time."""
        if self.trajectories is None or not self.nodes:
            return
        shown, thickness = trail_style(self.times, self.state.t, self.state.trail, self.state.width)
        shown &= self.state.show_trajectories
        changed = np.flatnonzero((shown != self._shown) | (shown & (thickness != self._thickness)))
        points, colors = self.trajectories.head_segments(self.state.t)
        head = bool(len(points)) and self.state.show_trajectories
        with self.server.atomic():
            for k in changed:
                self.nodes[k].visible = bool(shown[k])
                if shown[k]:
                    self.nodes[k].thickness = float(thickness[k])
            if head:
                self.head.points = points
                self.head.colors = colors
                self.head.thickness = self.state.width
            if head != self._head_shown:
                self.head.visible = head
        self._shown, self._thickness, self._head_shown = shown, np.where(shown, thickness, 0.0), head
