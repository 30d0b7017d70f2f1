"""Where tracks land in the image a consumer reads: one pixel convention, one fit, one bounds test.

**Pixel convention of every file we write.** Continuous coordinates with the origin at the
top-left *corner* of the consumer's image: pixel (i, j) covers [i, i+1) x [j, j+1), so its
centre is (i + 0.5, j + 0.5). That is what every consumer computes with: ATI and ComfyUI
centre tracks on (W/2, H/2) and sample first-frame features with ``grid_sample``
(``align_corners=False``); Wan-Move multiplies by video size / image size and takes latent
cell ``x // 8``; WorldCanvas takes cell ``x // 8``. Inside the image is therefore
``0 <= x < W and 0 <= y < H`` for every writer: Wan-Move skips x < 0 or y < 0, so a point
at x = -0.3 (still nearest pixel 0) is *outside*, and WorldCanvas calls x >= W off-canvas.

The field and :class:`tracefield.export.tracks.Tracks` use pixel-centre coordinates of the
original frame (pixel i at i); :meth:`Placement.to_file` adds the half pixel and maps into
the consumer's image.

**Fitting one image into another** is cover-resize then centre-crop (WorldCanvas'
``crop_and_resize``: torchvision ``resize`` to round(side * scale), ``center_crop`` with
round((resized - target) / 2)). We write the fitted image ourselves, at the canvas size, so a
consumer's own fit (``crop_and_resize``, ComfyUI's ``common_upscale(..., "center")``,
Wan-Move's resize to its video size) is the identity or a uniform scale on it, and tracks
and image stay in one pixel space whatever the consumer does. An edited first frame of
another aspect ratio is related to the video frame the same way (the frame cover-fitted
into it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tracefield.errors import TracefieldError


@dataclass(frozen=True)
class Placement:
    """An axis-aligned map from original-frame pixels into a ``width`` x ``height`` image.

    ``file = (x_centre + 0.5) * scale - offset``: ``x_centre`` in the original frame's
    pixel-centre coordinates, ``file`` in the corner convention above.
    """

    width: int
    height: int
    scale: tuple[float, float] = (1.0, 1.0)
    offset: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def identity(cls, width: int, height: int) -> "Placement":
        return cls(width, height)

    @classmethod
    def cover(cls, source_width: int, source_height: int, width: int, height: int) -> "Placement":
        """A ``source`` image cover-resized to ``width`` x ``height`` and centre-cropped."""
        if (source_width, source_height) == (width, height):
            return cls.identity(width, height)
        resized_w, resized_h = cover_size(source_width, source_height, width, height)
        left, top = int(round((resized_w - width) / 2.0)), int(round((resized_h - height) / 2.0))
        return cls(width, height, (resized_w / source_width, resized_h / source_height), (float(left), float(top)))

    def then(self, outer: "Placement") -> "Placement":
        """This placement followed by ``outer`` (a placement of this image into another)."""
        sx, sy = self.scale
        ox, oy = self.offset
        (tx, ty), (px, py) = outer.scale, outer.offset
        return Placement(outer.width, outer.height, (sx * tx, sy * ty), (ox * tx + px, oy * ty + py))

    def to_file(self, xy: np.ndarray) -> np.ndarray:
        """Original pixel-centre coordinates ``[..., 2]`` -> this image's file coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        return (xy + 0.5) * np.asarray(self.scale) - np.asarray(self.offset)

    def from_file(self, xy: np.ndarray) -> np.ndarray:
        """File coordinates ``[..., 2]`` -> original pixel-centre coordinates (inverse of :meth:`to_file`)."""
        xy = np.asarray(xy, dtype=np.float64)
        return (xy + np.asarray(self.offset)) / np.asarray(self.scale) - 0.5

    def inside(self, xy: np.ndarray) -> np.ndarray:
        """File coordinates ``[..., 2]`` -> bool: inside this image (``0 <= x < W``, ``0 <= y < H``)."""
        return inside(xy, self.width, self.height)


def inside(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """The one bounds test of every writer and reader: ``0 <= x < width`` and ``0 <= y < height``."""
    xy = np.asarray(xy)
    return (xy[..., 0] >= 0) & (xy[..., 0] < width) & (xy[..., 1] >= 0) & (xy[..., 1] < height)


def cover_size(source_width: int, source_height: int, width: int, height: int) -> tuple[int, int]:
    """The size a source is resized to before the centre crop (torchvision's rounding)."""
    scale = max(width / source_width, height / source_height)
    return round(source_width * scale), round(source_height * scale)


def fit_image(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image [H, W, 3]`` cover-resized (bilinear) and centre-cropped to ``width`` x ``height``."""
    source_h, source_w = image.shape[:2]
    if (source_w, source_h) == (width, height):
        return image
    placement = Placement.cover(source_w, source_h, width, height)
    left, top = (int(v) for v in placement.offset)
    resized = Image.fromarray(image).resize(cover_size(source_w, source_h, width, height), Image.BILINEAR)
    return np.asarray(resized.crop((left, top, left + width, top + height)))


def parse_canvas(text: str) -> tuple[int, int]:
    """``"832x480"`` -> (832, 480), with a one-line error for anything else."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise TracefieldError(f"--canvas {text!r}: expected WIDTHxHEIGHT, e.g. 832x480") from exc
    if width < 16 or height < 16 or width > 8192 or height > 8192:
        raise TracefieldError(f"--canvas {text}: use a size between 16 and 8192 pixels a side, e.g. 832x480 or 1280x720")
    return width, height
