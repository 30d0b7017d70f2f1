"""ComfyUI's Wan track nodes: core ``WanTrackToVideo`` and ComfyUI-WanVideoWrapper's ATI nodes.

The file is the JSON string those nodes take: a list of tracks, each a list of
``{"x", "y"}`` per frame at 24 fps, in pixels of the ``width`` x ``height`` canvas (832x480
by default; we write the start image at that size, so the nodes' centre crop is the
identity; set the node's width and height to the canvas). The nodes pad or cut each track to 121 points with ``pad_pts``: every given
point gets visibility 1, padded ones (0, 0, 0). There is no way to mark a point hidden.

So each track is written up to its first frame that is not visible (occluded, unconfident,
behind the camera or off the canvas), exclusive: the nodes then treat the rest as
invisible, which is what it is. A track that reappears later is cut at its first
disappearance; a track not visible on frame 0 is left out (its appearance would be read
there). Core ``WanTrackToVideo`` resamples the 121 frames to ``length`` (81 by default, the
same frames as ATI's floor(1.5 j)).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tracefield.errors import TracefieldError
from tracefield.export.conditions import Conditions, ConsumerView, Written, keep_startable
from tracefield.io.atomic import atomic_file

FIXED_LENGTH = 121  # pad_pts


def write_comfyui(conditions: Conditions, path: Path) -> Written:
    """Write the tracks JSON (each track up to its first invisible frame)."""
    kept, dropped = keep_startable(conditions)
    if not kept.num_tracks:
        raise TracefieldError(f"{path}: every selected track is hidden or off the canvas on the first frame; drop --start or pick other pixels")
    lengths = _visible_prefix(kept.visible)
    data = [[{"x": round(float(x), 3), "y": round(float(y), 3)} for x, y in kept.xy[: lengths[n], n]] for n in range(kept.num_tracks)]
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data))
    stored, given = read_comfyui(path)
    xy = np.full(kept.xy.shape, np.nan)
    xy[: len(stored)] = stored
    return Written([path], xy, np.pad(given, ((0, len(xy) - len(given)), (0, 0))), dropped)


def _visible_prefix(visible: np.ndarray) -> np.ndarray:
    """[N] the number of frames before each track's first invisible one."""
    hidden = ~visible
    return np.where(hidden.any(axis=0), hidden.argmax(axis=0), visible.shape[0])


def read_comfyui(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(xy [T, N, 2], given [T, N])`` as stored: canvas pixels, NaN past each track's end (T = the longest)."""
    tracks = _parse(Path(path))
    length = max((len(t) for t in tracks), default=0)
    xy = np.full((length, len(tracks), 2), np.nan)
    for n, track in enumerate(tracks):
        xy[: len(track), n] = [[p["x"], p["y"]] for p in track]
    return xy, ~np.isnan(xy[..., 0])


def _parse(path: Path) -> list:
    try:
        data = json.loads(path.read_text().replace("'", '"'))  # the nodes' own parsing
    except (OSError, json.JSONDecodeError) as exc:
        raise TracefieldError(f"{path}: not a readable tracks JSON ({exc}); export it again") from exc
    if data and isinstance(data[0], dict):
        data = [data]  # one track, as the nodes accept it
    return data


def comfyui_view(path: str | Path, width: int = 832, height: int = 480, length: int = 81) -> ConsumerView:
    """``WanTrackToVideo`` (``parse_json_tracks``, ``pad_pts``, ``process_tracks``) on the file: positions at its
    ``length`` frames back in canvas pixels, visibility as the motion patch uses it, the frame-0 sampling point."""
    tracks = _parse(Path(path))
    padded = np.zeros((len(tracks), FIXED_LENGTH, 3))
    for n, track in enumerate(tracks):
        points = np.asarray([[p["x"], p["y"], 1.0] for p in track], dtype=np.float32)[:FIXED_LENGTH]
        padded[n, : len(points)] = points
    a = 120 // math.gcd(120, length - 1)
    b = (length - 1) // math.gcd(120, length - 1)
    frames = np.concatenate([[0], np.repeat(np.arange(1, FIXED_LENGTH), b)[1::a]])  # process_tracks' resampling
    short = min(width, height)
    centre = np.array([width, height]) / 2
    normalised = (padded[:, frames, :2] - centre) / short * 2  # [N, F, 2]
    used = np.clip(padded[:, frames, 2] * 2 - 1, 0, 1) > 0
    xy = normalised * short / 2 + centre
    limit = np.array([width, height]) / short
    start = np.clip(normalised[:, 0] / limit, -1, 1) * limit * short / 2 + centre
    return ConsumerView(frames, xy.transpose(1, 0, 2), used.T, (width, height), start)
