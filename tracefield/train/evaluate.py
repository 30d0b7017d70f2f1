"""``tracefield eval``: trajectory accuracy on held-out synthetic scenes, against baselines.

Scenes use seeds from ``EVAL_SEED_BASE`` up, which training never renders. Queries are a
stride-4 grid on the first frame (TAP-Vid's "first" mode); each query's trajectory is
compared with the truth at every frame time:

* 3D EPE after median scale alignment (the network predicts up to scale);
* 2D EPE and TAP-Vid's delta_avg (fraction within 1, 2, 4, 8, 16 px, averaged) of the
  trajectories projected into the first camera, over points whose true projection is in
  the image; 2D EPE is also reported on moving pixels alone. As in TAP-Vid, a track
  starts at its query pixel: the projected trajectory is shifted so that it passes through
  the query at the query time, and what is scored is where it goes from there.
  ``epe2d_unanchored`` is the same error without that shift (it adds the network's
  reprojection error at the query itself);
* motion recall (:func:`motion_recall`): how much of the true 2D motion of the moving
  queries the prediction carries, 1 = all of it, 0 = static, beside moving-pixel EPE
  (which a static prediction already scores well on when motion is small);
* visibility accuracy: predicted visibility (in front, inside, not behind the predicted
  scene at that time, seen by the true camera at that time after scale alignment) against
  the true visibility.

Baselines in the same table: zero motion (every query keeps its true frame-0 3D position),
object translation (an oracle: every query moves with its object's true centre, without the
object's turning or squash and stretch; it shows how much of the motion is translation) and
the untrained network of the same configuration.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from tracefield import curves
from tracefield.data.synthetic import EVAL_SEED_BASE, QUERY_STRIDE, Scene, SceneConfig, project_to_cameras, render_scene, seen_by_cameras
from tracefield.geometry.camera import Camera, Intrinsics
from tracefield.geometry.occlusion import RELATIVE_TOLERANCE
from tracefield.io.preprocess import to_network_input
from tracefield.model.network import TraceAnything

log = logging.getLogger(__name__)

THRESHOLDS = (1, 2, 4, 8, 16)


@dataclass
class Prediction:
    """Per query: 3D positions at every frame time ``[Q, T, 3]`` and each frame's own points ``[N, H, W, 3]``."""

    tracks: np.ndarray
    own_points: np.ndarray


def _queries(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Query frame, row and column: a stride-4 grid on frame 0."""
    height, width = scene.object_ids.shape[1:]
    ys, xs = np.mgrid[QUERY_STRIDE // 2 : height : QUERY_STRIDE, QUERY_STRIDE // 2 : width : QUERY_STRIDE]
    return np.zeros(ys.size, dtype=np.int64), ys.ravel(), xs.ravel()


def predict_scene(model: TraceAnything, scene: Scene) -> Prediction:
    """The network's queries and own points, evaluated where it ran; only those come to the CPU."""
    with torch.inference_mode():
        out = model.predict(to_network_input(scene.images)[None], scene.times[None], local_head=False)
    ctrl = out["ctrl_pts3d"][0]  # [N, K, H, W, 3] float32
    f, y, x = _queries(scene)
    times = scene.times.to(ctrl.device)
    tracks = curves.evaluate(ctrl[f, :, y, x], times, dim=1)  # [Q, T, 3]
    own = curves.evaluate_each(ctrl, times)  # each frame at its true time
    return Prediction(tracks=tracks.cpu().numpy(), own_points=own.cpu().numpy())


def _true_own_points(scene: Scene) -> np.ndarray:
    """Each frame's pixels at their own time, ``[N, H, W, 3]``: what a baseline knows exactly."""
    frames = torch.arange(scene.tracks.shape[0], device=scene.tracks.device)
    return scene.tracks[frames, frames].cpu().numpy()


def zero_motion(scene: Scene) -> Prediction:
    own = _true_own_points(scene)
    f, y, x = _queries(scene)
    return Prediction(tracks=np.repeat(own[f, y, x][:, None], own.shape[0], axis=1), own_points=own)


def object_translation(scene: Scene) -> Prediction:
    """Oracle: each query moves by its object's true centre displacement since the query time; the room stays."""
    own = _true_own_points(scene)
    f, y, x = _queries(scene)
    centres = scene.centres.cpu().numpy()
    centres = np.concatenate([np.zeros((1, *centres.shape[1:]), centres.dtype), centres])  # id 0, the room, never moves
    ids = scene.object_ids[f, y, x].cpu().numpy()
    shift = centres[ids] - centres[ids, f][:, None]  # [Q, T, 3]
    return Prediction(tracks=own[f, y, x][:, None] + shift, own_points=own)


def motion_recall(uv_pred: np.ndarray, uv_true: np.ndarray, mask: np.ndarray) -> float:
    """The share of the true 2D motion a prediction carries: sum <d_pred, d_true> / sum |d_true|^2.

    ``uv_pred``, ``uv_true`` ``[Q, T, 2]`` are tracks in pixels starting at query time 0;
    d = uv[:, t] - uv[:, 0] is each one's displacement since then, and the sums run over
    the (query, time) pairs of ``mask`` ``[Q, T]`` (moving queries, where the truth is in
    view). 1: the true motion; 0: static (or moving only across the true direction); 0.5:
    half the true motion; negative: motion the wrong way. nan where nothing moves.

    It is the gain g for which g * d_true best explains d_pred in least squares, and a
    ratio of sums rather than the mean of per-pair ratios <d_pred, d_true> / |d_true|^2:
    the mean divides by the length of every pair, so pairs that barely move in the image
    (the frame right after the query, a point moving along the line of sight) would swing
    it by any amount; here each pair counts in proportion to |d_true|^2, as it does in the
    squared error of the tracks.
    """
    d_pred, d_true = uv_pred - uv_pred[:, :1], uv_true - uv_true[:, :1]
    energy = float((d_true**2).sum(-1)[mask].sum())
    return float((d_pred * d_true).sum(-1)[mask].sum() / energy) if energy > 0 else float("nan")


def scene_metrics(scene: Scene, prediction: Prediction) -> dict[str, float]:
    f, y, x = _queries(scene)  # the queries' truth alone comes to the CPU, not the whole [N, T, H, W, 3]
    truth = scene.tracks[f, :, y, x].cpu().numpy()  # [Q, T, 3]
    pred = prediction.tracks
    scale = np.median(np.linalg.norm(truth, axis=-1) / np.maximum(np.linalg.norm(pred, axis=-1), 1e-9))
    pred = pred * scale
    height, width = scene.object_ids.shape[1:]
    first = _first_camera(scene)
    uv_true, z_true = first.project(truth)
    uv_raw, _ = first.project(pred)
    uv_pred = uv_raw - uv_raw[:, :1] + uv_true[:, :1]  # the track starts at its query pixel (query time 0)
    in_view = (z_true > 1e-6) & (uv_true[..., 0] >= 0) & (uv_true[..., 0] < width) & (uv_true[..., 1] >= 0) & (uv_true[..., 1] < height)
    error2d = np.linalg.norm(uv_pred - uv_true, axis=-1)
    moving = scene.moving[f, y, x].cpu().numpy()[:, None]
    visible_true = scene.visible[f, :, y, x].cpu().numpy()
    visible_pred = _predicted_visibility(scene, pred, prediction.own_points * scale)
    return {
        "epe3d": float(np.linalg.norm(pred - truth, axis=-1).mean()),
        "epe2d": float(error2d[in_view].mean()),
        "epe2d_moving": float(error2d[in_view & moving].mean()) if (in_view & moving).any() else float("nan"),
        "motion_recall": motion_recall(uv_raw, uv_true, in_view & moving),
        "delta_avg": float(np.mean([(error2d[in_view] < t).mean() for t in THRESHOLDS])),
        "epe2d_unanchored": float(np.linalg.norm(uv_raw - uv_true, axis=-1)[in_view].mean()),
        "visibility_acc": float((visible_pred == visible_true).mean()),
    }


def _first_camera(scene: Scene) -> Camera:
    """The scene's true first camera (the world frame), in which 2D tracks are scored."""
    k = scene.intrinsics.cpu().numpy().astype(np.float64)
    pose = scene.poses[0].cpu().numpy().astype(np.float64)
    return Camera(Intrinsics(float(k[0, 0]), float(k[0, 2]), float(k[1, 2])), pose[:3, :3], pose[:3, 3])


def _predicted_visibility(scene: Scene, tracks: np.ndarray, own_points: np.ndarray) -> np.ndarray:
    """The ground truth's visibility test, with the true cameras but the predicted scene (each frame's own points)."""
    poses, intrinsics = scene.poses.cpu().double(), scene.intrinsics.cpu().double()
    own = torch.from_numpy(own_points).double().movedim(0, -2)  # [H, W, T, 3]: pixel of frame t, at time t
    depth = project_to_cameras(own, intrinsics, poses)[2].movedim(-1, 0)  # frame t's depth map [T, H, W]
    return seen_by_cameras(torch.from_numpy(tracks).double(), depth, intrinsics, poses, RELATIVE_TOLERANCE).numpy()


def evaluate(methods: dict[str, Callable[[Scene], Prediction]], scenes: int, config: SceneConfig, device: str = "cpu", progress: bool = True) -> dict[str, dict[str, float]]:
    """Mean metrics per method over ``scenes`` held-out scenes."""
    totals: dict[str, list[dict[str, float]]] = {name: [] for name in methods}
    for i in tqdm(range(scenes), desc="evaluating", unit="scene", disable=not progress or None):
        scene = render_scene(EVAL_SEED_BASE + i, config, device=device)
        for name, method in methods.items():
            totals[name].append(scene_metrics(scene, method(scene)))
    return {name: {key: float(np.nanmean([r[key] for r in rows])) for key in rows[0]} for name, rows in totals.items()}


def format_table(results: dict[str, dict[str, float]]) -> str:
    keys = ["epe3d", "epe2d", "epe2d_moving", "motion_recall", "delta_avg", "epe2d_unanchored", "visibility_acc"]
    widths = [max(12, len(k)) + 2 for k in keys]
    lines = [f"{'method':18}" + "".join(f"{k:>{w}}" for k, w in zip(keys, widths))]
    for name, metrics in results.items():
        lines.append(f"{name:18}" + "".join(f"{metrics[k]:{w}.4f}" for k, w in zip(keys, widths)))
    return "\n".join(lines)
