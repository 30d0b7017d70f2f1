"""ATI (bytedance/ATI, Wan2.1-I2V-14B with the ATI motion patch) track files.

A track file is ``torch.save(bytes)`` of an ``np.savez_compressed`` archive whose ``array``
is ``[N, 121, 1, 3]``: (x * 8, y * 8, visible * 8) in ORIGINAL image pixels, 121 frames at
24 fps. A run is a YAML list of ``{image, text, track}``. ATI samples each track's feature
at its frame-0 position, so every track must be visible on frame 0.

:func:`ati_condition` is ATI's own reader (``process_tracks``) re-done: what the motion
patch receives, ``[81, N, 4]`` = (t, x, y, visibility) in [-1, 1] with the short side
spanning [-1, 1], frames 0 and floor(1.5 j).
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import torch
import yaml

from tracefield.errors import TracefieldError
from tracefield.export.tracks import Tracks
from tracefield.io.atomic import atomic_file

log = logging.getLogger(__name__)

FRAMES, FPS, QUANT = 121, 24.0, 8
MODEL_FRAMES = 81
MODEL_FRAME_INDICES = [0] + [int(np.floor(1.5 * j)) for j in range(1, MODEL_FRAMES)]  # of the 121, what ATI's model sees


def write_ati(tracks: Tracks, track_path: Path, image_name: str, prompt: str) -> tuple[Path, Path]:
    """Write ``<name>.pth`` and the one-entry run list ``<name>.yaml`` beside it; returns both paths."""
    if tracks.xy.shape[0] != FRAMES:
        raise TracefieldError(f"ATI needs {FRAMES} frames at {FPS:g} fps, got {tracks.xy.shape[0]}; drop --frames or pass --frames {FRAMES}")
    keep = tracks.visible[0]
    if not keep.any():
        raise TracefieldError(
            f"{track_path}: every selected track is hidden on the first frame, and ATI starts each track there; "
            "select tracks on frame 0 (--frame 0), use --camera static, or --no-occlusion"
        )
    if not keep.all():
        log.warning("ATI: dropping %d of %d tracks hidden on the first frame", int((~keep).sum()), len(keep))
    array = np.concatenate([tracks.xy[:, keep], tracks.visible[:, keep, None].astype(np.float64)], axis=-1)
    array = (array.transpose(1, 0, 2)[:, :, None, :] * QUANT).astype(np.float32)  # [N, 121, 1, 3]
    buffer = io.BytesIO()
    np.savez_compressed(buffer, array=array)
    with atomic_file(track_path) as tmp:
        torch.save(buffer.getvalue(), tmp)
    run_list = track_path.with_suffix(".yaml")
    entry = [{"image": image_name, "text": prompt, "track": track_path.name}]
    with atomic_file(run_list) as tmp:
        tmp.write_text(yaml.safe_dump(entry, sort_keys=False, allow_unicode=True))
    return track_path, run_list


def read_ati_array(path: str | Path) -> np.ndarray:
    """The raw quantised ``[N, 121, 1, 3]`` array of an ATI track file (bytes of an npz; no pickle)."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"holds {type(data).__name__}, not npz bytes")
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            array = archive["array"]
    except Exception as exc:  # torch, numpy and zip each raise their own errors for a damaged file
        raise TracefieldError(f"{path}: not an ATI track file ({type(exc).__name__}: {exc}); export it again") from exc
    if array.ndim != 4 or array.shape[2:] != (1, 3) or FRAMES not in array.shape[:2]:
        raise TracefieldError(f"{path}: ATI array has shape {list(array.shape)}, expected [N, {FRAMES}, 1, 3]")
    return array


def tracks_first(array: np.ndarray) -> np.ndarray:
    """A raw ATI array in either axis order -> ``[N, 121, 1, 3]``."""
    return array if array.shape[1] == FRAMES else array.transpose(1, 0, 2, 3)


def decode_ati(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A raw ATI array -> ``(xy [N, 121, 2], visible [N, 121])`` in original pixels."""
    tracks = tracks_first(array).astype(np.float64) / QUANT
    return tracks[:, :, 0, :2], tracks[:, :, 0, 2] > 0.5


def read_ati(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(xy [N, 121, 2], visible [N, 121])`` in original pixels."""
    return decode_ati(read_ati_array(path))


def ati_condition(array: np.ndarray, width: int, height: int) -> torch.Tensor:
    """ATI's ``process_tracks`` on a raw track array for a ``width`` x ``height`` image -> ``[81, N, 4]``."""
    tracks = torch.from_numpy(tracks_first(np.asarray(array)).astype(np.float32)).permute(1, 0, 2, 3) / QUANT  # [121, N, 1, 3]
    xy, visible = tracks[..., :2], tracks[..., 2:3]
    xy = (xy - torch.tensor([width, height], dtype=torch.float32) / 2) / min(width, height) * 2
    times = torch.linspace(-1, 1, FRAMES).view(-1, 1, 1, 1).expand(*visible.shape)
    full = torch.cat([times, xy, visible * 2 - 1], dim=-1).view(FRAMES, -1, 4)
    return full[MODEL_FRAME_INDICES]
