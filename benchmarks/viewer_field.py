"""A synthetic trajectory field shaped like the viewer issue's reference: N frames of 512x288,
K = 10 control points, about 20% moving pixels, a panning camera.

The background is a room (back wall and floor) seen by a camera that slides sideways; the
foreground is an ellipse region whose points swing along curved paths; confidences fall
off towards the image border and are low on a few speckles, as real fields do. Colours come
from a real clip in ``../shared/data/scenes`` when it is there (else a pattern). Curves are
written directly as control points, in float32, frame by frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tracefield.field import FrameInfo, TraceField
from tracefield.io.preprocess import Preprocess

SCENES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scenes"
FOCAL_FRACTION = 0.9  # focal length in widths


def make_field(frames: int = 30, height: int = 288, width: int = 512, num_ctrl: int = 10, moving: float = 0.2, seed: int = 0) -> TraceField:
    rng = np.random.default_rng(seed)
    focal = FOCAL_FRACTION * width
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    rays = np.stack([(xs - width / 2) / focal, (ys - height / 2) / focal, np.ones_like(xs)], axis=-1)
    ctrl = torch.empty((frames, num_ctrl, height, width, 3), dtype=torch.float16)
    conf = torch.empty((frames, num_ctrl, height, width), dtype=torch.float32)
    masks = np.zeros((frames, height, width), dtype=bool)
    knots_t = np.linspace(0.0, 1.0, num_ctrl, dtype=np.float32)
    radius = np.sqrt(moving * height * width / np.pi)
    for i in range(frames):
        t = i / max(frames - 1, 1)
        centre = np.array([0.6 * t, 0.0, 0.0], np.float32)  # camera slides right
        depth = np.where(ys > 0.62 * height, 1.8 * height * 0.38 / np.maximum(ys - height / 2, 1.0), 3.0).astype(np.float32)
        points = centre + rays * depth[..., None]
        cx, cy = width * (0.35 + 0.3 * t), height * 0.5
        blob = ((xs - cx) / (1.3 * radius)) ** 2 + ((ys - cy) / (0.77 * radius)) ** 2 <= 1.0
        masks[i] = blob
        points[blob] = centre + rays[blob] * 1.6
        for k, tk in enumerate(knots_t):
            offset = np.array([0.6 * (tk - t), 0.15 * np.sin(2 * np.pi * (tk - t)), 0.1 * (tk - t)], np.float32)
            ctrl[i, k] = torch.from_numpy(points + blob[..., None] * offset)
        edge = np.minimum(np.minimum(xs, width - 1 - xs) / width, np.minimum(ys, height - 1 - ys) / height)
        base = 1.0 + 20.0 * np.clip(edge * 8, 0, 1) + rng.random((height, width), dtype=np.float32)
        conf[i] = torch.from_numpy(base * np.where(rng.random((height, width)) < 0.05, 0.2, 1.0).astype(np.float32))
    return TraceField(
        ctrl_pts=ctrl,
        ctrl_conf=conf,
        times=torch.linspace(0.0, 1.0, frames),
        time_steps=torch.linspace(0.0, 1.0, frames),
        images=torch.from_numpy(_colours(frames, height, width)),
        fg_masks=torch.from_numpy(masks),
        transform=Preprocess.identity(height, width),
        frames=FrameInfo(source="synthetic viewer benchmark", names=[f"{i:03d}" for i in range(frames)], indices=list(range(frames)), fps=10.0),
    )


def _colours(frames: int, height: int, width: int) -> np.ndarray:
    """Frames of a real clip (looped and resized) or, without ../shared, a colour pattern."""
    clip = sorted((SCENES / "elephant").glob("*.jpg")) + sorted((SCENES / "elephant").glob("*.png")) if SCENES.is_dir() else []
    if clip:
        return np.stack([np.asarray(Image.open(clip[i % len(clip)]).convert("RGB").resize((width, height))) for i in range(frames)])
    ys, xs = np.mgrid[0:height, 0:width]
    pattern = np.stack([(xs * 255 // width), (ys * 255 // height), ((xs + ys) % 64) * 4], axis=-1).astype(np.uint8)
    return np.repeat(pattern[None], frames, axis=0)


def write_field(path: Path, **kwargs) -> Path:
    """Make a field and save it as ``path/field.safetensors`` (a scene folder)."""
    path.mkdir(parents=True, exist_ok=True)
    return make_field(**kwargs).save(path / "field.safetensors")
