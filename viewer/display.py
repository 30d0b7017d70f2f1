"""Everything the viewer draws, built in one place and redrawn from the :class:`ViewerState`.

The layers (:mod:`viewer.layers`): the point clouds, the trajectories, the camera
frustums, and what the side panel shows (the frame picture, the time line, the picks, the
colour bar). :meth:`Display.redraw` maps each part of the state that can change to the
redraw it needs; the viewer runs those on its update worker, one at a time.
"""

from __future__ import annotations

import numpy as np
import viser

from viewer.layers.frustums import FrustumLayer, PixelCallback
from viewer.layers.panels import FramePanel, PanelOutputs, picks_text, show_legend, status_text
from viewer.layers.points import PointsLayer
from viewer.layers.trajectories import TrajectoryLayer
from viewer.scene import Scene
from viewer.state import ViewerState
from viewer.trajectories import Trajectories


class Display:
    def __init__(self, server: viser.ViserServer, scene: Scene, state: ViewerState, times: np.ndarray,
                 outputs: PanelOutputs, on_pixel: PixelCallback) -> None:
        """``times`` is the trajectories' time grid; ``on_pixel(frame, x, y)`` gets clicks on a frustum's image."""
        self.scene, self.state, self.outputs = scene, state, outputs
        self.points = PointsLayer(server, scene, state)
        self.trajectories = TrajectoryLayer(server, state, times)
        self.frustums = FrustumLayer(server, scene, on_pixel)
        self.panel = FramePanel(server.gui, outputs, scene, state)
        self.panel.show(self.points.shown_frame)

    def redraw(self, aspect: str) -> None:
        """Redraw what depends on ``aspect`` of the state: time, filter, background, sizes, visibility, trails, frustums, picks."""
        if aspect == "time":
            self.redraw_time()
        elif aspect == "filter":
            self.points.update_filter()
        elif aspect == "background":
            self.points.update_background()
        elif aspect == "sizes":
            self.points.update_sizes()
        elif aspect == "visibility":
            self.points.update_visibility()
        elif aspect == "trails":
            self.trajectories.update_time()
        elif aspect == "frustums":  # shown or hidden, or just built
            self.frustums.set_visible(self.state.show_frustums)
            self.frustums.highlight(self.points.shown_frame)
        elif aspect == "picks":
            self.panel.picks_changed()
            self.outputs.picks.content = picks_text(self.state.picks_now())
        else:
            raise ValueError(f"nothing to redraw for {aspect!r}")

    def redraw_time(self) -> None:
        frame = self.points.update_time()
        self.trajectories.update_time()
        self.frustums.highlight(frame)
        self.panel.show(frame)
        self.outputs.status.content = status_text(self.scene, self.state.t, frame)

    def show_trajectories(self, trajectories: Trajectories) -> None:
        self.trajectories.show(trajectories)
        show_legend(self.outputs.legend, trajectories.legend if len(trajectories) else None)
