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
    frame = _reread(field, index)
    if frame is not None and frame.shape[:2] == field.transform.original_hw:
        return frame
    log.info("frame %d: source not available, using the network's frame warped back to %dx%d", index, *field.transform.original_hw[::-1])
    return unwarp(field, field.images[index].numpy())


def _reread(field: TraceField, index: int) -> Optional[np.ndarray]:
    info = field.frames
    if not info.source or not info.names or index >= len(info.names):
        return None
    source = Path(info.source)
    try:
        if source.is_dir() and (source / info.names[index]).is_file():
            return read_frames(SceneSource(source.name, "frames", [source / info.names[index]]), [0], progress=False).images[0]
        if source.is_file():
            decoded = read_frames(SceneSource(source.stem, "video", [source]), [info.indices[index]], progress=False)
            return decoded.images[0]
    except Exception as exc:  # the source changed since inference: fall back, but say why
        log.info("could not re-read %s: %s", source, exc)
    return None
