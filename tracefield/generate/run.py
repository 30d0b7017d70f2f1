"""``tracefield generate``: an ATI run list (from ``tracefield export --format ati``) -> videos.

Each entry ``{image, text, track}`` becomes, in the output folder, ``<name>.mp4`` (the
generated video, 16 fps, frames truncated to uint8 as ATI saves them), ``<name>_tracks.png``
(the first frame with the tracks) and ``<name>_tracks.mp4`` (the video with the tracks drawn).
Paths in the list may be absolute, relative to the list's folder, or relative to the working
folder (ATI's own lists, which it opens from its repository root). Every entry is read and
checked before any weights load; then the models are loaded once for the whole list.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from tracefield.errors import TracefieldError
from tracefield.export.draw import draw_tracks, save_image, write_trail_video, write_video
from tracefield.export.formats.ati import MODEL_FRAME_INDICES, ati_condition, decode_ati, read_ati_array
from tracefield.export.wan_sizes import aspect_bucket
from tracefield.generate.pipeline import FPS, ATIPipeline, GenerationOptions, to_uint8
from tracefield.io.yaml_file import load_yaml_file

log = logging.getLogger(__name__)

START_MARGIN = 0.02  # tracks may start this fraction of the image outside it (rounding, edges)


@dataclass
class RunItem:
    name: str
    image: Path
    text: str
    track: Path


@dataclass
class PreparedItem:
    item: RunItem
    image: np.ndarray  # uint8 [H, W, 3]
    condition: torch.Tensor  # [F, N, 4]: ATI's reader output at the generated frames, what the motion patch takes
    xy: np.ndarray  # [F, N, 2] original pixels at the generated frames
    visible: np.ndarray  # [F, N]


def read_run_list(path: Path) -> list[RunItem]:
    entries = load_yaml_file(path, "run list not found; make one with `tracefield export --format ati`")
    if not isinstance(entries, list) or not entries:
        raise TracefieldError(f"{path}: expected a non-empty list of {{image, text, track}} entries; export one with `tracefield export --format ati`")
    items, names = [], set()
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"image", "text", "track"} <= set(entry):
            raise TracefieldError(f"{path}: entry {n} needs image, text and track (as `tracefield export --format ati` writes them)")
        track = _locate(path, entry["track"])
        name = track.stem if track.stem not in names else f"{track.stem}_{n}"
        names.add(name)
        items.append(RunItem(name=name, image=_locate(path, entry["image"]), text=str(entry["text"]).strip(), track=track))
    return items


def _locate(run_list: Path, value: object) -> Path:
    """An entry's path: absolute, beside the run list, or (ATI's convention) relative to the working folder."""
    path = Path(str(value))
    beside = run_list.parent / path
    return path if path.is_absolute() or (not beside.exists() and path.exists()) else beside


def frame_indices(frames: int) -> list[int]:
    """Which of ATI's 81 model frames each of ``frames`` generated frames takes (all 81 at ATI's default)."""
    model = len(MODEL_FRAME_INDICES)
    return [round(j * (model - 1) / (frames - 1)) for j in range(frames)] if frames != model else list(range(model))


def prepare(item: RunItem, frames: int = len(MODEL_FRAME_INDICES)) -> PreparedItem:
    """Read and check the image and its tracks (count, first-frame visibility, size)."""
    if not item.image.is_file():
        raise TracefieldError(f"{item.image}: image not found; fix the run list entry for {item.track.name}")
    try:
        image = np.asarray(Image.open(item.image).convert("RGB"))
    except Exception as exc:  # Pillow raises many types for a bad file
        raise TracefieldError(f"{item.image}: cannot decode image ({exc}); re-export it") from exc
    if not item.track.is_file():
        raise TracefieldError(f"{item.track}: track file not found; export one with `tracefield export --format ati`")
    array = read_ati_array(item.track)
    xy, visible = decode_ati(array)
    if len(xy) == 0:
        raise TracefieldError(f"{item.track}: holds no tracks; select some when exporting (e.g. --select grid)")
    if not visible[:, 0].all():
        raise TracefieldError(
            f"{item.track}: {int((~visible[:, 0]).sum())} of {len(visible)} tracks are not visible on the first frame, "
            "where ATI samples their appearance; export again (tracefield export drops such tracks)"
        )
    height, width = image.shape[:2]
    start = xy[:, 0]
    margin = START_MARGIN * np.array([width, height])
    if (start < -margin).any() or (start > np.array([width, height]) + margin).any():
        far = np.abs(start).max(axis=0)
        raise TracefieldError(
            f"{item.track}: tracks start up to ({far[0]:.0f}, {far[1]:.0f}) px but {item.image.name} is {width}x{height}; "
            "the tracks were made for another image size: export them for this image (tracefield export --image)"
        )
    picked = frame_indices(frames)
    model_frames = np.asarray(MODEL_FRAME_INDICES)[picked]
    return PreparedItem(item, image, ati_condition(array, width, height)[picked],
                        xy[:, model_frames].transpose(1, 0, 2), visible[:, model_frames].T)


def generate_all(pipe: ATIPipeline, prepared: list[PreparedItem], output: Path, options: GenerationOptions, progress: bool = True) -> list[Path]:
    """Generate every entry (checked beforehand by :func:`prepare`) with the loaded models: returns the files written.

    With the videos spread over processes (``pipe.parallel``), process 0 alone writes.
    """
    if pipe.parallel is None or pipe.parallel.leader:
        output.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in tqdm(prepared, desc="videos", unit="video", disable=len(prepared) < 2 or not progress or None):
        log.info("generating %s: %r (%d tracks)", entry.item.name, entry.item.text, entry.condition.shape[1])
        started = time.perf_counter()
        try:
            video = pipe.generate(entry.image, entry.item.text, entry.condition, options, progress=progress)
        except torch.cuda.OutOfMemoryError as exc:
            height, width = aspect_bucket(entry.image.shape[1], entry.image.shape[0], options.max_area)
            raise TracefieldError(
                f"{entry.item.track}: out of GPU memory generating {options.frames} frames at {width}x{height}; "
                "add --offload (or --offload blocks on a GPU under 40 GB), or lower --max-area / --frames"
            ) from exc
        log.info("%s: %.1f s", entry.item.name, time.perf_counter() - started)
        if video is not None:  # None: another process writes it
            written += _write_outputs(entry, to_uint8(video), output)
    return written


def _write_outputs(entry: PreparedItem, video: np.ndarray, output: Path) -> list[Path]:
    height, width = video.shape[1:3]
    image_h, image_w = entry.image.shape[:2]
    scaled = entry.xy * np.array([width / image_w, height / image_h]) - 0.5  # corner-origin file pixels -> OpenCV's pixel centres
    first = np.asarray(Image.fromarray(entry.image).resize((width, height), Image.BICUBIC))
    name = entry.item.name
    return [
        write_video(output / f"{name}.mp4", video, FPS),
        save_image(draw_tracks(first, scaled, entry.visible), output / f"{name}_tracks.png"),
        write_trail_video(output / f"{name}_tracks.mp4", lambda k: video[k], scaled, entry.visible, FPS),
    ]
