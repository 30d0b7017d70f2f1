"""The simpler formats: ComfyUI's Wan nodes, Wan-Move, and a plain npz with everything.

* ComfyUI (``WanTrackToVideo``, WanVideoWrapper's ATI nodes): a JSON list of tracks, each
  a list of ``{"x", "y"}`` per frame on the generation canvas (24 fps; 121 frames for ATI).
  The format has no visibility: points keep their projected positions throughout.
* Wan-Move: ``tracks.npy`` float32 ``[81, N, 2]`` canvas pixels and ``visibility.npy``
  bool ``[81, N]``, in a folder.
* npz (ours): original-pixel tracks, visibility, 3D points, clip times, fps, object ids,
  camera tracks and intrinsics: everything needed to redo any of the above.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tracefield.export.canvas import Canvas
from tracefield.export.tracks import Tracks
from tracefield.io.atomic import atomic_file


def write_comfyui(tracks: Tracks, path: Path, canvas: Canvas) -> Path:
    xy = canvas.map(tracks.xy)
    data = [[{"x": round(float(x), 3), "y": round(float(y), 3)} for x, y in xy[:, n]] for n in range(tracks.num_tracks)]
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data))
    return path


def read_comfyui(path: str | Path) -> np.ndarray:
    """``[T, N, 2]`` canvas pixels."""
    data = json.loads(Path(path).read_text())
    return np.asarray([[[p["x"], p["y"]] for p in track] for track in data], dtype=np.float64).transpose(1, 0, 2)


def write_wanmove(tracks: Tracks, folder: Path, canvas: Canvas) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    xy = canvas.map(tracks.xy).astype(np.float32)
    visible = tracks.visible & canvas.inside(xy)
    paths = folder / "tracks.npy", folder / "visibility.npy"
    for path, array in zip(paths, (xy, visible)):
        with atomic_file(path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, array)
    return paths


def write_npz(tracks: Tracks, path: Path) -> Path:
    intrinsics = tracks.intrinsics or {}
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(
                handle,
                xy=tracks.xy.astype(np.float32),
                visible=tracks.visible,
                points3d=tracks.points.astype(np.float32),
                clip_times=tracks.clip_times,
                fps=np.float64(tracks.fps),
                object_ids=tracks.object_ids,
                camera_tracks=tracks.camera_tracks,
                original_size=np.asarray(tracks.original_size),
                focal=np.float64(intrinsics.get("focal", np.nan)),
                principal_point=np.asarray([intrinsics.get("cx", np.nan), intrinsics.get("cy", np.nan)]),
                camera_mode=np.asarray(tracks.camera_mode),
            )
    return path


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}
