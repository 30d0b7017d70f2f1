"""The point clouds: the static background (one node) and the moving foreground at time t.

The foreground at a frame's own time (where playback and frame stepping land) is one
node per frame, kept in a :class:`FrameCache`: coming back to a frame only shows its node
again. A time between frames is drawn in one more node, refilled at each step; so is every
time when the moving points of all frames exceed :data:`FRAME_CACHE_POINTS` (long clips:
every browser would hold them all). Changing the confidence filter empties the cache.

Sizes are set in pixels at the median depth and converted with the scene's pixel
footprint, so the same slider value looks the same on any scene scale. A cloud's points and
colours change together inside ``server.atomic()`` so a browser never pairs new points with
old colours, and one node is hidden in the same batch as the next is shown.
"""

from __future__ import annotations

from typing import Optional

import viser

from viewer.layers.frame_cache import FrameCache
from viewer.scene import PointSet, Scene
from viewer.state import ViewerState
from viewer.trajectories import TIME_SNAP

POINT_SHAPE = "rounded"
FRAME_CACHE_POINTS = 2_000_000  # moving points of all frames up to which frames get nodes of their own (9 bytes each)


class PointsLayer:
    def __init__(self, server: viser.ViserServer, scene: Scene, state: ViewerState) -> None:
        self.server, self.scene, self.state = server, scene, state
        self.background = self._add("/background", scene.background_kept(state.bg_drop), state.bg_size)
        self.frames = FrameCache(self._add_frame)
        self.cached = sum(len(fg.pixels) for fg in scene.foreground) <= FRAME_CACHE_POINTS
        self.between: Optional[viser.PointCloudHandle] = None  # the foreground at a time between frames
        self.shown_frame = scene.nearest_frame(state.t)
        self.update_time()

    def _add(self, name: str, points: PointSet, size_px: float) -> viser.PointCloudHandle:
        return self.server.scene.add_point_cloud(
            name, points=points.points, colors=points.colors, point_size=self._world(size_px),
            point_shape=POINT_SHAPE, precision="float16",
        )

    def _add_frame(self, frame: int) -> viser.PointCloudHandle:
        points = self.scene.foreground_at(float(self.scene.times[frame]), self.state.fg_drop)
        return self._add(f"/foreground/frame{frame:04d}", points, self.state.fg_size)

    def _world(self, size_px: float) -> float:
        return float(size_px) * self.scene.scale.footprint

    def update_time(self) -> int:
        """Show the foreground at the state's time; returns the frame it came from."""
        t = self.state.t
        frame = self.scene.nearest_frame(t)
        with self.server.atomic():
            if self.cached and abs(float(self.scene.times[frame]) - t) <= TIME_SNAP:
                self.frames.show(frame)
                if self.between is not None and self.between.visible:
                    self.between.visible = False
            else:
                self.frames.show(None)
                self._show_between(self.scene.foreground_at(t, self.state.fg_drop))
        self.shown_frame = frame
        return frame

    def _show_between(self, points: PointSet) -> None:
        if self.between is None:
            self.between = self._add("/foreground/between", points, self.state.fg_size)
            return
        self.between.points = points.points
        self.between.colors = points.colors
        self.between.visible = True

    def shown_foreground(self) -> viser.PointCloudHandle:
        """The foreground node on screen now."""
        if self.frames.shown is not None:
            return self.frames.node(self.frames.shown)
        return self.between

    def update_filter(self) -> None:
        """The foreground confidence filter changed: forget the per-frame nodes and redraw."""
        with self.server.atomic():
            self.frames.clear()
            self.update_time()

    def update_background(self) -> None:
        points = self.scene.background_kept(self.state.bg_drop)
        with self.server.atomic():
            self.background.points = points.points
            self.background.colors = points.colors

    def update_sizes(self) -> None:
        size = self._world(self.state.fg_size)
        with self.server.atomic():
            for node in self.frames.nodes() + ([self.between] if self.between is not None else []):
                node.point_size = size
            self.background.point_size = self._world(self.state.bg_size)

    def update_visibility(self) -> None:
        self.background.visible = self.state.show_background
