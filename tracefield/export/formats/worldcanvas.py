"""WorldCanvas (pPetrichor/WorldCanvas, Wan2.2 14B) condition JSON.

A JSON list: one object per track, then five metadata objects in a fixed order. Per track:
``tracking`` (81 [x, y] on the 832x480 canvas, 16 fps; [-1, -1] where the object is not in
the frame), ``tracking_vis_value`` (81 ints; occluded frames keep real coordinates with
0), ``r`` = max(mask_area * 320 // 399360, 5), ``id`` (tracks of one object share it),
``mask_cluster`` (the object's first-frame mask: COCO RLE of a Fortran-order uint8 array,
``counts`` base64-encoded) and ``text`` (the object's caption, or exactly "None" for camera
tracks, which steer the camera and stay out of the prompt).

WorldCanvas averages each latent frame's positions over pixel frames 4k-3..4k, sentinels
included, so a [-1, -1] is only written where no frame of its group is visible.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import cv2
import numpy as np

from tracefield.errors import TracefieldError
from tracefield.export.canvas import Canvas
from tracefield.export.tracks import Tracks
from tracefield.io.atomic import atomic_file

FRAMES, FPS = 81, 16.0
CAMERA_TEXT = "None"
METADATA_KEYS = ("color_map", "description_global", "description_motion_raw", "description_motion", "id_caption_map")
CAMERA_MASK_RADIUS = 20  # canvas pixels around a camera track's start


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


def write_worldcanvas(tracks: Tracks, path: Path, canvas: Canvas, captions: Mapping[int, str], prompt: str) -> Path:
    """Write the condition JSON; objects without a caption of their own get ``prompt``."""
    if tracks.xy.shape[0] != FRAMES:
        raise TracefieldError(f"WorldCanvas needs {FRAMES} frames at {FPS:g} fps, got {tracks.xy.shape[0]}; drop --frames")
    xy = canvas.map(tracks.xy)
    inside = canvas.inside(xy)
    visible = tracks.visible & inside
    ids, texts = _ids_and_texts(tracks, captions, prompt)
    masks = _encoded_masks(tracks, canvas, xy)
    entries = []
    for n, (rle, radius) in enumerate(masks):
        coords = np.where(_absent(inside[:, n], visible[:, n])[:, None], -1.0, xy[:, n])
        entries.append({
            "tracking": [[float(x), float(y)] for x, y in coords],
            "tracking_vis_value": [int(v) for v in visible[:, n]],
            "r": radius,
            "id": ids[n],
            "mask_cluster": rle,
            "text": texts[n],
        })
    captioned = {str(i): t for i, t in zip(ids, texts) if t != CAMERA_TEXT}
    entries += [
        {"color_map": {i: "red" for i in captioned}},
        {"description_global": ""},
        {"description_motion_raw": ""},
        {"description_motion": ""},
        {"id_caption_map": captioned},
    ]
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(entries))
    return path


def _ids_and_texts(tracks: Tracks, captions: Mapping[int, str], prompt: str) -> tuple[list[int], list[str]]:
    """Objects keep their ids (1..); camera tracks get ids of their own after them."""
    next_id = int(tracks.object_ids.max(initial=0)) + 1
    ids, texts = [], []
    for obj, camera in zip(tracks.object_ids, tracks.camera_tracks):
        if camera or obj == 0:
            ids.append(next_id)
            texts.append(CAMERA_TEXT)
            next_id += 1
        else:
            ids.append(int(obj))
            texts.append(captions.get(int(obj), prompt))
    if all(t == CAMERA_TEXT for t in texts) and texts:
        texts[0] = prompt  # id_caption_map needs an entry: the camera motion is the story
    return ids, texts


def _encoded_masks(tracks: Tracks, canvas: Canvas, xy: np.ndarray) -> list[tuple[dict, int]]:
    """Each track's (RLE mask, r): its object's first-frame mask, or for camera tracks a disk
    around the start point clear of every object. Objects are encoded once; disks are drawn
    into one reused Fortran-order buffer, which is what COCO RLE encodes without a copy."""
    objects = {obj: canvas.image(mask.astype(np.uint8) * 255) > 127 for obj, mask in tracks.object_masks.items()}
    free = np.ones((canvas.height, canvas.width), bool, order="F")
    for mask in objects.values():
        free &= ~mask
    encoded_objects = {obj: (encode_mask(mask), radius_for(mask)) for obj, mask in objects.items()}
    disk = np.zeros((canvas.height, canvas.width), np.uint8, order="F")
    out = []
    for n, obj in enumerate(tracks.object_ids):
        if not tracks.camera_tracks[n] and int(obj) in encoded_objects:
            out.append(encoded_objects[int(obj)])
            continue
        disk.fill(0)
        x, y = (int(round(v)) for v in xy[0, n])
        cv2.circle(disk.T, (y, x), CAMERA_MASK_RADIUS, 1, -1)  # the transpose is C-ordered: swap x and y
        np.logical_and(disk, free, out=disk, casting="unsafe")
        out.append((encode_mask(disk), radius_for(disk)))
    return out


def _absent(inside: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Frames to write as [-1, -1]: off-canvas and no visible frame in the same latent group."""
    groups = np.concatenate([[0], (np.arange(1, FRAMES) + 3) // 4])  # frame 0 alone, then 1-4, 5-8, ...
    group_visible = np.zeros(groups.max() + 1, bool)
    np.logical_or.at(group_visible, groups, visible)
    return ~inside & ~group_visible[groups]


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
