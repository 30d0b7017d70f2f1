"""The bundled synthetic clip as a perfect trajectory field, with its ground truth.

``examples/synthetic`` keeps its scene's seed and config; re-rendered at a quarter of its
256x448 size (the same 3D scene: positions, cameras and times do not depend on the
resolution, and the intrinsics scale exactly), every pixel of every frame has its true 3D
trajectory and visibility. Fitting K = 16 control points per pixel to the 16 true positions
interpolates them exactly (about 1e-3 world units between frames), so the field's curves
ARE the truth at the clip's frames. The field's preprocessing maps its 64x112 pixels onto
the bundled 256x448 frames, so exports read the real PNGs and come out in their pixels.

Export tests use it to check what each consumer would read against the truth rather than
against our own writer: positions (true 3D points through the true cameras), visibility
(the renderer's own test) and the picked pixels.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import numpy as np
import torch

from tracefield import curves
from tracefield.data.synthetic import SceneConfig, load_ground_truth, render_scene, seen_by_cameras
from tracefield.field import FrameInfo, TraceField
from tracefield.io.preprocess import Preprocess
from tracefield.paths import REPO_ROOT

CLIP = REPO_ROOT / "examples" / "synthetic"
SHRINK = 2
NUM_CTRL = 16


@dataclass
class Truth:
    field: TraceField
    tracks: np.ndarray  # [N, T, h, w, 3] world position at frame time t of pixel (x, y) of frame n (field pixels)
    depth: np.ndarray  # [T, h, w] what each frame's camera sees
    intrinsics: np.ndarray  # [3, 3] of the field's pixels
    poses: np.ndarray  # [T, 4, 4] world -> camera t
    times: np.ndarray  # [T]
    object_ids: np.ndarray  # [N, h, w]

    def project(self, points: np.ndarray, camera: int) -> np.ndarray:
        """World points ``[..., 3]`` through true camera ``camera`` -> original-frame pixels (pixel-centre)."""
        pose = self.poses[camera]
        cam = points @ pose[:3, :3].T + pose[:3, 3]
        k = self.intrinsics
        uv = np.stack([k[0, 0] * cam[..., 0] / cam[..., 2] + k[0, 2], k[1, 1] * cam[..., 1] / cam[..., 2] + k[1, 2]], axis=-1)
        return self.field.transform.to_original(uv)

    @functools.cached_property
    def visible(self) -> "_Visible":
        """``visible[n, t, y, x]``: pixel (x, y) of frame n seen by camera t (the renderer's test, per frame on first use)."""
        return _Visible(self)


class _Visible:
    def __init__(self, truth: Truth) -> None:
        self.truth, self.frames = truth, {}

    def __getitem__(self, index):
        frame, rest = index[0], index[1:]
        if frame not in self.frames:
            t = self.truth
            points = torch.from_numpy(t.tracks[frame]).movedim(0, -2)  # [h, w, T, 3]
            seen = seen_by_cameras(points, torch.from_numpy(t.depth), torch.from_numpy(t.intrinsics), torch.from_numpy(t.poses))
            self.frames[frame] = seen.movedim(-1, 0).numpy()  # [T, h, w]
        return self.frames[frame][rest]


@functools.lru_cache(maxsize=1)
def bundled_truth() -> Truth:
    tensors, meta = load_ground_truth(CLIP)
    config = SceneConfig(**json.loads(meta["config"]))
    full_hw = (config.height, config.width)
    config.height, config.width = config.height // SHRINK, config.width // SHRINK
    scene = render_scene(int(meta["seed"]), config, camera_motion=meta["camera_motion"], visibility=False)
    assert torch.allclose(scene.poses, tensors["poses"]) and torch.allclose(scene.times, tensors["times"])
    n = len(scene.times)
    basis = curves.basis(scene.times.double(), NUM_CTRL)  # [T, K]
    flat = scene.tracks.double().movedim(1, 0).reshape(n, -1)
    ctrl = torch.linalg.lstsq(basis, flat).solution.reshape(NUM_CTRL, n, *scene.tracks.shape[2:]).movedim(0, 1)
    transform = Preprocess(original_hw=full_hw, rotated=False, resized_hw=(config.height, config.width), model_hw=(config.height, config.width))
    field = TraceField(
        ctrl_pts=ctrl.float(),
        ctrl_conf=torch.full((n, NUM_CTRL, config.height, config.width), 2.0),
        times=scene.times.clone(),
        time_steps=scene.times.clone(),
        images=scene.images.clone(),
        fg_masks=scene.object_ids > 0,
        transform=transform,
        frames=FrameInfo(source=str(CLIP), names=[f"{i:03d}.png" for i in range(n)], indices=list(range(n)), fps=16.0),
    )
    return Truth(field, scene.tracks.numpy().astype(np.float64), scene.depth.numpy().astype(np.float64), scene.intrinsics.numpy().astype(np.float64),
                 scene.poses.numpy().astype(np.float64), scene.times.numpy().astype(np.float64), scene.object_ids.numpy())
