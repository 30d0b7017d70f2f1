"""The GUI panel: lays out the controls, puts each behind the input gate with its rule, and
turns what arrives into the :class:`ViewerState` and a redraw.

Folders: Playback, Points, Trajectories, Frame & picking, Cameras, Export, Share. A
callback writes the state and names what changed (``redraw("time")``, ...); it never reads
another control. Values arrive checked (:mod:`viewer.inputs`); texts that mean something
(the trajectory frames, a pixel) are parsed when they are used, and a text that does not
parse is refused there, with a notification naming it, and the box is set back to the text
last used.

Order: viser runs plain callbacks on a pool of threads, in any order, so a click on Build
right after typing could read the text from before. These callbacks are coroutines
instead, which viser runs on its event loop in the order the messages came; each only
writes the state or hands work on, in microseconds. Picking (which may run k-means) goes to
one actions thread, in order, with at most :data:`MAX_WAITING` actions waiting; an export
and a recording each run on a thread of their own, one at a time. Every callback is guarded.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any, Callable, Coroutine

import numpy as np
import viser

from tracefield.export import FORMATS
from tracefield.scene_folder import SceneFolder
from viewer.export import export_picks
from viewer.inputs import Choice, Click, Inputs, Number, Text, Toggle
from viewer.layers.panels import PanelOutputs, picks_text, status_text
from viewer.notices import guarded, notifying, tell
from viewer.picking import Picker
from viewer.playback import step_frame
from viewer.scene import Scene
from viewer.state import MAX_FPS, Pick, ViewerState
from viewer.trajectories import COLOR_MODES, MAX_FRAMES_TEXT, parse_frames
from viewer.updates import LatestWork

log = logging.getLogger(__name__)

COLORMAPS = ("turbo", "viridis", "plasma", "magma", "cividis", "hsv", "coolwarm", "Spectral")
EXPORT_FORMATS = tuple(FORMATS)
OBJECT_SOURCES = ("mask regions", "motion clusters")
CLICK_MODES = ("pixel", "whole object")
NO_OBJECTS = ("(list objects first)",)
MAX_CURVES = 12_000  # trajectories of the chosen frames at once (picks add theirs): about 15 MB to each browser
MAX_PIXEL_TEXT = 40
MAX_PROMPT = 2_000
MAX_PATH = 4_096
MAX_WAITING = 32  # picking actions waiting for the actions thread


class Controls:
    def __init__(self, server: viser.ViserServer, state: ViewerState, scene: Scene, folder: SceneFolder,
                 redraw: Callable[[str], None], picker: Picker, record: Callable[[], tuple[Any, Any]]) -> None:
        """``redraw(aspect)`` asks for the redraw of a changed part of the state; ``record()`` makes a recording."""
        self.server, self.gui, self.state, self.scene, self.folder = server, server.gui, state, scene, folder
        self.redraw, self.picker, self.record = redraw, picker, record
        self.inputs = Inputs(server)
        self._actions = LatestWork(name="viewer-actions")
        self._busy = {"Export": threading.Lock(), "Recording": threading.Lock()}
        status = self.gui.add_markdown(status_text(scene, state.t, scene.nearest_frame(state.t)))
        if scene.field.caveat:  # e.g. the demo's small network, which traces motion weakly
            self.gui.add_markdown(f"**Note:** this field was {scene.field.caveat}.")
        self._playback()
        self._points()
        legend = self._trajectories()
        frame_folder, frame_order, picks = self._frame_and_picking()
        self._cameras()
        self._export()
        self._share()
        self.outputs = PanelOutputs(status=status, frame_folder=frame_folder, frame_order=frame_order, picks=picks, legend=legend)

    def _add(self, handle: Any, rule: Any, on_value: Callable[[Any], None]) -> Any:
        """Put ``handle`` behind the gate; ``on_value(value)`` runs with each value it lets through, in order."""
        self.inputs.add(handle, rule)
        handle.on_update(_in_order(lambda event: on_value(event.target.value)))
        return handle

    def _button(self, handle: viser.GuiButtonHandle, on_click: Callable[[viser.GuiEvent], None]) -> viser.GuiButtonHandle:
        """Put a button behind the gate; ``on_click(event)`` runs in order with the other callbacks."""
        self.inputs.add(handle, Click())
        handle.on_click(_in_order(on_click))
        return handle

    def _later(self, event: viser.GuiEvent, action: Callable[[], None]) -> None:
        """Run ``action`` on the actions thread after those waiting; refused when too many wait."""
        if self._actions.waiting() >= MAX_WAITING:
            if self.inputs.may_tell(event.client_id, "busy"):
                tell(event.client, "Busy", f"{MAX_WAITING} actions are waiting already; try again in a moment")
            return
        self._actions.queue(lambda: guarded(lambda _: action())(event))

    def _setter(self, name: str, aspect: str) -> Callable[[Any], None]:
        """A callback that sets the state's ``name`` and asks for the redraw of ``aspect``."""

        def on_value(value: Any) -> None:
            setattr(self.state, name, value)
            self.redraw(aspect)

        return on_value

    # ------------------------------------------------------------------ folders
    def _playback(self) -> None:
        state, gui = self.state, self.gui
        with gui.add_folder("Playback"):
            self.time = gui.add_slider("Time", min=0.0, max=1.0, step=0.001, initial_value=state.t)
            self.play = gui.add_button("Play")
            self.pause = gui.add_button("Pause", visible=False)
            previous = gui.add_button("Previous frame")
            following = gui.add_button("Next frame")
            self.fps = gui.add_slider("FPS", min=1, max=MAX_FPS, step=1, initial_value=state.fps)
            self.loop = gui.add_checkbox("Loop", initial_value=state.loop)

        def on_time(t: float) -> None:
            if t != state.t:  # not the echo of set_time
                state.t = t
                self.redraw("time")

        def step(direction: int) -> None:
            t = step_frame(self.scene.times, state.t, direction)
            if t is not None:
                self.set_time(t)

        self._add(self.time, Number(0.0, 1.0), on_time)
        self._button(self.play, lambda _: self.set_playing(True))
        self._button(self.pause, lambda _: self.set_playing(False))
        self._button(previous, lambda _: step(-1))
        self._button(following, lambda _: step(1))
        self._add(self.fps, Number(1, MAX_FPS, integer=True), lambda v: setattr(state, "fps", v))
        self._add(self.loop, Toggle(), lambda v: setattr(state, "loop", v))

    def set_time(self, t: float) -> None:
        """Show the state at time ``t`` and move the time slider there (playback, frame steps)."""
        self.state.t = float(t)
        self.redraw("time")
        self.time.value = float(t)

    def set_playing(self, playing: bool) -> None:
        if playing and self.state.t >= float(self.scene.times.max()) and not self.state.loop:
            self.set_time(float(self.scene.times.min()))
        self.state.playing = playing
        self.play.visible, self.pause.visible = not playing, playing

    def _points(self) -> None:
        state, gui = self.state, self.gui
        with gui.add_folder("Points"):
            fg_drop = gui.add_slider("Moving: drop lowest conf. %", min=0, max=99, step=1, initial_value=state.fg_drop)
            bg_drop = gui.add_slider("Static: drop lowest conf. %", min=0, max=99, step=1, initial_value=state.bg_drop)
            fg_size = gui.add_slider("Moving point size (px)", min=0.25, max=10.0, step=0.25, initial_value=state.fg_size)
            bg_size = gui.add_slider("Static point size (px)", min=0.25, max=10.0, step=0.25, initial_value=state.bg_size)
            show_bg = gui.add_checkbox("Show static background", initial_value=state.show_background)

        setter = self._setter
        self._add(fg_drop, Number(0.0, 99.0), setter("fg_drop", "filter"))
        self._add(bg_drop, Number(0.0, 99.0), setter("bg_drop", "background"))
        self._add(fg_size, Number(0.25, 10.0), setter("fg_size", "sizes"))
        self._add(bg_size, Number(0.25, 10.0), setter("bg_size", "sizes"))
        self._add(show_bg, Toggle(), setter("show_background", "visibility"))

    def _trajectories(self) -> viser.GuiImageHandle:
        state, gui, setter = self.state, self.gui, self._setter
        with gui.add_folder("Trajectories"):
            show = gui.add_checkbox("Show trajectories", initial_value=state.show_trajectories)
            frames = gui.add_text("Frames (e.g. 0,mid,last)", initial_value=state.frames_text)
            per_frame = gui.add_slider("Curves per frame", min=50, max=5000, step=50, initial_value=state.per_frame)
            color_by = gui.add_dropdown("Colour by", COLOR_MODES, initial_value=state.color_by)
            colormap = gui.add_dropdown("Colormap", COLORMAPS, initial_value=state.colormap)
            trail = gui.add_slider("Trail length (clip time)", min=0.02, max=1.0, step=0.01, initial_value=state.trail)
            width = gui.add_slider("Width (px)", min=0.5, max=8.0, step=0.25, initial_value=state.width)
            build = gui.add_button("Build / refresh")
            legend = gui.add_image(np.full((8, 8, 3), 255, np.uint8), label="colour", visible=False)

        def on_build(event: viser.GuiEvent) -> None:
            text = state.frames_text
            try:
                chosen = parse_frames(text, self.scene.num_frames)
            except ValueError as exc:
                self.inputs.refuse(event.client, frames, text, f"{exc}; type e.g. 0,mid,last")
                return
            curves = sum(min(state.per_frame, len(self.scene.foreground[f].pixels)) for f in chosen)
            if curves > MAX_CURVES:
                self.inputs.refuse(event.client, frames, text, f"would draw {curves} curves, more than {MAX_CURVES}; "
                                   "choose fewer frames or curves per frame")
                return
            self.inputs.accept(frames, text)
            state.frames = tuple(chosen)
            self.redraw("trajectories")

        self._add(show, Toggle(), setter("show_trajectories", "trails"))
        self._add(frames, Text(MAX_FRAMES_TEXT), lambda v: setattr(state, "frames_text", v))
        self._add(per_frame, Number(50, 5000, integer=True), lambda v: setattr(state, "per_frame", v))
        self._add(color_by, Choice(), setter("color_by", "trajectories"))
        self._add(colormap, Choice(), setter("colormap", "trajectories"))
        self._add(trail, Number(0.02, 1.0), setter("trail", "trails"))
        self._add(width, Number(0.5, 8.0), setter("width", "trails"))
        self._button(build, on_build)
        return legend

    def _frame_and_picking(self) -> tuple[viser.GuiFolderHandle, float, viser.GuiMarkdownHandle]:
        state, gui = self.state, self.gui
        with gui.add_folder("Frame & picking") as folder:
            hint = gui.add_markdown("Click a camera frustum's image to pick, or type a pixel of the video:")
            click_mode = gui.add_dropdown("A click picks", CLICK_MODES, initial_value=state.click_mode)
            pixel = gui.add_text("Pixel x,y (video pixels)", initial_value=state.pixel_text)
            add_pixel = gui.add_button("Add pixel on this frame")
            source = gui.add_dropdown("Objects from", OBJECT_SOURCES, initial_value=state.object_source)
            clusters = gui.add_slider("Motion clusters", min=2, max=12, step=1, initial_value=state.cluster_count)
            self.objects = gui.add_dropdown("Object", NO_OBJECTS)
            list_objects = gui.add_button("List objects on this frame")
            add_object = gui.add_button("Add object")
            clear = gui.add_button("Clear picks", color="red")
            picks = gui.add_markdown(picks_text(state.picks))

        def on_add_pixel(event: viser.GuiEvent) -> None:
            text, transform, frame = state.pixel_text, self.scene.field.transform, self._frame()
            try:
                x, y = parse_pixel(text, transform.original_hw)
                mx, my = transform.to_model(np.array([[x, y]], dtype=np.float64))[0]
                if self.scene.frame_pixel(frame, float(mx), float(my)) is None:
                    raise ValueError(f"is outside the frame the network saw ({x:.0f}, {y:.0f} in the video)")
            except ValueError as exc:
                self.inputs.refuse(event.client, pixel, text, str(exc))
                return
            self.inputs.accept(pixel, text)
            self._later(event, lambda: self._add_pick(self.picker.at(frame, float(mx), float(my))))

        def on_list(event: viser.GuiEvent) -> None:
            frame = self._frame()

            def list_objects() -> None:
                options = self.picker.objects(frame) or ("(no objects on this frame)",)
                self.objects.options = options
                self.objects.value = options[0]

            self._later(event, list_objects)

        def on_add_object(event: viser.GuiEvent) -> None:
            frame, entry = self._frame(), state.object_choice
            self._later(event, lambda: self._add_pick(self.picker.listed(frame, entry)))

        def on_clear(_: viser.GuiEvent) -> None:
            state.clear_picks()
            self.redraw("picks")

        self._add(click_mode, Choice(), lambda v: setattr(state, "click_mode", v))
        self._add(pixel, Text(MAX_PIXEL_TEXT), lambda v: setattr(state, "pixel_text", v))
        self._button(add_pixel, on_add_pixel)
        self._add(source, Choice(), lambda v: setattr(state, "object_source", v))
        self._add(clusters, Number(2, 12, integer=True), lambda v: setattr(state, "cluster_count", v))
        self._add(self.objects, Choice(), lambda v: setattr(state, "object_choice", v))
        self._button(list_objects, on_list)
        self._button(add_object, on_add_object)
        self._button(clear, on_clear)
        return folder, hint.order - 0.5, picks

    def _frame(self) -> int:
        """The frame on screen: the one nearest to the state's time."""
        return self.scene.nearest_frame(self.state.t)

    def _add_pick(self, pick: Pick) -> None:
        self.state.add_pick(pick)
        log.info("picked %s (%d pixels)", pick.label, len(pick.pixels))
        self.redraw("picks")

    def _cameras(self) -> None:
        with self.gui.add_folder("Cameras", expand_by_default=False):
            show = self.gui.add_checkbox("Show camera frustums", initial_value=self.state.show_frustums)
        self._add(show, Toggle(), self._setter("show_frustums", "frustums"))

    def _export(self) -> None:
        state, gui = self.state, self.gui
        with gui.add_folder("Export", expand_by_default=False):
            gui.add_markdown("Tracks of the picks on the frame shown (or of every moving object when nothing is picked); "
                             "each track starts exactly at its pick.")
            fmt = gui.add_dropdown("Format", EXPORT_FORMATS, initial_value=state.export_format)
            prompt = gui.add_text("Prompt", initial_value=state.prompt)
            captions = gui.add_text("Captions", initial_value=state.captions, hint="WorldCanvas: 1=the dog runs left; 2=...")
            edited = gui.add_text("Edited first frame", initial_value=state.edited_frame, hint="path of a restyled first frame (motion transfer)")
            upload = gui.add_upload_button("Upload edited first frame", mime_type="image/*")
            button = gui.add_button("Export and download")

        def on_upload(event: viser.GuiEvent) -> None:
            from tracefield.export.draw import save_image
            from tracefield.export.images import read_edited_frame

            h0, w0 = self.scene.field.transform.original_hw
            image = read_edited_frame(upload.value.content, (w0, h0), what="Upload")
            state.edited_frame = str(save_image(image, self.folder.exports / f"{self.folder.name}_edited_first_frame.png"))
            edited.value = state.edited_frame

        def on_export(event: viser.GuiEvent) -> None:
            from tracefield.export.formats.worldcanvas import parse_captions

            chosen = parse_captions([c for c in re.split(r"[;\n]", state.captions) if c.strip()], what="Captions")
            image = Path(state.edited_frame.strip()) if state.edited_frame.strip() else None
            picks, frame, fmt_now, prompt_now = state.picks_now(), self._frame(), state.export_format, state.prompt or None

            def export() -> None:
                with notifying(_clients(event), "Export", f"writing {fmt_now} conditions ..."):
                    name, archive = export_picks(self.scene.field, self.folder, picks, frame, fmt_now, prompt_now, chosen, image)
                if event.client is not None:
                    event.client.send_file_download(name, archive, save_immediately=True)
                tell(event.client, "Export", f"{name} sent; the files are also in {self.folder.exports}", error=False)

            self._one_at_a_time("Export", event, export)

        self._add(fmt, Choice(), lambda v: setattr(state, "export_format", v))
        self._add(prompt, Text(MAX_PROMPT), lambda v: setattr(state, "prompt", v))
        self._add(captions, Text(MAX_PROMPT), lambda v: setattr(state, "captions", v))
        self._add(edited, Text(MAX_PATH), lambda v: setattr(state, "edited_frame", v))
        upload.on_upload(guarded(on_upload))
        self._button(button, on_export)

    def _share(self) -> None:
        with self.gui.add_folder("Share", expand_by_default=False):
            self.gui.add_markdown("Plays the clip once and saves a `.viser` recording plus a self-contained HTML page.")
            button = self.gui.add_button("Record")

        def on_record(event: viser.GuiEvent) -> None:
            def record() -> None:
                with notifying(_clients(event), "Recording", "playing the clip ..."):
                    viser_path, html_path = self.record()
                if event.client is not None:
                    event.client.send_file_download(html_path.name, html_path.read_bytes(), save_immediately=True)
                tell(event.client, "Recording", f"saved {viser_path} ({viser_path.stat().st_size / 1e6:.1f} MB) and {html_path}",
                     error=False)

            self._one_at_a_time("Recording", event, record)

        self._button(button, on_record)

    def _one_at_a_time(self, title: str, event: viser.GuiEvent, action: Callable[[], None]) -> None:
        """Run ``action`` on a thread of its own unless one of its kind (``title``) still runs."""
        lock = self._busy[title]
        if not lock.acquire(blocking=False):
            tell(event.client, title, "one is already being made; wait for it to finish")
            return

        def run() -> None:
            try:
                guarded(lambda _: action())(event)
            finally:
                lock.release()

        threading.Thread(target=run, name=f"viewer-{title.lower()}", daemon=True).start()

    def wait_idle(self, timeout: float) -> bool:
        return self._actions.wait_idle(timeout)

    def stop(self) -> None:
        self._actions.stop()


def _in_order(callback: Callable[[viser.GuiEvent], None]) -> Callable[[viser.GuiEvent], Coroutine[Any, Any, None]]:
    """``callback`` as a coroutine, which viser runs on its event loop in message order (see the module docstring)."""
    run = guarded(callback)

    async def in_order(event: viser.GuiEvent) -> None:
        run(event)

    return in_order


def _clients(event: viser.GuiEvent) -> list[viser.ClientHandle]:
    return [event.client] if event.client is not None else []


def parse_pixel(text: str, hw: tuple[int, int]) -> tuple[float, float]:
    """``"x,y"`` (or ``"x y"``) in video pixels -> two finite numbers inside a video of ``hw``; ValueError says why not."""
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        x, y = (float(p) for p in parts)
    except ValueError:
        raise ValueError("is not two numbers; type x,y in video pixels (e.g. 320,180)") from None
    height, width = hw
    if not (0 <= x <= width - 1 and 0 <= y <= height - 1):  # also false for NaN
        raise ValueError(f"is outside the {width}x{height} video; type x,y in video pixels (e.g. 320,180)")
    return x, y
