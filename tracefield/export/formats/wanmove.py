"""Wan-Move (ali-vilab/Wan-Move): ``tracks.npy`` and ``visibility.npy``, with the image they belong to.

``tracks.npy`` float32 ``[81, N, 2]`` and ``visibility.npy`` bool ``[81, N]`` in a folder
(``--track`` and ``--track_visibility`` take any two files). Coordinates are pixels of the
``--image`` file: Wan-Move resizes the image to its video size (from ``max_area`` and the
image's aspect ratio) and multiplies the tracks by video size / image size. We write the
image beside the folder at the canvas size (832x480 by default), so tracks and image share
one pixel space.

What Wan-Move does with them (``create_pos_feature_map`` / ``replace_feature``): it samples
frames 0, 4, ..., 80; a point is used when its visibility is true and 0 <= x < w, 0 <= y < h
in video pixels; its latent cell (y // 8, x // 8) receives the feature of the track's
frame-0 cell. A track not used on frame 0 keeps cell (-1, -1) there and copies the
bottom-right cell's feature into its later cells, so every track we write is visible on
frame 0 (others are left out and counted); hidden points keep real coordinates with
visibility false.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tracefield.errors import TracefieldError
from tracefield.export.canvas import inside
from tracefield.export.conditions import Conditions, ConsumerView, Written, keep_startable
from tracefield.export.wan_sizes import VAE_STRIDE, aspect_bucket
from tracefield.io.atomic import atomic_file

FRAMES = 81
TIME_STRIDE = 4  # Wan-Move samples every 4th track frame, one a latent frame
DEFAULT_MAX_AREA = 480 * 832  # Wan-Move's --size 480*832 / 832*480


def write_wanmove(conditions: Conditions, folder: Path) -> Written:
    """Write ``<folder>/tracks.npy`` and ``<folder>/visibility.npy``."""
    if conditions.xy.shape[0] != FRAMES:
        raise TracefieldError(f"Wan-Move needs {FRAMES} frames at 16 fps, got {conditions.xy.shape[0]}; drop --frames")
    kept, dropped = keep_startable(conditions)
    if not kept.num_tracks:
        raise TracefieldError(f"{folder}: every selected track is hidden or off the image on the first frame; drop --start or pick other pixels")
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "tracks.npy", folder / "visibility.npy"]
    for path, array in zip(paths, (kept.xy.astype(np.float32), kept.visible.copy())):
        with atomic_file(path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, array)
    xy, visible = read_wanmove(folder)
    return Written(paths, xy.astype(np.float64), visible, dropped)


def read_wanmove(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(tracks [81, N, 2], visibility [81, N])`` as stored (a leading batch axis, as in Wan-Move's example, is dropped)."""
    folder = Path(folder)
    tracks = np.load(folder / "tracks.npy", allow_pickle=False)
    visibility = np.load(folder / "visibility.npy", allow_pickle=False)
    return (tracks[0] if tracks.ndim == 4 else tracks), (visibility[0] if visibility.ndim == 3 else visibility)


def wanmove_view(folder: str | Path, image: str | Path, max_area: int = DEFAULT_MAX_AREA) -> ConsumerView:
    """Wan-Move on the files: tracks scaled to its video, the frames it samples, the points it uses, and the
    centre of the latent cell each track's feature is copied from (the bottom-right cell when frame 0 is unused)."""
    with Image.open(image) as img:
        image_w, image_h = img.size
    height, width = aspect_bucket(image_w, image_h, max_area)  # Wan's bucket, as ATI's (832x480 -> 832x464)
    tracks, visibility = read_wanmove(folder)
    tracks = tracks.astype(np.float32).copy()
    tracks[..., 0] *= np.float32(width / image_w)
    tracks[..., 1] *= np.float32(height / image_h)
    frames = np.arange(0, tracks.shape[0], TIME_STRIDE)
    xy = tracks[frames].astype(np.float64)
    used = visibility[frames].astype(bool) & inside(xy, width, height)
    cells = np.floor(xy / VAE_STRIDE)
    bottom_right = np.array([width // VAE_STRIDE - 1, height // VAE_STRIDE - 1])
    start = (np.where(used[0][:, None], cells[0], bottom_right) + 0.5) * VAE_STRIDE
    return ConsumerView(frames, xy, used, (width, height), start)
