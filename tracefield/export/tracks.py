"""From seeds to 2D tracks: evaluate the 3D curves at the output times, project, decide visibility.

Cameras (``--camera``):

* ``static``: the first frame's camera throughout (motion relative to the first view);
* ``filmed``: the cameras that filmed the clip (poses estimated per frame, interpolated);
* a YAML camera path (:mod:`tracefield.geometry.paths`): the same motion, re-filmed.

A point is visible when it is in front of the camera and inside the frame, its trajectory
is confident at that time, and (unless disabled) it is not behind the scene's surface.
Coordinates come out in ORIGINAL image pixels (resize, crop and rotation undone).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from tracefield import curves
from tracefield.errors import TracefieldError
from tracefield.export.canvas import Canvas
from tracefield.export.images import unwarp
from tracefield.export.selection import Seeds, seed_curves
from tracefield.field import TraceField
from tracefield.geometry import Camera, FilmedCameras, Intrinsics, build_depth_maps, estimate_intrinsics, estimate_poses, load_camera_path

log = logging.getLogger(__name__)


@dataclass
class CameraOptions:
    mode: str = "static"  # static | filmed | path to a camera-path YAML
    focal: Optional[float] = None  # original pixels; estimated from the field when None
    occlusion: bool = True
    conf_percentile: float = 10.0


@dataclass
class Tracks:
    """2D tracks for a generator, with the 3D curves and cameras they came from."""

    xy: np.ndarray  # [T, N, 2] original-image pixels
    visible: np.ndarray  # [T, N] bool
    points: np.ndarray  # [T, N, 3] world (first camera) coordinates
    clip_times: np.ndarray  # [T] normalised clip time of each output frame
    fps: float
    original_size: tuple[int, int]  # (W, H)
    object_ids: np.ndarray  # [N]; 0 = background
    camera_tracks: np.ndarray  # [N] bool
    object_masks: dict[int, np.ndarray] = field(default_factory=dict)  # id -> bool [H0, W0], first frame
    intrinsics: Optional[dict] = None  # focal/cx/cy in original pixels, for the record
    camera_mode: str = "static"

    @property
    def num_tracks(self) -> int:
        return self.xy.shape[1]


def camera_function(field: TraceField, options: CameraOptions) -> tuple[Callable[[float], Camera], Intrinsics]:
    """The camera at any normalised clip time, for the chosen mode."""
    focal_model = None if options.focal is None else options.focal * _model_per_original(field)
    intrinsics = estimate_intrinsics(field, focal_model)
    if options.mode == "static":
        static = Camera(intrinsics)
        return (lambda t: static), intrinsics
    if options.mode == "filmed":
        filmed = FilmedCameras(estimate_poses(field, intrinsics), field.times.numpy())
        return filmed.at, intrinsics
    path = Path(options.mode)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise TracefieldError(f"--camera {options.mode}: use static, filmed, or a camera-path .yaml file")
    depth = float(np.median(field.points_at_own_time([0])[0, ..., 2].numpy()))
    return load_camera_path(path, intrinsics, depth).at, intrinsics


def _model_per_original(field: TraceField) -> float:
    """Network pixels per original pixel (the resize factor)."""
    t = field.transform
    return t.resized_hw[1] / (t.original_hw[0] if t.rotated else t.original_hw[1])


def build_tracks(field: TraceField, seeds: Seeds, clip_times: np.ndarray, fps: float, options: CameraOptions) -> Tracks:
    """Evaluate, project and test visibility of every seed's trajectory at ``clip_times``."""
    ctrl, ctrl_conf = seed_curves(field, seeds)
    times = torch.as_tensor(clip_times, dtype=torch.float32)
    points = curves.evaluate(ctrl, times, dim=1).permute(1, 0, 2).numpy().astype(np.float64)  # [T, N, 3]
    conf = curves.evaluate(ctrl_conf, times, dim=1).T.numpy()  # [T, N]
    if not np.isfinite(points).all():
        raise TracefieldError(f"{field.frames.source or 'the field'}: the selected trajectories contain NaN or inf; re-run inference")
    camera_at, intrinsics = camera_function(field, options)
    pixels = np.empty(points.shape[:2] + (2,))
    depth = np.empty(points.shape[:2])
    for k, t in enumerate(clip_times):
        pixels[k], depth[k] = camera_at(float(t)).project(points[k])
    height, width = field.hw
    h0, w0 = field.transform.original_hw
    xy = field.transform.to_original(pixels)
    visible = (depth > 0) & Canvas.identity(w0, h0).inside(xy)  # inside the original frame, not just the crop
    visible &= conf >= _conf_threshold(field, options.conf_percentile)
    if options.occlusion:
        maps = build_depth_maps(field.points_at_own_time().numpy(), field.times.numpy(), camera_at, (height, width))
        for k, t in enumerate(clip_times):
            visible[k] &= ~maps.occluded(float(t), pixels[k], depth[k])
    return Tracks(
        xy=xy,
        visible=visible,
        points=points,
        clip_times=np.asarray(clip_times, dtype=np.float64),
        fps=fps,
        original_size=(w0, h0),
        object_ids=seeds.object_ids.copy(),
        camera_tracks=seeds.camera.copy(),
        object_masks={obj: unwarp(field, mask, nearest=True) for obj, mask in seeds.object_masks.items()},
        intrinsics=_original_intrinsics(field, intrinsics),
        camera_mode=options.mode,
    )


def _conf_threshold(field: TraceField, percentile: float) -> float:
    """The percentile of the frames' own-time confidences, less a hair so equal values pass after evaluation."""
    conf = field.conf_at_own_time().numpy()
    return float(np.percentile(conf[np.isfinite(conf)], percentile)) * (1 - 1e-5)


def _original_intrinsics(field: TraceField, intrinsics: Intrinsics) -> dict:
    h0, w0 = field.transform.original_hw
    return {"focal": intrinsics.focal / _model_per_original(field), "cx": (w0 - 1) / 2, "cy": (h0 - 1) / 2, "rotated": field.transform.rotated}
