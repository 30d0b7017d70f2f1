"""``tracefield view``: start the viser server for one field and wire the viewer's parts.

Start-up does the minimum before the viewer is *ready* (field loaded, point clouds sent,
controls up): the camera frustums and the default trajectories follow, with progress
notifications. The parts, each with narrow arguments: the :class:`ViewerState` (every
choice), the :class:`Scene` (what the field shows), the :class:`Controls` (the panel,
which writes the state and names what changed), the :class:`Display` (every layer, redrawn
from the state), the :class:`Picker` and the :class:`Playback` thread.

Two workers run the work the GUI asks for, each coalescing bursts to the latest request
(:class:`LatestWork`): ``work`` draws (time steps, filters, sizes, recordings), ``builds``
computes what takes longer (trajectory curves, camera poses) and hands the result to
``work`` to draw, so a slow build never holds up the time slider of any browser.

Over SSH: the server binds 127.0.0.1 unless told otherwise, the log gives the URL and the
``ssh -N -L`` line to run on the laptop, and viser's share button (a public tunnel) is hidden.
"""

from __future__ import annotations

import getpass
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import viser

from tracefield.errors import TracefieldError
from tracefield.field import TraceField
from tracefield.scene_folder import SceneFolder
from viewer.controls import Controls
from viewer.display import Display
from viewer.notices import notifying, tell_all
from viewer.picking import Picker
from viewer.playback import Playback
from viewer.scene import DEFAULT_BACKGROUND_BUDGET, Scene
from viewer.share import record
from viewer.state import DEFAULT_POINT_SIZE_PX, DEFAULT_TRAJECTORY_FRAMES, ViewerState
from viewer.trajectories import build_trajectories, foreground_seeds, parse_frames, spread, time_grid
from viewer.updates import LatestWork

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
PICK_TRAJECTORIES_PER_OBJECT = 300


@dataclass
class ViewerOptions:
    host: str = "127.0.0.1"
    port: int = 8020
    t_step: float = 0.025  # time grid of trajectories (frame times are always on it)
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
    """One running viewer: the server and its parts, wired (see the module docstring)."""

    def __init__(self, field: TraceField, folder: SceneFolder, options: ViewerOptions) -> None:
        self.options, self.folder = options, folder
        try:
            frames = parse_frames(options.trajectory_frames, field.num_frames)
        except ValueError as exc:
            raise TracefieldError(f"--trajectories {options.trajectory_frames!r} {exc}; e.g. 0,mid,last") from None
        size = DEFAULT_POINT_SIZE_PX * options.ds  # points sit ds pixels apart
        self.state = ViewerState(fg_size=size, bg_size=size, frames_text=options.trajectory_frames, frames=tuple(frames))
        self.scene = Scene.build(field, ds=options.ds, background_budget=options.max_points)
        self.times = time_grid(options.t_step, self.scene.times)
        self.server = _start_server(options.host, options.port)
        self._configure_scene()
        on_error = lambda key, exc: tell_all(self.server, "Update failed", f"{key}: {exc}", error=True)  # noqa: E731
        self.work = LatestWork(on_error)
        self.builds = LatestWork(on_error, name="viewer-builds")
        self.picker = Picker(self.scene, self.state)
        self.controls = Controls(self.server, self.state, self.scene, folder, self.redraw, self.picker, self.record)
        self.display = Display(self.server, self.scene, self.state, self.times, self.controls.outputs, self.clicked_pixel)
        self.playback = Playback(self.state, self.scene.times, self.controls.set_time, self.controls.set_playing)
        if options.frustums:
            self.builds.submit("frustums", self._build_frustums)
        self.builds.submit("trajectories", self._build_trajectories)

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

    # ------------------------------------------------------------------ work (called from the GUI's threads)
    def redraw(self, aspect: str) -> None:
        """A part of the state changed (see :meth:`Display.redraw`); trajectories and picks also rebuild curves."""
        if aspect in ("trajectories", "picks"):
            self.builds.submit("trajectories", self._build_trajectories)
        if aspect != "trajectories":
            self.work.submit(aspect, lambda: self.display.redraw(aspect))

    def record(self) -> tuple[Path, Path]:
        """Play the clip into a recording on the update worker (no redraw runs in between); returns its files."""
        self.wait_idle(timeout=60)
        return self.work.call(lambda: record(self.server, self.state, self.display.redraw_time, self.scene.times, self.folder))

    def clicked_pixel(self, frame: int, x: float, y: float) -> None:
        """A click on a frustum's image (network pixels): the pixel, or its object, as the click mode says."""
        pick = self.picker.at(frame, x, y)
        self.state.add_pick(pick)
        log.info("picked %s (%d pixels)", pick.label, len(pick.pixels))
        self.redraw("picks")

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until the actions, builds and update workers have nothing left to do (tests, benchmarks, recordings)."""
        deadline = time.perf_counter() + timeout
        lanes = (self.controls, self.builds, self.work)  # each hands work on to the next
        while time.perf_counter() < deadline:
            if all(lane.wait_idle(max(deadline - time.perf_counter(), 0)) for lane in lanes) and all(lane.wait_idle(0) for lane in lanes):
                return True
        return False

    # ------------------------------------------------------------------ builds (the builds worker)
    def _build_frustums(self) -> None:
        with notifying(self.server.get_clients().values(), "Cameras", "estimating the camera of each frame ...") as update:
            count = self.display.frustums.build(progress=lambda done, total: update(f"frame {done} of {total}"))
        self.redraw("frustums")
        log.info("camera frustums: %d of %d frames", count, self.scene.num_frames)

    def _build_trajectories(self) -> None:
        """Curves of the chosen frames' moving pixels plus every pick, drawn by the update worker."""
        state = self.state
        picks = state.picks_now()
        seeds = foreground_seeds(self.scene, state.frames, state.per_frame)
        seeds += [(pick.frame, spread(pick.pixels, PICK_TRAJECTORIES_PER_OBJECT)) for pick in picks]
        with notifying(self.server.get_clients().values(), "Trajectories", f"building {sum(len(p) for _, p in seeds)} curves ..."):
            built = build_trajectories(self.scene, seeds, self.times, state.color_by, state.colormap)
        if not len(built) and (state.frames or picks):
            tell_all(self.server, "Trajectories", "no moving pixels on the chosen frames; pick pixels or choose other frames")
        self.work.submit("trajectories", lambda: self.display.show_trajectories(built))
        log.info("trajectories: %d curves from frames %s and %d picks", len(built), list(state.frames), len(picks))

    def url(self) -> str:
        host = "localhost" if self.options.host in LOCAL_HOSTS or self.options.host == "0.0.0.0" else self.options.host
        return f"http://{host}:{self.server.get_port()}"

    def stop(self) -> None:
        self.playback.stop()
        self.controls.stop()
        self.builds.stop()
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
