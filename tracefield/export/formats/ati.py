"""ATI (bytedance/ATI, Wan2.1-I2V-14B with the ATI motion patch) track files and run lists.

A track file is ``torch.save(bytes)`` of an ``np.savez_compressed`` archive whose ``array``
is ``[N, 121, 1, 3]``: (x * 8, y * 8, visible * 8) in pixels of the image beside it (the
video frame at its original size, or the edited frame given with ``--image``), 121 frames
at 24 fps. A run is a YAML list of ``{image, text, track}``.

What ATI does with a file, and what we write for it:

* positions: ``process_tracks`` centres on (W/2, H/2) and divides by half the short side;
  the motion patch samples each track's appearance with ``grid_sample`` at its frame-0
  position (clamped to the image) *whatever its flag says*. So every track we write is
  visible on frame 0; the others are left out and counted (:func:`keep_startable`).
* hidden later (occluded, behind the camera, low confidence, outside the image): real
  coordinates with visible = 0. The patch averages a latent frame's positions over its
  visible frames only, so hidden positions are never used.
* it reads input frame floor(1.5 j) for model frame j (81 frames at 16 fps).
* ``generate.py`` opens ``image`` and ``track`` relative to the working directory (ATI's
  repository root in its examples), so our run lists hold absolute paths: they open from
  anywhere.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from tracefield.errors import TracefieldError
from tracefield.export.conditions import Conditions, ConsumerView, Written, keep_startable
from tracefield.io.atomic import atomic_file

log = logging.getLogger(__name__)

FRAMES, FPS, QUANT = 121, 24.0, 8
MODEL_FRAMES = 81
MODEL_FRAME_INDICES = [0] + [int(np.floor(1.5 * j)) for j in range(1, MODEL_FRAMES)]  # of the 121, what ATI's model sees


def write_ati(conditions: Conditions, track_path: Path, image_path: Path, prompt: str) -> Written:
    """Write ``<name>.pth`` and the one-entry run list ``<name>.yaml`` (absolute paths) beside it."""
    if conditions.xy.shape[0] != FRAMES:
        raise TracefieldError(f"ATI needs {FRAMES} frames at {FPS:g} fps, got {conditions.xy.shape[0]}; drop --frames or pass --frames {FRAMES}")
    kept, dropped = keep_startable(conditions)
    if not kept.num_tracks:
        raise TracefieldError(
            f"{track_path}: every selected track is hidden or outside the image on the first frame, where ATI reads its appearance; "
            "drop --start (the tracks then start on the frame they are picked on) or pick other pixels"
        )
    array = np.concatenate([kept.xy, kept.visible[..., None].astype(np.float64)], axis=-1)
    array = (array.transpose(1, 0, 2)[:, :, None, :] * QUANT).astype(np.float32)  # [N, 121, 1, 3]
    buffer = io.BytesIO()
    np.savez_compressed(buffer, array=array)
    with atomic_file(track_path) as tmp:
        torch.save(buffer.getvalue(), tmp)
    run_list = track_path.with_suffix(".yaml")
    entry = [{"image": str(Path(image_path).resolve()), "text": prompt, "track": str(Path(track_path).resolve())}]
    with atomic_file(run_list) as tmp:
        tmp.write_text(yaml.safe_dump(entry, sort_keys=False, allow_unicode=True))
    xy, visible = decode_ati(array)
    return Written([track_path, run_list], xy.transpose(1, 0, 2), visible.T, dropped)


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
    """A raw ATI array -> ``(xy [N, 121, 2], visible [N, 121])`` in the image's pixels (corner convention)."""
    tracks = tracks_first(array).astype(np.float64) / QUANT
    return tracks[:, :, 0, :2], tracks[:, :, 0, 2] > 0.5


def read_ati(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(xy [N, 121, 2], visible [N, 121])`` as stored, in the image's pixels."""
    return decode_ati(read_ati_array(path))


def ati_condition(array: np.ndarray, width: int, height: int) -> torch.Tensor:
    """ATI's ``process_tracks`` on a raw track array for a ``width`` x ``height`` image -> ``[81, N, 4]``."""
    tracks = torch.from_numpy(tracks_first(np.asarray(array)).astype(np.float32)).permute(1, 0, 2, 3) / QUANT  # [121, N, 1, 3]
    xy, visible = tracks[..., :2], tracks[..., 2:3]
    xy = (xy - torch.tensor([width, height], dtype=torch.float32) / 2) / min(width, height) * 2
    times = torch.linspace(-1, 1, FRAMES).view(-1, 1, 1, 1).expand(*visible.shape)
    full = torch.cat([times, xy, visible * 2 - 1], dim=-1).view(FRAMES, -1, 4)
    return full[MODEL_FRAME_INDICES]


@dataclass
class AtiEntry:
    image: np.ndarray  # RGB [H, W, 3] as ATI opens it
    text: str
    array: np.ndarray  # the raw track array


def read_run_list(run_list: str | Path) -> list[AtiEntry]:
    """A run list opened as ATI's ``generate.py`` opens it: paths relative to the working directory, text stripped."""
    from PIL import Image

    entries = yaml.safe_load(Path(run_list).read_text())
    return [AtiEntry(np.asarray(Image.open(e["image"]).convert("RGB")), e["text"].strip(), read_ati_array(e["track"])) for e in entries]


def ati_view(array: np.ndarray, width: int, height: int) -> ConsumerView:
    """What ATI's model receives, back in the image's pixels: positions at its 81 frames, the patch's visibility,
    and where each track's appearance is sampled (frame 0, clamped to the image as ``patch_motion`` clamps)."""
    condition = ati_condition(array, width, height).numpy().astype(np.float64)  # [81, N, 4]
    half = min(width, height) / 2
    centre = np.array([width, height]) / 2
    xy = condition[..., 1:3] * half + centre
    limit = np.array([width, height]) / min(width, height)  # the patch normalises to [-1, 1] per side, then clamps
    start = np.clip(condition[0, :, 1:3] / limit, -1, 1) * limit * half + centre
    return ConsumerView(np.asarray(MODEL_FRAME_INDICES), xy, np.clip(condition[..., 3], 0, 1) > 0, (width, height), start)
