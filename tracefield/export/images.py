"""The first-frame image of an export: the source frame, the network's frame warped back, or an edited frame.

Every network-frame picture (frames, masks) reaches a consumer's image through one
resampling: each output pixel centre is mapped back (placement, then the preprocessing
transform) to the network frame and sampled there, so masks and video backgrounds line up
with the tracks to the pixel.
"""

from __future__ import annotations

import functools
import io
import logging
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from tracefield.errors import TracefieldError, short_reason
from tracefield.export.canvas import Placement
from tracefield.field import TraceField
from tracefield.io.frames import SceneSource, read_frames
from tracefield.io.preprocess import Preprocess

log = logging.getLogger(__name__)

MAX_IMAGE_SIDE = 8192  # an edited first frame larger than this is refused before it is decoded
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_ASPECT_CHANGE = 1.5  # an edited frame's aspect ratio may differ from the video's by at most this factor


@functools.lru_cache(maxsize=8)
def _network_coords(transform: Preprocess, placement: Placement, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """For every pixel of a ``width`` x ``height`` grid over the placed image, where it is in the network frame."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    file_xy = np.stack([(xs + 0.5) * placement.width / width, (ys + 0.5) * placement.height / height], axis=-1)
    model = transform.to_model(placement.from_file(file_xy)).astype(np.float32)
    return model[..., 0], model[..., 1]


def warp(transform: Preprocess, placement: Placement, image: np.ndarray, nearest: bool = False, size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """A network-frame image or bool mask -> the placed image's pixels (or a ``size`` = (W, H) grid over it).

    Parts outside the network frame (its crop) repeat the edge.
    """
    width, height = size or (placement.width, placement.height)
    map_x, map_y = _network_coords(transform, placement, width, height)
    src = image.astype(np.uint8) if image.dtype == bool else image
    out = cv2.remap(src, map_x, map_y, cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.astype(bool) if image.dtype == bool else out


def usable_pixels(transform: Preprocess, placement: Placement) -> np.ndarray:
    """bool ``[H, W]``: network pixels whose centres land inside the placed image (a consumer's crop cuts the rest)."""
    height, width = transform.model_hw
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    return placement.inside(placement.to_file(transform.to_original(np.stack([xs, ys], axis=-1))))


def unwarp(field: TraceField, image: np.ndarray, nearest: bool = False) -> np.ndarray:
    """A network-frame image or mask -> original size and orientation."""
    h0, w0 = field.transform.original_hw
    return warp(field.transform, Placement.identity(w0, h0), image, nearest)


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


def read_edited_frame(source: str | Path | bytes, frame_size: tuple[int, int], what: str = "--image") -> np.ndarray:
    """An edited first frame (a file path or the bytes of an upload) -> RGB ``[H, W, 3]``, checked.

    It must decode as an image, be at most MAX_IMAGE_SIDE a side, and have an aspect ratio
    within MAX_ASPECT_CHANGE of the video frame's (``frame_size`` = (W, H)): it stands for
    the same view. A different aspect ratio is accepted and treated as the consumers treat
    any image: the video frame is cover-resized into it and centre-cropped, so the frame's
    edges beyond the edited image's shape are cut (tracks there start outside and are dropped).
    """
    label = what if isinstance(source, bytes) else f"{what} {source}"
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.is_file():
            raise TracefieldError(f"{label}: no such file; give the edited first frame (PNG or JPEG)")
        if path.stat().st_size > MAX_IMAGE_BYTES:
            raise TracefieldError(f"{label}: over {MAX_IMAGE_BYTES >> 20} MB; save it as a PNG or JPEG of the frame's size")
        source = path.read_bytes()
    elif len(source) > MAX_IMAGE_BYTES:
        raise TracefieldError(f"{label}: over {MAX_IMAGE_BYTES >> 20} MB; use a PNG or JPEG of the frame's size")
    try:
        with Image.open(io.BytesIO(source)) as image:
            width, height = image.size
            if max(width, height) > MAX_IMAGE_SIDE or min(width, height) < 16:
                raise TracefieldError(f"{label}: {width}x{height}; use an image of 16 to {MAX_IMAGE_SIDE} pixels a side")
            rgb = np.asarray(image.convert("RGB"))
    except UnidentifiedImageError as exc:
        raise TracefieldError(f"{label}: not a readable image; save it as PNG or JPEG") from exc
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise TracefieldError(f"{label}: not a readable image ({short_reason(exc)}); save it as PNG or JPEG") from exc
    frame_w, frame_h = frame_size
    change = (width / height) / (frame_w / frame_h)
    if max(change, 1 / change) > MAX_ASPECT_CHANGE:
        raise TracefieldError(
            f"{label}: {width}x{height} (aspect {width / height:.2f}) does not show the {frame_w}x{frame_h} video frame "
            f"(aspect {frame_w / frame_h:.2f}); crop or pad the edited frame to the video's aspect ratio"
        )
    if abs(change - 1) > 0.01:
        log.warning("%s: aspect %.2f differs from the video's %.2f; the frame is cover-fitted into it (edges cut), "
                    "as the generators fit images", label, width / height, frame_w / frame_h)
    return rgb
