"""Trajectory curves: one line-segment node per grid interval plus a head node to the exact time.

Building sends every segment once. After that, a time step only flips the visibility and
thickness of the interval nodes whose state changed (a few bytes each) and replaces the
small head node: trails grow to the current time and thin out with age.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import viser

from viewer.scene import Scene
from viewer.state import ViewerState
from viewer.trajectories import Trajectories, build_trajectories, trail_style

THICKNESS_UNITS = "screen"  # pixels on screen: visible at any zoom and scene scale


class TrajectoryLayer:
    def __init__(self, server: viser.ViserServer, scene: Scene, state: ViewerState, times: np.ndarray) -> None:
        self.server, self.scene, self.state, self.times = server, scene, state, times
        self.trajectories: Optional[Trajectories] = None
        self.nodes: list[viser.LineSegmentsHandle] = []
        self.head: Optional[viser.LineSegmentsHandle] = None
        self._shown = np.zeros(0, bool)
        self._thickness = np.zeros(0)

    def build(self, seeds: Sequence[tuple[int, np.ndarray]]) -> Trajectories:
        """Replace the drawn trajectories with those of ``seeds`` ``[(frame, flat pixels)]``."""
        trajectories = build_trajectories(self.scene, seeds, self.times, self.state.color_by, self.state.colormap)
        self.clear()
        self.trajectories = trajectories
        if not len(trajectories):
            return trajectories
        with self.server.atomic():
            for k in range(len(self.times) - 1):
                points, colors = trajectories.interval_segments(k)
                self.nodes.append(self.server.scene.add_line_segments(
                    f"/trajectories/t{k:04d}", points=points, colors=colors, thickness=self.state.width,
                    thickness_units=THICKNESS_UNITS, visible=False,
                ))
            points, colors = trajectories.head_segments(self.state.t)
            self.head = self.server.scene.add_line_segments(
                "/trajectories/head", points=points, colors=colors, thickness=self.state.width, thickness_units=THICKNESS_UNITS,
            )
        self._shown = np.zeros(len(self.nodes), bool)
        self._thickness = np.zeros(len(self.nodes))
        self.update_time()
        return trajectories

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
        changed = np.flatnonzero((shown != self._shown) | (shown & ~np.isclose(thickness, self._thickness)))
        points, colors = self.trajectories.head_segments(self.state.t)
        with self.server.atomic():
            for k in changed:
                self.nodes[k].visible = bool(shown[k])
                if shown[k]:
                    self.nodes[k].thickness = float(thickness[k])
            self.head.points = points
            self.head.colors = colors
            self.head.thickness = self.state.width
            self.head.visible = self.state.show_trajectories
        self._shown, self._thickness = shown, np.where(shown, thickness, 0.0)
