"""``tracefield generate``: an ATI run list (from ``tracefield export --format ati``) -> videos.

Each entry ``{image, text, track}`` (paths relative to the YAML file) becomes, in the output
folder, what ATI's run script gives: ``<name>.mp4`` (the generated video),
``<name>_tracks.png`` (the first frame with the tracks) and ``<name>_tracks.mp4`` (the
video with the tracks overlaid). Tracks are checked against their image before any model
runs, and each problem is one line naming the file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tracefield.errors import TracefieldError
from tracefield.export.draw import draw_tracks, save_image, write_trail_video, write_video
from tracefield.export.formats.ati import MODEL_FRAME_INDICES, ati_condition, decode_ati, read_ati_array
from tracefield.generate.pipeline import FPS, ATIPipeline, GenerationOptions
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
    condition: torch.Tensor  # [81, N, 4]: ATI's reader output, what the motion patch takes
    xy: np.ndarray  # [81, N, 2] original pixels at the generated frames
    visible: np.ndarray  # [81, N]


def read_run_list(path: Path) -> list[RunItem]:
    entries = load_yaml_file(path, "run list not found; make one with `tracefield export --format ati`")
    if not isinstance(entries, list) or not entries:
        raise TracefieldError(f"{path}: expected a non-empty list of {{image, text, track}} entries")
    items, names = [], set()
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"image", "text", "track"} <= set(entry):
            raise TracefieldError(f"{path}: entry {n} needs image, text and track")
        track = _relative(path, entry["track"])
        name = track.stem if track.stem not in names else f"{track.stem}_{n}"
        names.add(name)
        items.append(RunItem(name=name, image=_relative(path, entry["image"]), text=str(entry["text"]), track=track))
    return items


def _relative(run_list: Path, value: str) -> Path:
    """Paths are relative to the run list; ATI's own lists, relative to the working folder, also work."""
    beside = run_list.parent / value
    return Path(value) if not beside.exists() and Path(value).exists() else beside


def prepare(item: RunItem) -> PreparedItem:
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
        far = start.max(axis=0)
        raise TracefieldError(
            f"{item.track}: tracks start up to ({far[0]:.0f}, {far[1]:.0f}) px but {item.image.name} is {width}x{height}; "
            "the tracks were made for another image size: export them for this image"
        )
    return PreparedItem(item, image, ati_condition(array, width, height),
                        xy[:, MODEL_FRAME_INDICES].transpose(1, 0, 2), visible[:, MODEL_FRAME_INDICES].T)


def generate_all(pipe: ATIPipeline, prepared: list[PreparedItem], output: Path, options: GenerationOptions) -> list[Path]:
    """Generate every entry (checked beforehand by :func:`prepare`): returns the files written."""
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in prepared:
        log.info("generating %s: %r (%d tracks)", entry.item.name, entry.item.text, entry.condition.shape[1])
        video = pipe.generate(entry.image, entry.item.text, entry.condition, options)
        written += _write_outputs(entry, video, output)
    return written


def _write_outputs(entry: PreparedItem, video: np.ndarray, output: Path) -> list[Path]:
    height, width = video.shape[1:3]
    image_h, image_w = entry.image.shape[:2]
    scaled = (entry.xy + 0.5) * np.array([width / image_w, height / image_h]) - 0.5
    first = np.asarray(Image.fromarray(entry.image).resize((width, height), Image.BICUBIC))
    name = entry.item.name
    return [
        write_video(output / f"{name}.mp4", video, FPS),
        save_image(draw_tracks(first, scaled, entry.visible), output / f"{name}_tracks.png"),
        write_trail_video(output / f"{name}_tracks.mp4", lambda k: video[k], scaled, entry.visible, FPS),
    ]
