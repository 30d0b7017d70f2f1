"""Which trajectories to export: seeds on one frame, grouped into objects.

Strategies (combinable): the user's own pixels; per-object picks (connected regions of
the foreground mask, a few well-spread tracks each); a grid or farthest-point sample over
the foreground, background or whole frame; and a few background tracks that let a
generator follow the camera. Low-confidence pixels are never picked, nor a region's
boundary pixels (eroded by one pixel: they mix an object's depth with what is behind it,
and a track must start inside its object's mask). Spread uses farthest point sampling in
the image, so tracks cover an object instead of clumping.

The viewer's picks (whole objects or single pixels, in network pixels) become seeds through
:func:`seeds_from_picks`: each pick keeps its identity (one object id, its own mask, tracks
spread over it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence

import cv2
import numpy as np
import torch

from tracefield.errors import TracefieldError
from tracefield.export import REGIONS, STRATEGIES
from tracefield.field import TraceField
from tracefield.masks import mask_objects

log = logging.getLogger(__name__)

MAX_CANDIDATES = 20_000  # farthest point sampling runs on at most this many pixels


@dataclass
class SelectionOptions:
    strategy: str = "objects"
    frame: int = 0  # the frame the tracks start on
    pixels: Sequence[tuple[float, float]] = ()  # user pixels, ORIGINAL image coordinates (any strategy)
    region: str = "foreground"  # for grid / fps
    grid_step: int = 32  # network pixels between grid tracks
    max_tracks: int = 200
    per_object: int = 8
    background: int = 6  # camera-control tracks from the background (0: none)
    min_object_area: int = 100  # network pixels; smaller foreground islands are noise
    conf_percentile: float = 10.0  # pixels below this confidence percentile are not picked


@dataclass
class Seeds:
    """Where the tracks start: network-frame pixels on one frame, with an object id each."""

    frame: int
    pixels: np.ndarray  # [N, 2] (x, y), network pixels
    object_ids: np.ndarray  # [N] int; 0 for background / camera tracks
    camera: np.ndarray  # [N] bool: background tracks meant for camera control
    object_masks: dict[int, np.ndarray] = field(default_factory=dict)  # id -> bool [H, W] on the seed frame

    def __len__(self) -> int:
        return len(self.pixels)


def select(field: TraceField, options: SelectionOptions, usable: Optional[np.ndarray] = None) -> Seeds:
    """Seeds for ``options``; raises a one-line error when nothing can be selected.

    ``usable`` (bool ``[H, W]``, network pixels): where automatic picks may fall, e.g. the
    part of the frame a consumer's canvas keeps (:func:`tracefield.export.images.usable_pixels`).
    The user's own pixels are taken as given.
    """
    _check(field, options)
    frame = options.frame
    mask = field.masks[frame].numpy().astype(bool)
    usable = np.ones(field.hw, bool) if usable is None else usable
    confident = _confident(field, frame, options.conf_percentile)
    objects = mask_objects(mask, options.min_object_area)
    parts: list[tuple[np.ndarray, Optional[np.ndarray], bool]] = []
    if options.pixels:
        parts.append(_user_pixels(field, options.pixels, objects))
    if options.strategy == "objects":
        parts.extend(_per_object(objects, usable, confident, options.per_object))
    elif options.strategy in ("grid", "fps"):
        region = _interior(_region(mask, options.region) & usable) & confident
        pick = _grid(region, options.grid_step) if options.strategy == "grid" else _fps(region, options.max_tracks)
        parts.append((pick, _ids_at(objects, pick), False))
    if options.background:
        parts.append(_background(~mask & usable, confident, options.background))
    if options.strategy == "objects" and not objects.any() and not options.pixels:
        raise TracefieldError(_nothing_selected(field, options, mask))
    masks = {obj: objects == obj for obj in range(1, int(objects.max()) + 1)}
    seeds = _assemble(frame, parts, masks, options.max_tracks, user_first=bool(options.pixels))
    if not len(seeds):
        raise TracefieldError(_nothing_selected(field, options, mask))
    log.info("selected %d tracks on frame %d (%d objects, %d camera tracks)", len(seeds), frame,
             len(set(seeds.object_ids[~seeds.camera]) - {0}), int(seeds.camera.sum()))
    return seeds


def seeds_from_picks(field: TraceField, frame: int, picks: Sequence[np.ndarray], per_object: int = 8, background: int = 6,
                     conf_percentile: float = 10.0, min_object_area: int = 100, usable: Optional[np.ndarray] = None) -> Seeds:
    """The viewer's picks on ``frame`` -> seeds that keep each pick's identity.

    ``picks``: one array per pick of flat network-pixel indices of the frame (row-major,
    ``y * W + x``), as the viewer stores them, so no coordinates change hands. A pick of
    several pixels is a whole object: its own id, its pixels as its mask, ``per_object``
    tracks spread over its interior. A pick of one pixel exports exactly that pixel, with
    its own id and, for its mask, the foreground region under it (if any). Ids are 1, 2, ...
    in pick order; ``background`` camera tracks (id 0) follow. ``usable`` as in :func:`select`
    (a single picked pixel is taken as given).
    """
    if not 0 <= frame < field.num_frames:
        raise TracefieldError(f"picks on frame {frame}: the field has frames 0..{field.num_frames - 1}")
    height, width = field.hw
    mask = field.masks[frame].numpy().astype(bool)
    usable = np.ones(field.hw, bool) if usable is None else usable
    confident = _confident(field, frame, conf_percentile)
    regions = mask_objects(mask, min_object_area)
    parts: list[tuple[np.ndarray, Optional[np.ndarray], bool]] = []
    masks: dict[int, np.ndarray] = {}
    for obj, pick in enumerate(picks, start=1):
        flat = np.unique(np.asarray(pick, dtype=np.int64).reshape(-1))
        if not len(flat) or flat.min() < 0 or flat.max() >= height * width:
            raise TracefieldError(f"pick {obj}: pixel indices must lie in the {width}x{height} network frame; pick again")
        if len(flat) == 1:
            xy = np.array([[flat[0] % width, flat[0] // width]], dtype=np.float64)
            region = regions == regions.flat[flat[0]] if regions.flat[flat[0]] else None
        else:
            region = np.zeros(height * width, bool)
            region[flat] = True
            region = region.reshape(height, width)
            xy = _spread_over(region & usable, confident, per_object)
        if region is not None:
            masks[obj] = region
        parts.append((xy, np.full(len(xy), obj), False))
    if background:
        parts.append(_background(~mask & usable, confident, background))
    seeds = _assemble(frame, parts, masks, max_tracks=len(picks) * max(per_object, 1) + background, user_first=False)
    if not len(seeds):
        raise TracefieldError(f"frame {frame}: nothing picked and no confident background; pick a pixel or an object")
    log.info("picks -> %d tracks on frame %d (%d picks, %d camera tracks)", len(seeds), frame, len(picks), int(seeds.camera.sum()))
    return seeds


def _check(field: TraceField, options: SelectionOptions) -> None:
    if options.strategy not in STRATEGIES:
        raise TracefieldError(f"--select {options.strategy}: unknown; use one of {', '.join(STRATEGIES)}")
    if options.region not in REGIONS:
        raise TracefieldError(f"--region {options.region}: unknown; use one of {', '.join(REGIONS)}")
    if not 0 <= options.frame < field.num_frames:
        raise TracefieldError(f"--frame {options.frame}: the field has frames 0..{field.num_frames - 1}")
    if options.max_tracks < 1:
        raise TracefieldError(f"--max-tracks {options.max_tracks}: ask for at least one track")
    if options.strategy == "pixels" and not options.pixels:
        raise TracefieldError("--select pixels needs --pixels 'x,y x,y ...' (original image coordinates)")


def _confident(field: TraceField, frame: int, percentile: float) -> np.ndarray:
    conf = field.conf_at_own_time([frame])[0].numpy()
    finite = np.isfinite(conf)
    threshold = np.percentile(conf[finite], percentile) if finite.any() else np.inf
    return finite & (conf >= threshold)


def _region(mask: np.ndarray, region: str) -> np.ndarray:
    return {"foreground": mask, "background": ~mask, "all": np.ones_like(mask)}[region]


def _ids_at(objects: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    xi = np.clip(np.round(pixels[:, 0]).astype(int), 0, objects.shape[1] - 1)
    yi = np.clip(np.round(pixels[:, 1]).astype(int), 0, objects.shape[0] - 1)
    return objects[yi, xi]


def _user_pixels(field: TraceField, pixels: Sequence[tuple[float, float]], objects: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    model = field.transform.to_model(np.asarray(pixels, dtype=np.float64).reshape(-1, 2))
    height, width = field.hw
    outside = (model[:, 0] < -0.5) | (model[:, 0] > width - 0.5) | (model[:, 1] < -0.5) | (model[:, 1] > height - 0.5)
    if outside.any():
        bad = np.asarray(pixels)[outside][0]
        h0, w0 = field.transform.original_hw
        raise TracefieldError(
            f"--pixels {bad[0]:g},{bad[1]:g}: outside the part of the {w0}x{h0} frame the network saw; pick a pixel inside it"
        )
    model = np.clip(model, 0, [width - 1, height - 1])
    return model, _ids_at(objects, model), False


def _per_object(objects: np.ndarray, usable: np.ndarray, confident: np.ndarray, per_object: int) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    parts = []
    for obj in range(1, int(objects.max()) + 1):
        pick = _spread_over((objects == obj) & usable, confident, per_object)
        parts.append((pick, np.full(len(pick), obj), False))
    return parts


def _spread_over(mask: np.ndarray, confident: np.ndarray, count: int) -> np.ndarray:
    """``count`` well-spread pixels of a mask's confident interior (its interior, or the mask, when that is empty)."""
    for region in (_interior(mask) & confident, _interior(mask), mask):
        if region.any():
            return _fps(region, count)
    return np.zeros((0, 2))


def _background(region: np.ndarray, confident: np.ndarray, count: int) -> tuple[np.ndarray, None, bool]:
    """Camera-control tracks: spread over the confident background (eroded: clear of every object's edge)."""
    return _spread_over(region, confident, count), None, True


def _interior(region: np.ndarray) -> np.ndarray:
    """The region less its boundary pixels (a 3x3 erosion)."""
    return cv2.erode(region.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def _grid(region: np.ndarray, step: int) -> np.ndarray:
    ys, xs = np.mgrid[step // 2 : region.shape[0] : step, step // 2 : region.shape[1] : step]
    keep = region[ys, xs]
    return np.stack([xs[keep], ys[keep]], axis=-1).astype(np.float64)


def _fps(region: np.ndarray, count: int) -> np.ndarray:
    """Farthest point sampling of ``count`` pixels of ``region``, starting nearest its centroid."""
    ys, xs = np.nonzero(region)
    if count <= 0 or not len(xs):
        return np.zeros((0, 2))
    step = len(xs) // MAX_CANDIDATES + 1
    xs, ys = xs[::step].astype(np.float64), ys[::step].astype(np.float64)
    chosen = [int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))]
    distance = (xs - xs[chosen[0]]) ** 2 + (ys - ys[chosen[0]]) ** 2
    for _ in range(min(count, len(xs)) - 1):
        chosen.append(int(np.argmax(distance)))
        np.minimum(distance, (xs - xs[chosen[-1]]) ** 2 + (ys - ys[chosen[-1]]) ** 2, out=distance)
    return np.stack([xs[chosen], ys[chosen]], axis=-1)


def _assemble(frame: int, parts, masks: dict[int, np.ndarray], max_tracks: int, user_first: bool) -> Seeds:
    """Concatenate the parts, drop duplicates, cap at ``max_tracks``.

    The user's pixels (the first part when ``user_first``) are kept before anything else;
    object and camera tracks then share what is left of the cap in proportion, each
    thinned evenly, so a cap never drops a whole kind.
    """
    pixels, ids, camera, user = [], [], [], []
    for n, (pick, pick_ids, is_camera) in enumerate(parts):
        pixels.append(pick)
        ids.append(np.zeros(len(pick), dtype=np.int64) if pick_ids is None else np.asarray(pick_ids, dtype=np.int64))
        camera.append(np.full(len(pick), is_camera))
        user.append(np.full(len(pick), user_first and n == 0))
    if not pixels:
        return Seeds(frame, np.zeros((0, 2)), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
    pixels, ids, camera, user = map(np.concatenate, (pixels, ids, camera, user))
    _, first = np.unique(np.round(pixels, 3), axis=0, return_index=True)
    keep = _cap(np.sort(first), camera, user, max_tracks)
    pixels, ids, camera = pixels[keep], ids[keep], camera[keep]
    used = {int(obj): masks[int(obj)] for obj in np.unique(ids[~camera]) if obj > 0 and int(obj) in masks}
    return Seeds(frame, pixels, ids, camera, used)


def _cap(keep: np.ndarray, camera: np.ndarray, user: np.ndarray, max_tracks: int) -> np.ndarray:
    if len(keep) <= max_tracks:
        return keep
    chosen = keep[user[keep]][:max_tracks]
    rest = [keep[~user[keep] & ~camera[keep]], keep[~user[keep] & camera[keep]]]
    room = max_tracks - len(chosen)
    total = sum(len(g) for g in rest)
    quota = [round(room * len(g) / total) if total else 0 for g in rest]
    quota[0] = room - quota[1]
    picked = [g[np.round(np.linspace(0, len(g) - 1, q)).astype(int)] for g, q in zip(rest, quota) if q > 0 and len(g)]
    return np.sort(np.concatenate([chosen, *picked]))


def _nothing_selected(field: TraceField, options: SelectionOptions, mask: np.ndarray) -> str:
    source = field.frames.source or "the field"
    if options.strategy == "objects" and not mask.any():
        return f"{source}: frame {options.frame} has no foreground (its mask is empty); use --select grid --region background or --pixels"
    if options.strategy == "objects":
        return f"{source}: no foreground region on frame {options.frame} is larger than {options.min_object_area} pixels; lower --min-object-area or use --select fps"
    return f"{source}: no confident pixels in the {options.region} of frame {options.frame}; try --region all or a lower --conf-percentile"


def seed_curves(field: TraceField, seeds: Seeds) -> tuple[torch.Tensor, torch.Tensor]:
    """Control points ``[N, K, 3]`` and confidences ``[N, K]`` at the seeds, bilinearly interpolated."""
    ctrl = field.ctrl_pts[seeds.frame].float()  # [K, H, W, 3]
    conf = field.ctrl_conf[seeds.frame].float()  # [K, H, W]
    height, width = field.hw
    grid = torch.as_tensor(seeds.pixels, dtype=torch.float32)
    grid = torch.stack([grid[:, 0] / max(width - 1, 1), grid[:, 1] / max(height - 1, 1)], dim=-1) * 2 - 1

    def sample(maps: torch.Tensor) -> torch.Tensor:  # [K, C, H, W] -> [K, C, N]
        where = grid[None, :, None, :].expand(maps.shape[0], -1, -1, -1)
        return torch.nn.functional.grid_sample(maps, where, mode="bilinear", align_corners=True)[..., 0]

    points = sample(ctrl.permute(0, 3, 1, 2))  # [K, 3, N]
    confidence = sample(conf[:, None])[:, 0]  # [K, N]
    return points.permute(2, 0, 1), confidence.T


def parse_pixels(text: Optional[str]) -> list[tuple[float, float]]:
    """``"x,y x,y"`` (or ``;``-separated) -> list of (x, y); a one-line error names what is wrong."""
    if not text:
        return []
    pixels = []
    for item in text.replace(";", " ").split():
        try:
            x, y = (float(v) for v in item.split(","))
        except ValueError as exc:
            raise TracefieldError(f"--pixels {item!r}: expected x,y (e.g. --pixels '320,180 400,200')") from exc
        pixels.append((x, y))
    return pixels
