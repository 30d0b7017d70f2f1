"""What the side panel shows (the controls only lay it out): the frame on screen with its
mask and picks, the time line, the list of picks and the trajectories' colour bar.

Each frame's picture is its own image element, made on the frame's first visit and then
only shown or hidden (a :class:`FrameCache`), so playback and frame steps send no picture
twice; new picks redraw them. A clip of more than :data:`PANEL_IMAGES` frames keeps one
picture, redrawn when the frame changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import viser

from viewer.layers.frame_cache import FrameCache
from viewer.scene import Scene
from viewer.state import Pick, ViewerState
from viewer.trajectories import Legend, apply_colormap

MASK_TINT = np.array([255, 80, 40], dtype=np.float32)
MASK_ALPHA = 0.45
PICK_COLOR = (40, 220, 255)
COLORBAR_SIZE = (320, 58)  # width, height in pixels
PANEL_IMAGES = 64  # frames up to which each gets a picture of its own (a few tens of kB each in every browser)


def frame_with_mask(scene: Scene, frame: int, picks: Sequence[Pick] = ()) -> np.ndarray:
    """The frame, its foreground tinted, picked pixels ringed: uint8 ``[H, W, 3]``."""
    import cv2

    image = scene.field.images[frame].numpy().astype(np.float32)
    mask = scene.field.masks[frame].numpy().astype(bool)
    image[mask] = (1 - MASK_ALPHA) * image[mask] + MASK_ALPHA * MASK_TINT
    out = np.ascontiguousarray(image.round().astype(np.uint8))
    width = scene.field.hw[1]
    radius = max(2, width // 120)
    for pick in picks:
        if pick.frame != frame:
            continue
        for flat in pick.pixels[:: max(1, len(pick.pixels) // 64)]:
            cv2.circle(out, (int(flat % width), int(flat // width)), radius, PICK_COLOR, thickness=max(1, radius // 2), lineType=cv2.LINE_AA)
    return out


def colorbar(legend: Legend) -> np.ndarray:
    """A labelled horizontal colour bar: the colormap's gradient, its range and what it means (uint8 RGB)."""
    import cv2

    width, height = COLORBAR_SIZE
    out = np.full((height, width, 3), 255, np.uint8)
    margin, top, bar = 12, 22, 18
    gradient = apply_colormap(np.linspace(legend.vmin, legend.vmax, width - 2 * margin), legend.cmap, legend.vmin, legend.vmax)
    out[top : top + bar, margin : width - margin] = gradient[None]
    text = dict(fontFace=cv2.FONT_HERSHEY_SIMPLEX, fontScale=0.4, color=(30, 30, 30), thickness=1, lineType=cv2.LINE_AA)
    cv2.putText(out, legend.label, (margin, 15), **text)
    for value, anchor in ((legend.vmin, 0.0), ((legend.vmin + legend.vmax) / 2, 0.5), (legend.vmax, 1.0)):
        label = f"{value:.3g}"
        (w, _), _ = cv2.getTextSize(label, text["fontFace"], text["fontScale"], text["thickness"])
        x = int(margin + anchor * (width - 2 * margin) - anchor * w)
        cv2.putText(out, label, (x, top + bar + 14), **text)
    return out


@dataclass
class PanelOutputs:
    """The panel elements that show state rather than take it, laid out by the controls."""

    status: viser.GuiMarkdownHandle  # time and frame
    frame_folder: viser.GuiFolderHandle  # where the frame pictures go, first in the folder
    frame_order: float
    picks: viser.GuiMarkdownHandle
    legend: viser.GuiImageHandle


class FramePanel:
    def __init__(self, gui: viser.GuiApi, outputs: PanelOutputs, scene: Scene, state: ViewerState) -> None:
        self.gui, self.outputs, self.scene, self.state = gui, outputs, scene, state
        self.images = FrameCache(self._add)
        self.cached = scene.num_frames <= PANEL_IMAGES
        self.single: Optional[viser.GuiImageHandle] = None  # the one picture of a longer clip
        self.frame: Optional[int] = None

    def _add(self, frame: int) -> viser.GuiImageHandle:
        image = frame_with_mask(self.scene, frame, self.state.picks_now())
        with self.outputs.frame_folder:
            return self.gui.add_image(image, label=_label(frame), format="jpeg", jpeg_quality=85, order=self.outputs.frame_order)

    def show(self, frame: int) -> None:
        if self.cached:
            self.images.show(frame)
        elif self.single is None:
            self.single = self._add(frame)
        elif frame != self.frame:
            self.single.image = frame_with_mask(self.scene, frame, self.state.picks_now())
            self.single.label = _label(frame)
        self.frame = frame

    def picks_changed(self) -> None:
        """Redraw the picture on screen (with the new picks) and forget the others."""
        self.images.clear()
        frame, self.frame = self.frame, None
        if frame is not None:
            self.show(frame)


def _label(frame: int) -> str:
    return f"frame {frame} (foreground tinted)"


def status_text(scene: Scene, t: float, frame: int) -> str:
    return f"**t = {t:.3f}** · frame {frame} of {scene.num_frames} (time {scene.times[frame]:.3f})"


def picks_text(picks: Sequence[Pick]) -> str:
    return "No picks." if not picks else "\n".join(f"- {p.label} ({len(p.pixels)} px)" for p in picks)


def show_legend(handle: viser.GuiImageHandle, legend: Optional[Legend]) -> None:
    """The colour bar of ``legend``, or nothing."""
    if legend is None:
        handle.visible = False
        return
    handle.image = colorbar(legend)
    handle.visible = True
