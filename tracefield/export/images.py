"""Images in original pixels: the source frames themselves, or the network's frames warped back."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from tracefield.field import TraceField
from tracefield.io.frames import SceneSource, read_frames
from tracefield.io.preprocess import Preprocess

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _remap_grid(transform: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """For every original pixel, where it is in the network frame (float32 maps for cv2.remap)."""
    h0, w0 = transform.original_hw
    ys, xs = np.mgrid[0:h0, 0:w0]
    model = transform.to_model(np.stack([xs, ys], axis=-1).astype(np.float64)).astype(np.float32)
    return model[..., 0], model[..., 1]


def unwarp(field: TraceField, image: np.ndarray, nearest: bool = False) -> np.ndarray:
    """A network-frame image or mask -> original size and orientation (the cropped strip repeats the edge)."""
    map_x, map_y = _remap_grid(field.transform)
    src = image.astype(np.uint8) if image.dtype == bool else image
    out = cv2.remap(src, map_x, map_y, cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.astype(bool) if image.dtype == bool else out


def original_frame(field: TraceField, index: int) -> np.ndarray:
    """Frame ``index`` at its original size: re-read from the source if it is still there, else warped back."""
    info = field.frames
    frame = None
    if info.source and info.names and index < len(info.names):
        frame = _read_source_frame(info.source, info.names[index], info.indices[index])
    if frame is not None and frame.shape[:2] == field.transform.original_hw:
        return frame.copy()  # the cached frame stays untouched by drawing
    log.info("frame %d: source not available, using the network's frame warped back to %dx%d", index, *field.transform.original_hw[::-1])
    return unwarp(field, field.images[index].numpy())


@functools.lru_cache(maxsize=4)
def _read_source_frame(source_text: str, name: str, video_index: int) -> Optional[np.ndarray]:
    """One frame of the clip a field came from (kept: repeated exports of a frame decode its video once)."""
    source = Path(source_text)
    try:
        if source.is_dir() and (source / name).is_file():
            return read_frames(SceneSource(source.name, "frames", [source / name]), [0], progress=False).images[0]
        if source.is_file():
            return read_frames(SceneSource(source.stem, "video", [source]), [video_index], progress=False).images[0]
    except Exception as exc:  # the source changed since inference: fall back, but say why
        log.info("could not re-read %s: %s", source, exc)
    return None
