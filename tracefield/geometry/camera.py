"""Pinhole cameras in the network's pixel frame.

World coordinates are the first view's camera frame (x right, y down, z forward), as in the
field. Pixel coordinates are continuous, pixel centres at integers, in the frame the
network saw; :class:`tracefield.io.preprocess.Preprocess` maps them to original pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Intrinsics:
    focal: float  # pixels of the network frame; square pixels
    cx: float
    cy: float

    def matrix(self) -> np.ndarray:
        return np.array([[self.focal, 0.0, self.cx], [0.0, self.focal, self.cy], [0.0, 0.0, 1.0]])


@dataclass
class Camera:
    """``x_cam = R @ x_world + t`` followed by the intrinsics."""

    intrinsics: Intrinsics
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """World points ``[..., 3]`` -> camera coordinates ``[..., 3]``."""
        return points @ self.rotation.T + self.translation

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World points ``[..., 3]`` -> pixels ``[..., 2]`` and depth ``[...]`` (<= 0: behind the camera)."""
        cam = self.to_camera(points)
        depth = cam[..., 2]
        safe = np.where(np.abs(depth) < 1e-9, 1e-9, depth)
        k = self.intrinsics
        pixels = np.stack([k.focal * cam[..., 0] / safe + k.cx, k.focal * cam[..., 1] / safe + k.cy], axis=-1)
        return pixels, depth

    @property
    def centre(self) -> np.ndarray:
        """The camera's position in world coordinates."""
        return -self.rotation.T @ self.translation
