"""Generation canvases: where an original-frame pixel lands in a generator's W x H input.

WorldCanvas, the ComfyUI Wan nodes and Wan-Move take the first frame resized to cover the
canvas and centre-cropped (WorldCanvas' ``crop_and_resize``); tracks must be mapped the
same way. ATI works in original pixels, i.e. the identity canvas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from tracefield.errors import TracefieldError


@dataclass(frozen=True)
class Canvas:
    width: int
    height: int
    source_width: int
    source_height: int

    @classmethod
    def identity(cls, source_width: int, source_height: int) -> "Canvas":
        return cls(source_width, source_height, source_width, source_height)

    @property
    def _resized(self) -> tuple[int, int]:
        scale = max(self.width / self.source_width, self.height / self.source_height)
        return round(self.source_width * scale), round(self.source_height * scale)

    @property
    def _offset(self) -> tuple[int, int]:
        rw, rh = self._resized
        return int(round((rw - self.width) / 2.0)), int(round((rh - self.height) / 2.0))

    def map(self, xy: np.ndarray) -> np.ndarray:
        """Original pixels ``[..., 2]`` -> canvas pixels (pixel centres at integers)."""
        rw, rh = self._resized
        left, top = self._offset
        xy = np.asarray(xy, dtype=np.float64)
        x = (xy[..., 0] + 0.5) * rw / self.source_width - 0.5 - left
        y = (xy[..., 1] + 0.5) * rh / self.source_height - 0.5 - top
        return np.stack([x, y], axis=-1)

    def unmap(self, xy: np.ndarray) -> np.ndarray:
        """Canvas pixels ``[..., 2]`` -> original pixels (inverse of :meth:`map`)."""
        rw, rh = self._resized
        left, top = self._offset
        xy = np.asarray(xy, dtype=np.float64)
        x = (xy[..., 0] + 0.5 + left) * self.source_width / rw - 0.5
        y = (xy[..., 1] + 0.5 + top) * self.source_height / rh - 0.5
        return np.stack([x, y], axis=-1)

    def image(self, image: np.ndarray) -> np.ndarray:
        """Original frame ``[H0, W0, 3]`` -> the canvas image the generator will see."""
        if (self.width, self.height) == (self.source_width, self.source_height):
            return image
        left, top = self._offset
        resized = Image.fromarray(image).resize(self._resized, Image.BILINEAR)
        return np.asarray(resized.crop((left, top, left + self.width, top + self.height)))

    def inside(self, xy: np.ndarray) -> np.ndarray:
        return (xy[..., 0] >= -0.5) & (xy[..., 0] < self.width - 0.5) & (xy[..., 1] >= -0.5) & (xy[..., 1] < self.height - 0.5)


def parse_canvas(text: str, source_width: int, source_height: int) -> Canvas:
    """``"832x480"`` -> a canvas for frames of the given original size."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise TracefieldError(f"--canvas {text!r}: expected WIDTHxHEIGHT, e.g. 832x480") from exc
    if width < 16 or height < 16:
        raise TracefieldError(f"--canvas {text}: too small; generators use e.g. 832x480 or 1280x720")
    return Canvas(width, height, source_width, source_height)
