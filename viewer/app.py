"""``tracefield view``: start the viser server for one field and keep the scene in step with the GUI.

Start-up does the minimum before the viewer is *ready* (field loaded, point clouds sent,
controls up): the camera frustums and the default trajectories follow on the update
worker, with progress notifications. Every GUI change writes the :class:`ViewerState` and
submits its redraw to :class:`LatestWork`, so bursts of slider moves cost one redraw with
the latest values.

Over SSH: the server binds 127.0.0.1 unless told otherwise, the log gives the URL and the
``ssh -N -L`` line to run on the laptop, and viser's share button (a public tunnel) is hidden.
"""

from __future__ import annotations

import getpass
import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import viser

from tracefield.errors import TracefieldError
from tracefield.field import TraceField
from tracefield.scene_folder import SceneFolder
from viewer.controls import Controls, notifying
from viewer.layers.frustums import FrustumLayer
from viewer.layers.panels import colorbar
from viewer.layers.points import PointsLayer
from viewer.layers.trajectories import TrajectoryLayer
from viewer.picking import mask_regions, motion_clusters, object_pixels
from viewer.scene import DEFAULT_BACKGROUND_BUDGET, Scene
from viewer.state import DEFAULT_POINT_SIZE_PX, DEFAULT_TRAJECTORY_FRAMES, Pick, ViewerState
from viewer.trajectories import foreground_seeds, parse_frames, spread, time_grid
from viewer.updates import LatestWork

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
PICK_TRAJECTORIES_PER_OBJECT = 300


@dataclass
class ViewerOptions:
    host: str = "127.0.0.1"
    port: int = 8020
    t_step: float = 0.025  # time grid of trajectories and of playback steps
    ds: int = 1  # pixel stride
    max_points: int = DEFAULT_BACKGROUND_BUDGET  # background point budget
    trajectory_frames: str = DEFAULT_TRAJECTORY_FRAMES
    frustums: bool = True


def open_field(source: Path) -> tuple[TraceField, SceneFolder]:
    """The field of a scene folder, field.safetensors or output.pt, and the scene folder outputs go to."""
    field = TraceField.load(source)
    folder = SceneFolder.of(source)
    if field.num_frames < 1:
        raise TracefieldError(f"{source}: the field has no frames; re-run `tracefield infer`")
    return field, folder


class Viewer:
    """One running viewer: the server, the scene, its layers and the GUI (see the module docstring)."""

    def __init__(self, field: TraceField, folder: SceneFolder, options: ViewerOptions) -> None:
        self.options, self.folder = options, folder
        size = DEFAULT_POINT_SIZE_PX * options.ds  # points sit ds pixels apart
        self.state = ViewerState(fg_size=size, bg_size=size, trajectory_frames=options.trajectory_frames)
        self.times = time_grid(options.t_step)
        self.work = LatestWork(on_error=lambda key, exc: self.notify_all("Update failed", f"{key}: {exc}", error=True))
        self.scene = Scene.build(field, ds=options.ds, background_budget=options.max_points)
        self.server = _start_server(options.host, options.port)
        self._configure_scene()
        self.points = PointsLayer(self.server, self.scene, self.state)
        self.trajectories = TrajectoryLayer(self.server, self.scene, self.state, self.times)
        self.frustums = FrustumLayer(self.server, self.scene, self.clicked_pixel)
        self._labels: Optional[tuple[tuple, np.ndarray]] = None  # (frame, source, clusters) -> object labels
        self.controls = Controls(self)
        self._stop = threading.Event()
        threading.Thread(target=self._playback, name="viewer-playback", daemon=True).start()
        self.work.submit("frustums", self._build_frustums)
        self.work.submit("trajectories", self.rebuild_trajectories)

    # ------------------------------------------------------------------ set-up
    def _configure_scene(self) -> None:
        scale = self.scene.scale
        self.server.scene.set_up_direction((0.0, -1.0, 0.0))  # the field's y points down
        self.server.scene.world_axes.visible = False
        camera = self.server.initial_camera
        # Behind the first camera, raised and to the left: the scene as filmed, in depth, with the
        # camera frustums below the line of sight rather than across it.
        camera.position = (float(scale.centre[0] - 0.25 * scale.depth), float(scale.centre[1] - 0.3 * scale.depth), -0.3 * scale.depth)
        camera.look_at = tuple(float(v) for v in scale.centre)
        camera.near = 0.01 * scale.depth
        camera.far = 1000.0 * scale.depth

    def _build_frustums(self) -> None:
        if not self.options.frustums:
            return
        with notifying(self.server.get_clients().values(), "Cameras", "estimating the camera of each frame ...") as update:
            count = self.frustums.build(progress=lambda done, total: update(f"frame {done} of {total}"))
        self.frustums.highlight(self.points.shown_frame)
        log.info("camera frustums: %d of %d frames", count, self.scene.num_frames)

    # ------------------------------------------------------------------ redraws (worker thread)
    def redraw_time(self) -> None:
        frame = self.points.update_time()
        self.trajectories.update_time()
        self.frustums.highlight(frame)
        self.controls.panel.show(frame, self.state.picks)
        self.controls.show_time(frame)

    def rebuild_trajectories(self) -> None:
        """Trajectories of the chosen frames' moving pixels plus every pick."""
        try:
            frames = parse_frames(self.state.trajectory_frames, self.scene.num_frames)
        except ValueError as exc:
            self.notify_all("Trajectories", f"frames {self.state.trajectory_frames!r}: {exc}; use e.g. 0,mid,last", error=True)
            return
        seeds = foreground_seeds(self.scene, frames, self.state.per_frame)
        with self.state.lock:
            seeds += [(pick.frame, spread(pick.pixels, PICK_TRAJECTORIES_PER_OBJECT)) for pick in self.state.picks]
        with notifying(self.server.get_clients().values(), "Trajectories", f"building {sum(len(p) for _, p in seeds)} curves ..."):
            built = self.trajectories.build(seeds)
        if not len(built) and (frames or self.state.picks):
            self.notify_all("Trajectories", "no moving pixels on the chosen frames; pick pixels or choose other frames")
        self.controls.show_legend(colorbar(built.legend) if built.legend is not None and len(built) else None)
        log.info("trajectories: %d curves from frames %s and %d picks", len(built), frames, len(self.state.picks))

    # ------------------------------------------------------------------ actions (GUI threads)
    def set_time(self, t: float) -> None:
        self.state.t = float(np.clip(t, 0.0, 1.0))
        self.work.submit("time", self.redraw_time)

    def pick_pixel(self, frame: int, x: float, y: float, whole_object: bool = False) -> None:
        """Add the trajectory of pixel (x, y) of ``frame`` (network pixels), or of the object under it."""
        flat = self.scene.frame_pixel(frame, x, y)
        if flat is None:
            self.notify_all("Pick", f"({x:.0f}, {y:.0f}) is outside frame {frame}", error=True)
            return
        if whole_object:
            labels = self.object_labels(frame)
            label = int(labels.ravel()[flat])
            if label == 0:
                self.notify_all("Pick", "no object under that pixel; picked the pixel alone")
            else:
                self.add_pick(Pick(frame, object_pixels(labels, label), f"object {label} of frame {frame}"))
                return
        self.add_pick(Pick(frame, np.array([flat]), f"pixel ({x:.0f}, {y:.0f}) of frame {frame}"))

    def clicked_pixel(self, frame: int, x: float, y: float) -> None:
        """A click on a frustum's image: the pixel, or its object, as the GUI's click mode says."""
        self.pick_pixel(frame, x, y, whole_object=self.controls.click_mode.value == "whole object")

    def object_labels(self, frame: int) -> np.ndarray:
        """Objects on ``frame``: mask regions or motion clusters, as chosen in the GUI.

        The last answer is kept: listing the objects and then adding one (or clicking) asks
        for the same labels, and k-means need not run twice.
        """
        key = (frame, self.controls.object_source, self.controls.cluster_count)
        if self._labels is None or self._labels[0] != key:
            if key[1] == "motion clusters":
                labels = motion_clusters(self.scene, frame, key[2])
            else:
                labels = mask_regions(self.scene, frame)
            self._labels = (key, labels)
        return self._labels[1]

    def add_pick(self, pick: Pick) -> None:
        self.state.add_pick(pick)
        log.info("picked %s (%d pixels)", pick.label, len(pick.pixels))
        self._picks_changed()

    def clear_picks(self) -> None:
        self.state.clear_picks()
        self._picks_changed()

    def _picks_changed(self) -> None:
        self.work.submit("trajectories", self.rebuild_trajectories)
        self.work.submit("panel", lambda: self.controls.panel.show(self.points.shown_frame, self.state.picks, force=True))
        self.controls.show_picks()

    def notify_all(self, title: str, body: str, error: bool = False) -> None:
        (log.warning if error else log.info)("%s: %s", title, body)
        for client in self.server.get_clients().values():
            client.add_notification(title, body, color="red" if error else None, auto_close_seconds=8.0)

    # ------------------------------------------------------------------ playback
    def _playback(self) -> None:
        while not self._stop.is_set():
            if not self.state.playing:
                time.sleep(0.05)
                continue
            t = self.state.t + self.options.t_step
            if t > 1.0 + 1e-9:
                if self.state.loop:
                    t = 0.0
                else:
                    t, self.state.playing = 1.0, False
            self.controls.time.value = round(t, 4)  # its callback redraws
            time.sleep(1.0 / max(self.state.fps, 1))

    def url(self) -> str:
        host = "localhost" if self.options.host in LOCAL_HOSTS or self.options.host == "0.0.0.0" else self.options.host
        return f"http://{host}:{self.server.get_port()}"

    def stop(self) -> None:
        self._stop.set()
        self.work.stop()
        self.server.stop()


def _start_server(host: str, port: int) -> viser.ViserServer:
    if host not in LOCAL_HOSTS:
        log.warning("binding %s: viser has no authentication, anyone who can reach this port sees the scene; "
                    "prefer the default 127.0.0.1 with an SSH tunnel", host)
    server = viser.ViserServer(host=host, port=port, verbose=False)
    server.gui.configure_theme(show_share_button=False, control_width="medium", show_logo=False)
    server.gui.main_panel.dock_right()
    server.gui.set_panel_label("tracefield")
    if port and server.get_port() != port:  # port 0 asks the system for any free port
        log.warning("port %d was busy; the viewer took port %d", port, server.get_port())
    return server


def ssh_hint(port: int) -> str:
    """The command a laptop user runs to reach this server through SSH."""
    return f"ssh -N -L {port}:localhost:{port} {getpass.getuser()}@{socket.gethostname()}"


def serve(source: Path, options: ViewerOptions) -> None:
    """Open ``source`` and serve it until interrupted (Ctrl-C)."""
    started = time.perf_counter()
    field, folder = open_field(source)
    viewer = Viewer(field, folder, options)
    log.info("ready in %.1f s: open %s", time.perf_counter() - started, viewer.url())
    log.info("from another machine, tunnel first:  %s   then open http://localhost:%d", ssh_hint(viewer.server.get_port()), viewer.server.get_port())
    try:
        while True:
            time.sleep(3600)
    finally:
        viewer.stop()
