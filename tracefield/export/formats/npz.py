"""Our own npz: everything needed to redo any other format, every track kept.

Keys: ``xy`` [T, N, 2] pixels of the image written beside it (the frame, or ``--image``;
file convention of :mod:`tracefield.export.canvas`), ``visible`` [T, N] (seen and inside
that image), ``seen`` [T, N] (in front, confident, not occluded), ``points3d`` [T, N, 3]
(first camera's frame), ``clip_times``, ``fps``, ``object_ids``, ``camera_tracks``,
``picks`` [N, 2] (each track's picked pixel, where it is at ``anchor_time``),
``seed_frame``, ``image_size``, ``focal`` and ``principal_point`` (original pixels,
pixel-centre) and ``camera_mode``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tracefield.export.conditions import Conditions, Written
from tracefield.export.tracks import Tracks
from tracefield.io.atomic import atomic_file


def write_npz(conditions: Conditions, tracks: Tracks, path: Path) -> Written:
    intrinsics = tracks.intrinsics or {}
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                xy=conditions.xy.astype(np.float32),
                visible=conditions.visible,
                seen=tracks.seen,
                points3d=tracks.points.astype(np.float32),
                clip_times=tracks.clip_times,
                fps=np.float64(tracks.fps),
                object_ids=tracks.object_ids,
                camera_tracks=tracks.camera_tracks,
                picks=conditions.picks.astype(np.float32),
                anchor_time=np.float64(tracks.anchor_time),
                seed_frame=np.int64(tracks.seed_frame),
                image_size=np.asarray(conditions.size),
                focal=np.float64(intrinsics.get("focal", np.nan)),
                principal_point=np.asarray([intrinsics.get("cx", np.nan), intrinsics.get("cy", np.nan)]),
                camera_mode=np.asarray(tracks.camera_mode),
            )
    data = read_npz(path)
    return Written([path], data["xy"].astype(np.float64), data["visible"])


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
