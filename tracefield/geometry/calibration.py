"""Cameras from the field itself: first-frame intrinsics and one pose per frame.

The network gives, for every pixel of frame i, a 3D point in the first camera's frame at
frame i's own time: exactly what camera i saw. So

* the focal length follows from frame 0, where those points are in camera-0 coordinates:
  u - cx = f * X / Z, v - cy = f * Y / Z for every confident pixel, solved robustly
  (least squares, then Weiszfeld-style reweighting by residual, as DUSt3R does);
* frame i's pose follows from PnP between its pixels and its points (OpenCV's RANSAC +
  Levenberg-Marquardt refinement), with the shared intrinsics.

The principal point is the centre of the original frame (the network's crop is top-left,
so that is not the centre of the network frame).
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import cv2
import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from tracefield.errors import TracefieldError
from tracefield.field import TraceField
from tracefield.geometry.camera import Camera, Intrinsics

log = logging.getLogger(__name__)

SAMPLE_STRIDE = 4  # pixels between samples in each direction
CONFIDENT_FRACTION = 0.5  # keep the most confident half of the samples
REWEIGHT_STEPS = 10
PNP_REPROJECTION_PX = 2.0


def principal_point(field: TraceField) -> tuple[float, float]:
    """The original frame's centre, in network-frame pixels."""
    h0, w0 = field.transform.original_hw
    cx, cy = field.transform.to_model([(w0 - 1) / 2, (h0 - 1) / 2])
    return float(cx), float(cy)


def _samples(points: np.ndarray, conf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels, points and confidences on a sparse grid, most confident half, in front of the camera."""
    height, width = conf.shape
    ys, xs = np.mgrid[SAMPLE_STRIDE // 2 : height : SAMPLE_STRIDE, SAMPLE_STRIDE // 2 : width : SAMPLE_STRIDE]
    pts = points[ys, xs].reshape(-1, 3)
    cf = conf[ys, xs].reshape(-1)
    uv = np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float64)
    keep = np.isfinite(pts).all(axis=1) & np.isfinite(cf)
    if keep.any():
        keep &= cf >= np.quantile(cf[keep], 1 - CONFIDENT_FRACTION)
    return uv[keep], pts[keep].astype(np.float64), cf[keep].astype(np.float64)


def estimate_intrinsics(field: TraceField, focal: Optional[float] = None) -> Intrinsics:
    """Focal length (network pixels) from frame 0's points; ``focal`` (network pixels) overrides it."""
    cx, cy = principal_point(field)
    if focal is not None:
        return Intrinsics(float(focal), cx, cy)
    points = field.points_at_own_time([0])[0].numpy()
    conf = field.conf_at_own_time([0])[0].numpy()
    uv, pts, weights = _samples(points, conf)
    front = pts[:, 2] > 1e-6
    uv, pts, weights = uv[front], pts[front], weights[front]
    if len(uv) < 10:
        raise TracefieldError("frame 0: too few confident points in front of the camera to estimate a focal length; pass --focal")
    d = uv - np.array([cx, cy])
    ray = pts[:, :2] / pts[:, 2:3]
    f = _weighted_focal(d, ray, weights)
    for _ in range(REWEIGHT_STEPS):
        residual = np.linalg.norm(d - f * ray, axis=1)
        f = _weighted_focal(d, ray, weights / np.maximum(residual, 1e-3))
    if not np.isfinite(f) or f <= 0:
        raise TracefieldError("frame 0: the points give no positive focal length (untrained or degenerate field?); pass --focal")
    return Intrinsics(float(f), cx, cy)


def _weighted_focal(d: np.ndarray, ray: np.ndarray, w: np.ndarray) -> float:
    return float((w[:, None] * d * ray).sum() / max((w[:, None] * ray * ray).sum(), 1e-12))


def estimate_poses(field: TraceField, intrinsics: Intrinsics, frames: Optional[Sequence[int]] = None) -> list[Camera]:
    """One camera per frame from PnP on its own points; frame 0 is the world frame (identity)."""
    index = list(range(field.num_frames)) if frames is None else list(frames)
    points = field.points_at_own_time(frames).numpy()  # None: the cached tensors themselves, no copy
    conf = field.conf_at_own_time(frames).numpy()
    k = intrinsics.matrix()
    cameras = []
    for n, frame in enumerate(index):
        if frame == 0:
            cameras.append(Camera(intrinsics))
            continue
        uv, pts, _ = _samples(points[n], conf[n])
        cameras.append(_solve_pnp(uv, pts, k, intrinsics, frame))
    return cameras


def _solve_pnp(uv: np.ndarray, pts: np.ndarray, k: np.ndarray, intrinsics: Intrinsics, frame: int) -> Camera:
    if len(uv) < 6:
        raise TracefieldError(f"frame {frame}: too few confident points for a camera pose; use the static camera")
    ok, rvec, tvec, inliers = cv2.solvePnPRansac(
        pts, uv, k, None, reprojectionError=PNP_REPROJECTION_PX, iterationsCount=200, flags=cv2.SOLVEPNP_SQPNP
    )
    if not ok or inliers is None or len(inliers) < 6:
        raise TracefieldError(f"frame {frame}: no consistent camera pose (PnP failed); use the static camera")
    rvec, tvec = cv2.solvePnPRefineLM(pts[inliers[:, 0]], uv[inliers[:, 0]], k, None, rvec, tvec)
    log.debug("frame %d: PnP with %d/%d inliers", frame, len(inliers), len(uv))
    return Camera(intrinsics, cv2.Rodrigues(rvec)[0], tvec.reshape(3))


class FilmedCameras:
    """The cameras that filmed the clip, as a function of time (rotation slerp, linear position)."""

    def __init__(self, cameras: Sequence[Camera], times: Sequence[float]) -> None:
        order = np.argsort(np.asarray(times, dtype=np.float64), kind="stable")
        # Slerp needs strictly increasing times; predicted times may tie.
        self.times = np.asarray(times, dtype=np.float64)[order] + np.arange(len(order)) * 1e-9
        self.cameras = [cameras[i] for i in order]
        self._slerp = Slerp(self.times, Rotation.from_matrix(np.stack([c.rotation for c in self.cameras]))) if len(self.times) > 1 else None
        self._centres = np.stack([c.centre for c in self.cameras])

    def at(self, t: float) -> Camera:
        t = float(np.clip(t, self.times[0], self.times[-1]))
        if self._slerp is None:
            return self.cameras[0]
        rotation = self._slerp([t]).as_matrix()[0]
        centre = np.array([np.interp(t, self.times, self._centres[:, i]) for i in range(3)])
        return Camera(self.cameras[0].intrinsics, rotation, -rotation @ centre)
