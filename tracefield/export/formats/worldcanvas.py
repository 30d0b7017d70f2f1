"""WorldCanvas (pPetrichor/WorldCanvas, Wan2.2 14B) condition JSON.

A JSON list: one object per track, then five metadata objects in a fixed order. Per track:
``tracking`` (81 [x, y] on the 832x480 canvas, 16 fps), ``tracking_vis_value`` (81 ints),
``r`` = max(mask_area * 320 // 399360, 5), ``id`` (tracks of one object share it),
``mask_cluster`` (the object's first-frame mask: COCO RLE of a Fortran-order uint8 array,
``counts`` base64-encoded) and ``text``.

What WorldCanvas' inference does with a file (``load_json`` and its pipeline), and what we
write for it:

* the prompt is built ONLY from ``id_caption_map``, one line per id, and ``load_json``
  returns nothing when that map is empty. So an object gets a caption only where the user
  gave one (``--caption ID=TEXT``); every other object, and every camera track (each an id
  of its own after the objects), has text "None" and stays out of ``id_caption_map`` and
  ``color_map``, as the editor writes them. At least one caption is required.
* a track whose frame-0 point is off the canvas labels its whole id "appears" (the object
  shows up later) and gets a constant feature and a fixed 120-px box instead of its
  first-frame appearance; a track on the canvas but hidden at frame 0 still has its feature
  read there (from whatever covers it). Our tracks start at their picks on the first image,
  so both would be misuse: such tracks are left out and counted.
* occluded (or unconfident) frames keep real coordinates with ``tracking_vis_value`` 0;
  frames off the canvas are ``[-1, -1]`` where no frame of their latent group (frames
  4k-3..4k, whose mean position the model reads) is visible, and keep real coordinates
  otherwise, so a sentinel never enters the mean of a visible latent frame.
* visibility is read at frames 0, 4, ..., 80 only (threshold 0.8; 0.5 for masks).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from tracefield.errors import TracefieldError
from tracefield.export.canvas import inside
from tracefield.export.conditions import Conditions, ConsumerView, Written, keep_startable
from tracefield.io.atomic import atomic_file

FRAMES, FPS = 81, 16.0
WIDTH, HEIGHT = 832, 480  # fixed in WorldCanvas' inference script
CAMERA_TEXT = "None"
METADATA_KEYS = ("color_map", "description_global", "description_motion_raw", "description_motion", "id_caption_map")
DISK_RADIUS = 20  # canvas pixels around the start of a track with no object mask
THRESHOLD = 0.8  # WorldCanvas' visibility threshold for the Gaussian / VAE features (its masks use 0.5)
POINT_RADIUS = 15  # its fixed point radius with the default if_vr = 0


def parse_captions(items: Sequence[str], what: str = "--caption") -> dict[int, str]:
    """``["1=the dog runs", ...]`` -> {1: "the dog runs"}; a one-line error names a malformed item."""
    captions = {}
    for item in items:
        key, sep, text = item.partition("=")
        text = " ".join(text.split())
        if not sep or not key.strip().isdigit() or not text or text == CAMERA_TEXT:
            raise TracefieldError(f"{what} {item!r}: expected ID=TEXT, e.g. 1='the dog runs left'")
        captions[int(key)] = text
    return captions


def encode_mask(mask: np.ndarray) -> dict:
    from pycocotools import mask as coco_mask  # imported here: only WorldCanvas files need it

    rle = coco_mask.encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(v) for v in rle["size"]], "counts": base64.b64encode(rle["counts"]).decode("ascii")}


def decode_mask(entry: Mapping) -> np.ndarray:
    from pycocotools import mask as coco_mask

    rle = {"size": list(entry["size"]), "counts": base64.b64decode(entry["counts"].encode("ascii"))}
    return coco_mask.decode(rle).astype(bool)


def radius_for(mask: np.ndarray) -> int:
    return max(int(np.count_nonzero(mask)) * 320 // 399360, 5)


def write_worldcanvas(conditions: Conditions, path: Path, captions: Mapping[int, str]) -> Written:
    """Write the condition JSON; only objects with a caption enter the prompt (see the module docstring)."""
    if conditions.xy.shape[0] != FRAMES:
        raise TracefieldError(f"WorldCanvas needs {FRAMES} frames at {FPS:g} fps, got {conditions.xy.shape[0]}; drop --frames")
    if conditions.size != (WIDTH, HEIGHT):
        raise TracefieldError(f"--canvas {conditions.size[0]}x{conditions.size[1]}: WorldCanvas works on {WIDTH}x{HEIGHT} only; drop --canvas")
    kept, dropped = keep_startable(conditions)
    if not kept.num_tracks:
        raise TracefieldError(f"{path}: every selected track is hidden or off the canvas on the first frame; drop --start or pick other pixels")
    objects = sorted({int(i) for i, cam in zip(kept.object_ids, kept.camera_tracks) if i > 0 and not cam})
    unknown = sorted(set(captions) - set(objects))
    if unknown or not captions:
        listed = ", ".join(map(str, objects)) or "none"
        problem = f"--caption {unknown[0]}=...: no object {unknown[0]} among the exported tracks" if unknown else "no --caption given"
        raise TracefieldError(f"{path}: {problem}; WorldCanvas builds its prompt only from object captions "
                              f"(objects: {listed}), e.g. --caption {objects[0] if objects else 1}='the dog runs left'")
    ids, texts = _ids_and_texts(kept, captions)
    visible = kept.visible
    masks = _encoded_masks(kept)
    entries = []
    stored = np.where(_absent(kept.xy, visible)[..., None], -1.0, kept.xy)
    for n, (rle, radius) in enumerate(masks):
        entries.append({
            "tracking": [[float(x), float(y)] for x, y in stored[:, n]],
            "tracking_vis_value": [int(v) for v in visible[:, n]],
            "r": radius,
            "id": ids[n],
            "mask_cluster": rle,
            "text": texts[n],
        })
    captioned = {str(obj): captions[obj] for obj in objects if obj in captions}
    entries += [
        {"color_map": {i: "red" for i in captioned}},
        {"description_global": ""},
        {"description_motion_raw": ""},
        {"description_motion": ""},
        {"id_caption_map": captioned},
    ]
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(entries))
    return Written([path], stored, visible.copy(), dropped)


def _ids_and_texts(conditions: Conditions, captions: Mapping[int, str]) -> tuple[list[int], list[str]]:
    """Objects keep their ids (1..) and get their caption or "None"; camera tracks get ids of their own after them."""
    next_id = int(conditions.object_ids.max(initial=0)) + 1
    ids, texts = [], []
    for obj, camera in zip(conditions.object_ids, conditions.camera_tracks):
        if camera or obj == 0:
            ids.append(next_id)
            texts.append(CAMERA_TEXT)
            next_id += 1
        else:
            ids.append(int(obj))
            texts.append(captions.get(int(obj), CAMERA_TEXT))
    return ids, texts


def _encoded_masks(conditions: Conditions) -> list[tuple[dict, int]]:
    """Each track's (RLE mask, r): its object's first-frame mask, or a disk around its start (for camera
    tracks, clear of every object). Objects are encoded once; disks are drawn into one reused
    Fortran-order buffer, which is what COCO RLE encodes without a copy."""
    width, height = conditions.size
    free = np.ones((height, width), bool, order="F")
    for mask in conditions.masks.values():
        free &= ~mask
    encoded = {obj: (encode_mask(mask), radius_for(mask)) for obj, mask in conditions.masks.items()}
    disk = np.zeros((height, width), np.uint8, order="F")
    out = []
    for n, obj in enumerate(conditions.object_ids):
        camera = bool(conditions.camera_tracks[n]) or obj == 0
        if not camera and int(obj) in encoded:
            out.append(encoded[int(obj)])
            continue
        disk.fill(0)
        x, y = (int(np.floor(v)) for v in conditions.xy[0, n])
        cv2.circle(disk.T, (y, x), DISK_RADIUS, 1, -1)  # the transpose is C-ordered: swap x and y
        if camera:
            np.logical_and(disk, free, out=disk, casting="unsafe")
        disk[min(max(y, 0), height - 1), min(max(x, 0), width - 1)] = 1  # the start pixel itself stays in its mask
        out.append((encode_mask(disk), radius_for(disk)))
    return out


def _absent(xy: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """[T, N] frames to write as [-1, -1]: off the canvas, and no visible frame in the same latent group."""
    groups = np.concatenate([[0], (np.arange(1, FRAMES) + 3) // 4])  # frame 0 alone, then 1-4, 5-8, ...
    group_visible = np.zeros((groups.max() + 1, xy.shape[1]), bool)
    np.logical_or.at(group_visible, groups, visible)
    return ~inside(xy, WIDTH, HEIGHT) & ~group_visible[groups]


@dataclass
class WorldCanvasConditions:
    xy: np.ndarray  # [81, N, 2] canvas pixels ([-1, -1] where absent)
    visible: np.ndarray  # [81, N] bool
    ids: list[int]
    radii: list[float]
    texts: list[str]
    masks: list[np.ndarray]  # bool [480, 832] each
    metadata: dict


def read_worldcanvas(path: str | Path) -> WorldCanvasConditions:
    """Read and check a WorldCanvas JSON (ours or its editor's)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TracefieldError(f"{path}: not a readable JSON file ({exc}); export it again") from exc
    if not isinstance(data, list) or len(data) < len(METADATA_KEYS):
        raise TracefieldError(f"{path}: a WorldCanvas file is a list of tracks followed by {len(METADATA_KEYS)} metadata objects")
    tracks, metadata = data[: -len(METADATA_KEYS)], data[-len(METADATA_KEYS) :]
    keys = tuple(next(iter(m)) if isinstance(m, dict) and len(m) == 1 else None for m in metadata)
    if keys != METADATA_KEYS:
        raise TracefieldError(f"{path}: metadata objects are {list(keys)}, expected {list(METADATA_KEYS)} in that order")
    for n, track in enumerate(tracks):
        missing = {"tracking", "tracking_vis_value", "r", "id", "mask_cluster", "text"} - set(track)
        if missing or len(track["tracking"]) != FRAMES or len(track["tracking_vis_value"]) != FRAMES:
            raise TracefieldError(f"{path}: track {n} lacks {sorted(missing)} or does not have {FRAMES} frames")
    return WorldCanvasConditions(
        xy=np.asarray([t["tracking"] for t in tracks], dtype=np.float64).transpose(1, 0, 2).reshape(FRAMES, len(tracks), 2),
        visible=np.asarray([t["tracking_vis_value"] for t in tracks], dtype=np.int64).T.reshape(FRAMES, len(tracks)) > 0,
        ids=[int(t["id"]) for t in tracks],
        radii=[float(t["r"]) for t in tracks],
        texts=[str(t["text"]) for t in tracks],
        masks=[decode_mask(t["mask_cluster"]) for t in tracks],
        metadata={next(iter(m)): m[next(iter(m))] for m in metadata},
    )


@dataclass
class WorldCanvasView(ConsumerView):
    """:class:`ConsumerView` at WorldCanvas' 21 latent frames, plus what its ``load_json`` makes of the text."""

    prompt: str = ""
    appears: set[str] = field(default_factory=set)  # ids labelled "appears" (a track starts off the canvas)
    ids: list[int] = field(default_factory=list)


def worldcanvas_view(path: str | Path) -> WorldCanvasView:
    """WorldCanvas' ``load_json`` and its trajectory unit on a file: the prompt, the "appears" ids, each latent
    frame's position (the mean of pixel frames 4k-3..4k, sentinels included) and whether it is used there
    (``tracking_vis_value`` at frame 4k above 0.8, box inside the canvas), and where each track's feature is read
    (its frame-0 point; NaN for a track that starts off the canvas: a constant feature)."""
    path = Path(path)
    data = json.loads(path.read_text())
    if path.name.endswith("_crop.json"):
        data = data[:-1]
    captions = data[-1].get("id_caption_map") if isinstance(data[-1], dict) else None
    if not captions:
        raise TracefieldError(f"{path}: no id_caption_map entries; WorldCanvas' load_json returns nothing for this file")
    tracks = [t for t in data if isinstance(t, dict) and "tracking" in t]
    points = np.asarray([t["tracking"] for t in tracks], dtype=np.float64).reshape(len(tracks), FRAMES, 2)
    vis = np.asarray([t["tracking_vis_value"] for t in tracks], dtype=np.float64).reshape(len(tracks), FRAMES)
    off = ~inside(points[:, 0], WIDTH, HEIGHT)
    appears = {str(t["id"]) for t, o in zip(tracks, off) if o}
    lines = [f"Object {n + 1}{' appears' if tid in appears else ''}: " + re.sub(r"\s+", " ", text).strip()
             for n, (tid, text) in enumerate(captions.items())]
    frames = np.arange(0, FRAMES, 4)
    means = np.stack([points[:, max(j - 3, 0) if j else 0 : j + 1].mean(axis=1) for j in frames], axis=1)  # [N, 21, 2]
    box = ((np.minimum(means + POINT_RADIUS, [WIDTH - 1, HEIGHT - 1]) - np.maximum(means - POINT_RADIUS, 0)) >= 1).all(-1)
    start = np.where(off[:, None], np.nan, points[:, 0])
    return WorldCanvasView(
        frames=frames, xy=means.transpose(1, 0, 2), used=((vis[:, frames] > THRESHOLD) & box).T, size=(WIDTH, HEIGHT), start=start,
        prompt="\n".join(lines), appears=appears, ids=[int(t["id"]) for t in tracks],
    )
