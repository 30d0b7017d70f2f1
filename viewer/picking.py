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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from tracefield.masks import mask_objects
from viewer.scene import Scene

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
