"""From seeds to 2D tracks: evaluate the 3D curves at the output times, project, anchor, decide what is seen.

Cameras (``--camera``); each starts at the camera of the seed frame (the frame the tracks are
picked on, whose image the generator starts from):

* ``static``: the seed frame's camera throughout (motion as seen from the first image);
* ``filmed``: the cameras that filmed the clip (poses estimated per frame, interpolated);
* a YAML camera path (:mod:`tracefield.geometry.paths`): the same motion re-filmed by a
  camera that moves away from the seed frame's camera over the exported span.

**Anchoring.** A track picked at pixel p on frame f passes through p at f's time, exactly:
the curve of p's trajectory, projected through the seed camera at f's time, lands at some
p' (p' != p by the model's error); the whole projected track is shifted by the constant
residual p - p'. So the track starts where the user picked it and otherwise follows the
field's motion (its displacements from the pick are the field's own). The residuals are
logged; they are the field's reprojection error at the picks.

A point is *seen* when it is in front of the camera, its trajectory is confident at that
time and (unless disabled) it is not behind the scene's surface; at f's time a pick is seen
by definition (it is what the frame shows there). Whether it is inside a consumer's image
is decided per format, in that image's pixels (:func:`tracefield.export.canvas.inside`).
Coordinates come out in ORIGINAL image pixels, pixel-centre convention (resize, crop and
rotation undone).
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
from tracefield.export.selection import Seeds, seed_curves
from tracefield.field import TraceField
from tracefield.geometry import Camera, FilmedCameras, Intrinsics, build_depth_maps, estimate_intrinsics, estimate_poses, load_camera_path

log = logging.getLogger(__name__)

ANCHOR_TIME_TOLERANCE = 1e-6  # output frames this close to the seed frame's time show the picks themselves


@dataclass
class CameraOptions:
    mode: str = "static"  # static | filmed | path to a camera-path YAML
    focal: Optional[float] = None  # original pixels; estimated from the field when None
    occlusion: bool = True
    conf_percentile: float = 10.0


@dataclass
class Tracks:
    """2D tracks for a generator, with the 3D curves and cameras they came from."""

    xy: np.ndarray  # [T, N, 2] original-image pixels, pixel-centre convention, anchored
    seen: np.ndarray  # [T, N] bool: in front, confident, not occluded (image bounds are each format's)
    points: np.ndarray  # [T, N, 3] world (first camera) coordinates
    clip_times: np.ndarray  # [T] normalised clip time of each output frame
    fps: float
    original_size: tuple[int, int]  # (W, H)
    object_ids: np.ndarray  # [N]; 0 = background
    camera_tracks: np.ndarray  # [N] bool
    seed_frame: int = 0
    anchor_time: float = 0.0  # the seed frame's time, where every track passes through its pick
    picks: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # [N, 2] the picked pixels, original pixels
    residual: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # [N, 2] pick - field's projection, original pixels
    object_masks: dict[int, np.ndarray] = field(default_factory=dict)  # id -> bool [H, W] network frame, seed frame
    intrinsics: Optional[dict] = None  # focal/cx/cy in original pixels, for the record
    camera_mode: str = "static"

    @property
    def num_tracks(self) -> int:
        return self.xy.shape[1]


def camera_function(field: TraceField, options: CameraOptions, seed_frame: int = 0,
                    span: tuple[float, float] = (0.0, 1.0)) -> tuple[Callable[[float], Camera], Intrinsics, Camera]:
    """The camera at any normalised clip time for the chosen mode, the intrinsics, and the seed frame's camera.

    ``span`` is the exported (start, end) of the clip: a camera path runs over it.
    """
    focal_model = None if options.focal is None else options.focal * _model_per_original(field)
    intrinsics = estimate_intrinsics(field, focal_model)
    if options.mode == "filmed":
        cameras = estimate_poses(field, intrinsics)
        return FilmedCameras(cameras, field.times.numpy()).at, intrinsics, cameras[seed_frame]
    seed = Camera(intrinsics) if seed_frame == 0 else estimate_poses(field, intrinsics, [seed_frame])[0]
    if options.mode == "static":
        return (lambda t: seed), intrinsics, seed
    path = Path(options.mode)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise TracefieldError(f"--camera {options.mode}: use static, filmed, or a camera-path .yaml file")
    depth = float(np.median(seed.to_camera(field.points_at_own_time([seed_frame])[0].numpy().reshape(-1, 3))[:, 2]))
    moves = load_camera_path(path, intrinsics, depth)
    start, end = span
    return (lambda t: _after(moves.at((t - start) / max(end - start, 1e-9)), seed)), intrinsics, seed


def _after(relative: Camera, seed: Camera) -> Camera:
    """A camera given relative to the seed camera's frame -> the same camera in world coordinates."""
    rotation = relative.rotation @ seed.rotation
    return Camera(relative.intrinsics, rotation, relative.rotation @ seed.translation + relative.translation)


def _model_per_original(field: TraceField) -> float:
    """Network pixels per original pixel (the resize factor)."""
    t = field.transform
    return t.resized_hw[1] / (t.original_hw[0] if t.rotated else t.original_hw[1])


def build_tracks(field: TraceField, seeds: Seeds, clip_times: np.ndarray, fps: float, options: CameraOptions,
                 span: Optional[tuple[float, float]] = None) -> Tracks:
    """Evaluate, project, anchor and test what is seen of every seed's trajectory at ``clip_times``."""
    ctrl, ctrl_conf = seed_curves(field, seeds)
    anchor_time = float(field.times[seeds.frame])
    times = torch.as_tensor(np.append(clip_times, anchor_time), dtype=torch.float32)
    evaluated = curves.evaluate(ctrl, times, dim=1).permute(1, 0, 2).numpy().astype(np.float64)  # [T + 1, N, 3]
    points, anchor_points = evaluated[:-1], evaluated[-1]
    conf = curves.evaluate(ctrl_conf, times[:-1], dim=1).T.numpy()  # [T, N]
    if not np.isfinite(evaluated).all():
        raise TracefieldError(f"{field.frames.source or 'the field'}: the selected trajectories contain NaN or inf; re-run inference")
    span = span or (float(clip_times[0]), float(clip_times[-1]))
    camera_at, intrinsics, seed_camera = camera_function(field, options, seeds.frame, span)
    residual = seeds.pixels - seed_camera.project(anchor_points)[0]  # network pixels
    pixels = np.empty(points.shape[:2] + (2,))
    depth = np.empty(points.shape[:2])
    for k, t in enumerate(clip_times):
        pixels[k], depth[k] = camera_at(float(t)).project(points[k])
    pixels += residual
    seen = (depth > 0) & (conf >= _conf_threshold(field, options.conf_percentile))
    if options.occlusion:
        maps = build_depth_maps(field.points_at_own_time().numpy(), field.times.numpy(), camera_at, field.hw)
        for k, t in enumerate(clip_times):
            seen[k] &= ~maps.occluded(float(t), pixels[k], depth[k])
    seen[np.abs(np.asarray(clip_times) - anchor_time) < ANCHOR_TIME_TOLERANCE] = True
    transform = field.transform
    picks = transform.to_original(seeds.pixels)
    residual_original = picks - transform.to_original(seeds.pixels - residual)
    if len(seeds):
        error = np.linalg.norm(residual_original, axis=-1)
        log.info("anchored %d tracks at their picks on frame %d: the field's own projection was off by median %.2f, max %.2f original pixels",
                 len(seeds), seeds.frame, float(np.median(error)), float(error.max()))
    h0, w0 = transform.original_hw
    return Tracks(
        xy=transform.to_original(pixels),
        seen=seen,
        points=points,
        clip_times=np.asarray(clip_times, dtype=np.float64),
        fps=fps,
        original_size=(w0, h0),
        object_ids=seeds.object_ids.copy(),
        camera_tracks=seeds.camera.copy(),
        seed_frame=seeds.frame,
        anchor_time=anchor_time,
        picks=picks,
        residual=residual_original,
        object_masks=dict(seeds.object_masks),
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
