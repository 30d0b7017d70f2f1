"""From a click or a typed coordinate to pixels of a frame, and from pixels to whole objects.

* A click on a camera frustum's image arrives as a world ray. viser draws that image on
  the frustum's far rectangle: half-height tan(fov / 2), half-width that times the aspect,
  at depth 1, all divided by the cube root of (x * y * z / 3) and multiplied by the
  frustum's scale, the image's top towards the camera's -y. Intersecting the ray with that
  rectangle in the frustum's own frame gives the pixel.
* Objects on a frame are either the connected regions of its foreground mask
  (:func:`tracefield.masks.mask_objects`) or clusters of its moving pixels by motion:
  k-means (scipy) on each curve's displacement from its own start, so pixels that move
  together group together, wherever they are.
* :class:`Picker` turns a pixel or a listed object into a :class:`Pick`, as the state's
  click mode and object source say; it keeps the last object labels, so listing the
  objects and then adding one (or clicking) runs k-means once.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Optional

import numpy as np

from tracefield.errors import TracefieldError
from tracefield.masks import mask_objects
from viewer.scene import Scene
from viewer.state import Pick, ViewerState

MIN_OBJECT_AREA = 50  # network pixels


@dataclass
class FrustumGeometry:
    """Where a frustum stands and how viser shapes it."""

    rotation: np.ndarray  # [3, 3] camera -> world
    centre: np.ndarray  # [3] camera centre in the world
    fov: float  # vertical, radians
    aspect: float  # width / height
    scale: float

    def image_half_extent(self) -> tuple[float, float, float]:
        """Half-width, half-height and depth of the image rectangle in the frustum's frame."""
        y = np.tan(self.fov / 2.0)
        x, z = y * self.aspect, 1.0
        volume = np.cbrt(x * y * z / 3.0)
        return x / volume * self.scale, y / volume * self.scale, z / volume * self.scale


def ray_to_pixel(geometry: FrustumGeometry, origin: np.ndarray, direction: np.ndarray, hw: tuple[int, int]) -> Optional[tuple[float, float]]:
    """Pixel (x, y) of an ``hw`` image where a world ray meets a frustum's image, or None if it misses."""
    o = geometry.rotation.T @ (np.asarray(origin, float) - geometry.centre)
    d = geometry.rotation.T @ np.asarray(direction, float)
    half_x, half_y, depth = geometry.image_half_extent()
    if abs(d[2]) < 1e-12:
        return None
    s = (depth - o[2]) / d[2]
    if s <= 0:
        return None
    hit = o + s * d
    u, v = hit[0] / half_x, hit[1] / half_y  # -1..1 across the image
    if abs(u) > 1 or abs(v) > 1:
        return None
    height, width = hw
    return (u + 1) / 2 * width - 0.5, (v + 1) / 2 * height - 0.5


def mask_regions(scene: Scene, frame: int) -> np.ndarray:
    """Connected regions of the frame's foreground mask: int ``[H, W]``, 0 = none."""
    return mask_objects(scene.field.masks[frame].numpy().astype(bool), MIN_OBJECT_AREA)


def motion_clusters(scene: Scene, frame: int, count: int, seed: int = 0) -> np.ndarray:
    """The frame's moving pixels grouped into ``count`` clusters by motion: int ``[H, W]``, 0 = none."""
    from scipy.cluster.vq import kmeans2

    fg = scene.foreground[frame]
    labels = np.zeros(scene.field.hw[0] * scene.field.hw[1], dtype=np.int64)
    if len(fg.pixels) == 0:
        return labels.reshape(scene.field.hw)
    ctrl = fg.ctrl.float().numpy()
    features = (ctrl - ctrl[:, :1]).reshape(len(ctrl), -1)
    features /= max(float(features.std()), 1e-12)
    count = max(1, min(count, len(features)))
    _, assignment = kmeans2(features, count, seed=seed, minit="++")
    labels[fg.pixels] = _by_size(assignment) + 1
    return labels.reshape(scene.field.hw)


def _by_size(assignment: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..M-1 by decreasing size."""
    sizes = np.bincount(assignment)
    rank = np.empty_like(sizes)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(len(sizes))
    return rank[assignment]


def object_pixels(labels: np.ndarray, object_id: int) -> np.ndarray:
    """Flat pixel indices of one object of a label image."""
    return np.flatnonzero(labels.ravel() == object_id)


class Picker:
    """Picks from pixels and listed objects (see the module docstring); raises TracefieldError saying why not."""

    def __init__(self, scene: Scene, state: ViewerState) -> None:
        self.scene, self.state = scene, state
        self._labels: Optional[tuple[tuple, np.ndarray]] = None  # (frame, source, clusters) -> labels
        self._lock = threading.Lock()

    def at(self, frame: int, x: float, y: float) -> Pick:
        """The pixel (x, y) of ``frame`` (network pixels), or the object under it in "whole object" click mode."""
        flat = self.scene.frame_pixel(frame, x, y)
        if flat is None:
            raise TracefieldError(f"({x:.0f}, {y:.0f}) is outside frame {frame}")
        where = f"pixel ({x:.0f}, {y:.0f}) of frame {frame}"
        if self.state.click_mode == "whole object":
            labels = self.labels(frame)
            label = int(labels.ravel()[flat])
            if label:
                return Pick(frame, object_pixels(labels, label), f"object {label} of frame {frame}")
            where += " (no object there)"
        return Pick(frame, np.array([flat]), where)

    def labels(self, frame: int) -> np.ndarray:
        """Objects on ``frame``: mask regions or motion clusters, as the state says (the last answer is kept)."""
        key = (frame, self.state.object_source, self.state.cluster_count)
        with self._lock:  # one k-means at a time, however many browsers ask
            if self._labels is None or self._labels[0] != key:
                if key[1] == "motion clusters":
                    labels = motion_clusters(self.scene, frame, key[2])
                else:
                    labels = mask_regions(self.scene, frame)
                self._labels = (key, labels)
            return self._labels[1]

    def objects(self, frame: int) -> tuple[str, ...]:
        """The objects of ``frame`` as dropdown entries ``"N: area px"`` (empty when there are none)."""
        areas = np.bincount(self.labels(frame).ravel())[1:]
        return tuple(f"{i + 1}: {area} px" for i, area in enumerate(areas) if area)

    def listed(self, frame: int, entry: str) -> Pick:
        """The object of a dropdown entry from :meth:`objects`."""
        match = re.match(r"(\d+):", entry)
        if match is None:
            raise TracefieldError("list the objects on this frame first, then choose one")
        label = int(match.group(1))
        pixels = object_pixels(self.labels(frame), label)
        if not len(pixels):
            raise TracefieldError(f"object {label} is not on frame {frame}; list the objects again")
        return Pick(frame, pixels, f"object {label} ({self.state.object_source}) of frame {frame}")
