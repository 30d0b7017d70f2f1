"""``preview.png``: a glance at a field without opening the viewer.

Computed where the field lives (the network's GPU right after inference); only the few
rows shown come back to the host.

One row per sampled frame: the frame with its foreground tinted, the depth of each pixel's
point at that frame's own time, and how far each pixel travels over the clip. Depth and
travel share one colour scale across rows (2nd-98th percentiles) so rows compare.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw

from tracefield import curves
from tracefield.field import TraceField

TILE_WIDTH = 320
TINT = np.array([255, 64, 32], dtype=np.float32)


def field_preview(field: TraceField, rows: int = 4) -> Image.Image:
    """The contact sheet for up to ``rows`` frames picked evenly (first and last included)."""
    frames = np.unique(np.round(np.linspace(0, field.num_frames - 1, min(rows, field.num_frames))).astype(int))
    chosen = frames.tolist()
    depth = curves.evaluate_each(field.ctrl_pts[chosen], field.times[chosen])[..., 2].cpu().numpy()  # on the field's device
    ends = field.points_at(torch.tensor([0.0, 1.0]), frames=chosen)
    travel = (ends[:, 1] - ends[:, 0]).norm(dim=-1).cpu().numpy()
    masks = field.masks[chosen].cpu().numpy()
    images = field.images[chosen].cpu().numpy().astype(np.float32)
    overlay = np.where(masks[..., None], 0.55 * images + 0.45 * TINT, images)
    columns = [("frame + foreground", overlay.astype(np.uint8)), ("depth at own time", _colorize(depth, "turbo")),
               ("travel over the clip", _colorize(travel, "magma"))]
    tiles = [[_tile(col[r], f"{title} (frame {field.frames.names[i] if field.frames.names else i})" if c == 0 else title)
              for c, (title, col) in enumerate(columns)] for r, i in enumerate(frames)]
    return Image.fromarray(np.concatenate([np.concatenate(row, axis=1) for row in tiles], axis=0))


def _colorize(values: np.ndarray, cmap: str) -> np.ndarray:
    finite = values[np.isfinite(values)]
    lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
    scaled = np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1)
    return (matplotlib.colormaps[cmap](np.nan_to_num(scaled))[..., :3] * 255).astype(np.uint8)


def _tile(image: np.ndarray, label: str) -> np.ndarray:
    height = round(image.shape[0] * TILE_WIDTH / image.shape[1])
    tile = Image.fromarray(image).resize((TILE_WIDTH, height), Image.BILINEAR)
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, 0, TILE_WIDTH, 14), fill=(0, 0, 0))
    draw.text((3, 1), label, fill=(255, 255, 255))
    return np.asarray(tile)
