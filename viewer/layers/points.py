"""The point clouds: the static background (one node) and the moving foreground at time t (one node).

Sizes are set in pixels at the median depth and converted with the scene's pixel
footprint, so the same slider value looks the same on any scene scale. A cloud's points and
colours change together inside ``server.atomic()`` so a browser never pairs new points with
old colours.
"""

from __future__ import annotations

import viser

from viewer.scene import PointSet, Scene
from viewer.state import ViewerState

POINT_SHAPE = "rounded"


class PointsLayer:
    def __init__(self, server: viser.ViserServer, scene: Scene, state: ViewerState) -> None:
        self.server, self.scene, self.state = server, scene, state
        background = scene.background_kept(state.bg_drop)
        foreground = scene.foreground_at(state.t, state.fg_drop)
        self.background = self._add("/background", background, state.bg_size)
        self.foreground = self._add("/foreground", foreground, state.fg_size)
        self.shown_frame = foreground.frame

    def _add(self, name: str, points: PointSet, size_px: float) -> viser.PointCloudHandle:
        return self.server.scene.add_point_cloud(
            name, points=points.points, colors=points.colors, point_size=self._world(size_px),
            point_shape=POINT_SHAPE, precision="float16",
        )

    def _world(self, size_px: float) -> float:
        return float(size_px) * self.scene.scale.footprint

    def _replace(self, node: viser.PointCloudHandle, points: PointSet) -> None:
        with self.server.atomic():
            node.points = points.points
            node.colors = points.colors

    def update_time(self) -> int:
        """Show the foreground at the state's time; returns the frame it came from."""
        foreground = self.scene.foreground_at(self.state.t, self.state.fg_drop)
        self._replace(self.foreground, foreground)
        self.shown_frame = foreground.frame
        return foreground.frame

    def update_background(self) -> None:
        self._replace(self.background, self.scene.background_kept(self.state.bg_drop))

    def update_sizes(self) -> None:
        self.foreground.point_size = self._world(self.state.fg_size)
        self.background.point_size = self._world(self.state.bg_size)

    def update_visibility(self) -> None:
        self.background.visible = self.state.show_background
