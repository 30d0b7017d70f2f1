"""Is a tracked point hidden behind the scene at a given time, as seen by a given camera?

The scene at frame i's time is frame i's own points (what the camera saw then). Splatting
them into the target camera with a z-buffer gives a depth map; a tracked point is occluded
when it lies clearly behind that depth. Depth maps are built once per frame time, on a grid
coarser than the image (occluders are surfaces, not single pixels), and a point at time t
is tested against the map of the nearest frame time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from tracefield.geometry.camera import Camera

CELL = 4  # network pixels per depth-map cell
RELATIVE_TOLERANCE = 0.05  # a point this much farther than the surface counts as behind it


@dataclass
class DepthMaps:
    times: np.ndarray  # [F] frame times, sorted
    depth: np.ndarray  # [F, h, w] nearest surface depth per CELL x CELL pixels (inf: nothing seen)

    def occluded(self, t: float, pixels: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Points at pixels ``[N, 2]`` with depth ``[N]``, at time t -> bool ``[N]`` hidden behind the surface."""
        frame = int(np.argmin(np.abs(self.times - t)))
        cells = np.floor(pixels / CELL).astype(np.int64)
        height, width = self.depth.shape[1:]
        inside = (cells[:, 0] >= 0) & (cells[:, 0] < width) & (cells[:, 1] >= 0) & (cells[:, 1] < height)
        surface = np.full(len(pixels), np.inf)
        surface[inside] = self.depth[frame, cells[inside, 1], cells[inside, 0]]
        return depth > surface * (1 + RELATIVE_TOLERANCE)


def build_depth_maps(
    frame_points: np.ndarray, frame_times: Sequence[float], camera_at: Callable[[float], Camera], hw: tuple[int, int]
) -> DepthMaps:
    """Z-buffer each frame's points ``[F, H, W, 3]`` into the camera at that frame's time."""
    height, width = hw
    grid_h, grid_w = -(-height // CELL), -(-width // CELL)
    order = np.argsort(np.asarray(frame_times), kind="stable")
    maps = np.full((len(order), grid_h, grid_w), np.inf)
    for slot, frame in enumerate(order):
        # Every other pixel in each direction still puts about four samples in each cell.
        points = frame_points[frame][::2, ::2].reshape(-1, 3)
        pixels, depth = camera_at(float(frame_times[frame])).project(points)
        cells = np.floor(pixels / CELL).astype(np.int64)
        keep = (depth > 0) & (cells[:, 0] >= 0) & (cells[:, 0] < grid_w) & (cells[:, 1] >= 0) & (cells[:, 1] < grid_h)
        np.minimum.at(maps[slot], (cells[keep, 1], cells[keep, 0]), depth[keep])
    return DepthMaps(times=np.asarray(frame_times, dtype=np.float64)[order], depth=maps)
