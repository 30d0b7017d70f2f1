"""The GUI panel: every control writes the ViewerState and asks the viewer to redraw.

Folders: Playback, Points, Trajectories, Frame & picking, Cameras, Export, Share. Every
callback is guarded: a failure becomes a notification in that browser and a log line,
never an exception in viser's threads.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

import numpy as np
import viser

from tracefield.errors import TracefieldError
from tracefield.export import FORMATS
from viewer.layers.panels import FramePanel
from viewer.picking import object_pixels
from viewer.state import Pick
from viewer.trajectories import COLOR_MODES

if TYPE_CHECKING:
    from viewer.app import Viewer

log = logging.getLogger(__name__)

COLORMAPS = ("turbo", "viridis", "plasma", "magma", "cividis", "hsv", "coolwarm", "Spectral")
EXPORT_FORMATS = tuple(FORMATS)
OBJECT_SOURCES = ("mask regions", "motion clusters")
CLICK_MODES = ("pixel", "whole object")


def guarded(callback: Callable[[viser.GuiEvent], Any]) -> Callable[[viser.GuiEvent], None]:
    """Run a GUI callback; report any failure to the browser that caused it instead of raising."""

    @functools.wraps(callback)
    def run(event: viser.GuiEvent) -> None:
        try:
            callback(event)
        except TracefieldError as exc:
            _tell(event, "Not possible", str(exc))
        except Exception as exc:  # a client action must never take the server down
            log.exception("GUI action failed")
            _tell(event, "Something went wrong", f"{type(exc).__name__}: {exc}")

    return run


@contextlib.contextmanager
def notifying(clients: Iterable[viser.ClientHandle], title: str, body: str) -> Iterator[Callable[[str], None]]:
    """A spinning notification in each browser while the block runs; yields a function that updates its text."""
    notes = [client.add_notification(title, body, loading=True, with_close_button=False) for client in clients]

    def update(text: str) -> None:
        for note in notes:
            note.body = text

    try:
        yield update
    finally:
        for note in notes:
            note.remove()


def _tell(event: viser.GuiEvent, title: str, body: str) -> None:
    log.warning("%s: %s", title, body)
    if event.client is not None:
        event.client.add_notification(title, body, color="red", auto_close_seconds=10.0)


class Controls:
    def __init__(self, viewer: "Viewer") -> None:
        self.viewer = viewer
        self.gui = viewer.server.gui
        self.status = self.gui.add_markdown(self._status_text(viewer.points.shown_frame))
        self._playback()
        self._points()
        self._trajectories()
        self._frame_and_picking()
        self._cameras()
        self._export()
        self._share()

    # ------------------------------------------------------------------ folders
    def _playback(self) -> None:
        v, state = self.viewer, self.viewer.state
        with self.gui.add_folder("Playback"):
            self.time = self.gui.add_slider("Time", min=0.0, max=1.0, step=0.001, initial_value=state.t)
            self.play = self.gui.add_button("Play")
            self.pause = self.gui.add_button("Pause", visible=False)
            self.fps = self.gui.add_slider("FPS", min=1, max=60, step=1, initial_value=state.fps)
            self.loop = self.gui.add_checkbox("Loop", initial_value=state.loop)
        self.time.on_update(guarded(lambda _: v.set_time(self.time.value)))
        self.play.on_click(guarded(lambda _: self._set_playing(True)))
        self.pause.on_click(guarded(lambda _: self._set_playing(False)))
        self.fps.on_update(guarded(lambda _: setattr(state, "fps", int(self.fps.value))))
        self.loop.on_update(guarded(lambda _: setattr(state, "loop", bool(self.loop.value))))

    def _set_playing(self, playing: bool) -> None:
        if playing and self.viewer.state.t >= 1.0 and not self.viewer.state.loop:
            self.time.value = 0.0
        self.viewer.state.playing = playing
        self.play.visible, self.pause.visible = not playing, playing

    def _points(self) -> None:
        v, state = self.viewer, self.viewer.state
        with self.gui.add_folder("Points"):
            fg_drop = self.gui.add_slider("Moving: drop lowest conf. %", min=0, max=99, step=1, initial_value=state.fg_drop)
            bg_drop = self.gui.add_slider("Static: drop lowest conf. %", min=0, max=99, step=1, initial_value=state.bg_drop)
            fg_size = self.gui.add_slider("Moving point size (px)", min=0.25, max=10.0, step=0.25, initial_value=state.fg_size)
            bg_size = self.gui.add_slider("Static point size (px)", min=0.25, max=10.0, step=0.25, initial_value=state.bg_size)
            show_bg = self.gui.add_checkbox("Show static background", initial_value=state.show_background)

        def on_fg_drop(_: viser.GuiEvent) -> None:
            state.fg_drop = float(fg_drop.value)
            v.work.submit("time", v.redraw_time)  # the moving points are redrawn with the filter

        def on_bg_drop(_: viser.GuiEvent) -> None:
            state.bg_drop = float(bg_drop.value)
            v.work.submit("background", v.points.update_background)

        def on_size(_: viser.GuiEvent) -> None:
            state.fg_size, state.bg_size = float(fg_size.value), float(bg_size.value)
            v.work.submit("sizes", v.points.update_sizes)

        def on_show(_: viser.GuiEvent) -> None:
            state.show_background = bool(show_bg.value)
            v.points.update_visibility()

        fg_drop.on_update(guarded(on_fg_drop))
        bg_drop.on_update(guarded(on_bg_drop))
        for handle in (fg_size, bg_size):
            handle.on_update(guarded(on_size))
        show_bg.on_update(guarded(on_show))

    def _trajectories(self) -> None:
        v, state = self.viewer, self.viewer.state
        with self.gui.add_folder("Trajectories"):
            self.show_trajectories = self.gui.add_checkbox("Show trajectories", initial_value=state.show_trajectories)
            frames = self.gui.add_text("Frames (e.g. 0,mid,last)", initial_value=state.trajectory_frames)
            per_frame = self.gui.add_slider("Curves per frame", min=50, max=5000, step=50, initial_value=state.per_frame)
            color_by = self.gui.add_dropdown("Colour by", COLOR_MODES, initial_value=state.color_by)
            colormap = self.gui.add_dropdown("Colormap", COLORMAPS, initial_value=state.colormap)
            trail = self.gui.add_slider("Trail length (clip time)", min=0.02, max=1.0, step=0.01, initial_value=state.trail)
            width = self.gui.add_slider("Width (px)", min=0.5, max=8.0, step=0.25, initial_value=state.width)
            self.build = self.gui.add_button("Build / refresh")
            self.legend = self.gui.add_image(np.full((8, 8, 3), 255, np.uint8), label="colour", visible=False)

        def on_build(_: viser.GuiEvent) -> None:
            state.trajectory_frames, state.per_frame = frames.value, int(per_frame.value)
            state.color_by, state.colormap = color_by.value, colormap.value
            v.work.submit("trajectories", v.rebuild_trajectories)

        def on_style(_: viser.GuiEvent) -> None:
            state.trail, state.width = float(trail.value), float(width.value)
            state.show_trajectories = bool(self.show_trajectories.value)
            v.work.submit("time", v.redraw_time)

        self.build.on_click(guarded(on_build))
        for handle in (color_by, colormap):
            handle.on_update(guarded(on_build))
        for handle in (trail, width, self.show_trajectories):
            handle.on_update(guarded(on_style))

    def _frame_and_picking(self) -> None:
        v = self.viewer
        with self.gui.add_folder("Frame & picking"):
            self.panel = FramePanel(v.server, v.scene)
            self.gui.add_markdown("Click a camera frustum's image to pick, or type a pixel of the video:")
            self.click_mode = self.gui.add_dropdown("A click picks", CLICK_MODES, initial_value="pixel")
            pixel = self.gui.add_text("Pixel x,y (video pixels)", initial_value="")
            add_pixel = self.gui.add_button("Add pixel on this frame")
            self.object_source_handle = self.gui.add_dropdown("Objects from", OBJECT_SOURCES, initial_value=OBJECT_SOURCES[0])
            self.clusters = self.gui.add_slider("Motion clusters", min=2, max=12, step=1, initial_value=4)
            self.objects = self.gui.add_dropdown("Object", ("(list objects first)",))
            list_objects = self.gui.add_button("List objects on this frame")
            add_object = self.gui.add_button("Add object")
            clear = self.gui.add_button("Clear picks", color="red")
            self.picks = self.gui.add_markdown("No picks.")

        def on_add_pixel(_: viser.GuiEvent) -> None:
            x, y = _parse_xy(pixel.value)
            mx, my = v.scene.field.transform.to_model(np.array([[x, y]], dtype=np.float64))[0]
            v.pick_pixel(v.points.shown_frame, float(mx), float(my), whole_object=self.click_mode.value == "whole object")

        def on_list(_: viser.GuiEvent) -> None:
            labels = v.object_labels(v.points.shown_frame)
            areas = np.bincount(labels.ravel())[1:]
            options = tuple(f"{i + 1}: {area} px" for i, area in enumerate(areas) if area) or ("(no objects on this frame)",)
            self.objects.options = options
            self.objects.value = options[0]

        def on_add_object(_: viser.GuiEvent) -> None:
            match = re.match(r"(\d+):", self.objects.value)
            if match is None:
                raise TracefieldError("list the objects on this frame first, then choose one")
            frame = v.points.shown_frame
            label = int(match.group(1))
            labels = v.object_labels(frame)
            v.add_pick(_object_pick(labels, label, frame, self.object_source))

        add_pixel.on_click(guarded(on_add_pixel))
        list_objects.on_click(guarded(on_list))
        add_object.on_click(guarded(on_add_object))
        clear.on_click(guarded(lambda _: v.clear_picks()))

    def _cameras(self) -> None:
        with self.gui.add_folder("Cameras", expand_by_default=False):
            show = self.gui.add_checkbox("Show camera frustums", initial_value=True)
        show.on_update(guarded(lambda _: self.viewer.frustums.set_visible(bool(show.value))))

    def _export(self) -> None:
        with self.gui.add_folder("Export", expand_by_default=False):
            self.gui.add_markdown("Tracks of the picks on the frame shown (or of every moving object when nothing is picked); "
                                  "each track starts exactly at its pick.")
            fmt = self.gui.add_dropdown("Format", EXPORT_FORMATS, initial_value="ati")
            prompt = self.gui.add_text("Prompt", initial_value="")
            captions = self.gui.add_text("Captions", initial_value="", hint="WorldCanvas: 1=the dog runs left; 2=...")
            edited = self.gui.add_text("Edited first frame", initial_value="", hint="path of a restyled first frame (motion transfer)")
            upload = self.gui.add_upload_button("Upload edited first frame", mime_type="image/*")
            button = self.gui.add_button("Export and download")

        def on_upload(event: viser.GuiEvent) -> None:
            from tracefield.export.draw import save_image
            from tracefield.export.images import read_edited_frame

            h0, w0 = self.viewer.scene.field.transform.original_hw
            image = read_edited_frame(upload.value.content, (w0, h0), what="Upload")
            edited.value = str(save_image(image, self.viewer.folder.exports / f"{self.viewer.folder.name}_edited_first_frame.png"))

        def on_export(event: viser.GuiEvent) -> None:
            from tracefield.export.formats.worldcanvas import parse_captions
            from viewer.share import export_picks

            chosen = parse_captions([c for c in re.split(r"[;\n]", captions.value) if c.strip()], what="Captions")
            image = Path(edited.value.strip()) if edited.value.strip() else None
            with notifying(_clients(event), "Export", f"writing {fmt.value} conditions ..."):
                name, archive = export_picks(self.viewer, fmt.value, prompt.value or None, chosen, image)
            if event.client is not None:
                event.client.send_file_download(name, archive, save_immediately=True)
                event.client.add_notification("Export", f"{name} sent; the files are also in {self.viewer.folder.exports}", auto_close_seconds=8.0)

        upload.on_upload(guarded(on_upload))
        button.on_click(guarded(on_export))

    def _share(self) -> None:
        with self.gui.add_folder("Share", expand_by_default=False):
            self.gui.add_markdown("Plays the timeline once and saves a `.viser` recording plus a self-contained HTML page.")
            button = self.gui.add_button("Record")

        def on_record(event: viser.GuiEvent) -> None:
            from viewer.share import record

            with notifying(_clients(event), "Recording", "playing the timeline ..."):
                viser_path, html_path = record(self.viewer)
            if event.client is not None:
                event.client.send_file_download(html_path.name, html_path.read_bytes(), save_immediately=True)
                event.client.add_notification("Recording", f"saved {viser_path} and {html_path}", auto_close_seconds=10.0)

        button.on_click(guarded(on_record))

    # ------------------------------------------------------------------ read by the viewer
    @property
    def object_source(self) -> str:
        return str(self.object_source_handle.value)

    @property
    def cluster_count(self) -> int:
        return int(self.clusters.value)

    def show_time(self, frame: int) -> None:
        self.status.content = self._status_text(frame)

    def _status_text(self, frame: int) -> str:
        v = self.viewer
        return f"**t = {v.state.t:.3f}** · frame {frame} of {v.scene.num_frames} (time {v.scene.times[frame]:.3f})"

    def show_legend(self, image: Optional[np.ndarray]) -> None:
        if image is None:
            self.legend.visible = False
            return
        self.legend.image = image
        self.legend.visible = True

    def show_picks(self) -> None:
        picks = list(self.viewer.state.picks)
        self.picks.content = "No picks." if not picks else "\n".join(f"- {p.label} ({len(p.pixels)} px)" for p in picks)


def _clients(event: viser.GuiEvent) -> list[viser.ClientHandle]:
    return [event.client] if event.client is not None else []


def _parse_xy(text: str) -> tuple[float, float]:
    parts = re.split(r"[,\s]+", text.strip())
    try:
        x, y = (float(p) for p in parts)
    except ValueError:
        raise TracefieldError(f"pixel {text!r}: type two numbers, x,y in video pixels (e.g. 320,180)") from None
    return x, y


def _object_pick(labels: np.ndarray, label: int, frame: int, source: str) -> Pick:
    pixels = object_pixels(labels, label)
    if not len(pixels):
        raise TracefieldError(f"object {label} is not on frame {frame}; list the objects again")
    return Pick(frame, pixels, f"object {label} ({source}) of frame {frame}")
