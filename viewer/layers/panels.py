"""Pictures in the side panel: the current frame with its mask and picks, and the colour bar.

The frame image is re-sent only when the frame on screen changes (JPEG, a few tens of kB).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import viser

from viewer.scene import Scene
from viewer.state import Pick
from viewer.trajectories import Legend, apply_colormap

MASK_TINT = np.array([255, 80, 40], dtype=np.float32)
MASK_ALPHA = 0.45
PICK_COLOR = (40, 220, 255)
COLORBAR_SIZE = (320, 58)  # width, height in pixels


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


class FramePanel:
    def __init__(self, server: viser.ViserServer, scene: Scene) -> None:
        self.scene = scene
        self.frame: Optional[int] = None
        self.image = server.gui.add_image(frame_with_mask(scene, 0), label="frame 0 (foreground tinted)", format="jpeg", jpeg_quality=85)
        self.frame = 0

    def show(self, frame: int, picks: Sequence[Pick] = (), force: bool = False) -> None:
        if frame == self.frame and not force:
            return
        self.image.image = frame_with_mask(self.scene, frame, picks)
        self.image.label = f"frame {frame} (foreground tinted)"
        self.frame = frame
