"""Frame and video input: which scenes to process, which frames to use, and decoding them.

A scene is a folder of frames, a video, or a list of image files. Discovery only looks at
names and suffixes, so a run with a mistake in its inputs fails at once with one line that
names the file, before any decoding or model loading. Decoding delivers uint8 RGB frames at
their original size (EXIF orientation applied); resizing and cropping happen elsewhere.

Video frames are numbered as ffmpeg decodes them without frame-rate conversion, so the
count from :func:`count_frames` and the frames read by :func:`read_frames` always agree,
even for variable-frame-rate phone videos.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import imageio.v2 as iio
import numpy as np
from PIL import Image, ImageOps
from tqdm import tqdm

from tracefield.errors import TracefieldError, input_error, short_reason

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".gif", ".avi", ".mkv", ".m4v")

MIN_FRAMES = 2
# A video whose decoded frames fit in this many bytes is decoded once, by the pass that counts
# them (read_whole_video); longer ones are counted without decoding and then read in part.
KEEP_BYTES = 1 << 29
_LAYOUTS = (
    f"expected a folder of frames ({', '.join(IMAGE_SUFFIXES)}), a folder of scene folders "
    f"and/or videos ({', '.join(VIDEO_SUFFIXES)}), or the image or video files themselves"
)
_IMAGE_FIX = "re-export this frame or remove it from the folder"
# Without passthrough ffmpeg resamples variable-frame-rate video to a constant rate while
# piping, duplicating or dropping frames, and the frames read would no longer match
# count_frames (which counts every decoded frame); "-map 0:v:0" is the stream count_frames
# counts. ffmpeg 5.1 renamed the option "-vsync" to "-fps_mode"; a system ffmpeg chosen with
# IMAGEIO_FFMPEG_EXE may be older (4.x is common), and refuses the new name.
_FIRST_FPS_MODE = (5, 1)


def ffmpeg_read_params(version: str) -> list[str]:
    """ffmpeg's output options for reading every frame as stored, in the words ffmpeg ``version`` knows."""
    match = re.match(r"n?(\d+)\.(\d+)", version)
    old = match is not None and (int(match[1]), int(match[2])) < _FIRST_FPS_MODE  # git builds ("N-...") are new
    return ["-map", "0:v:0", "-vsync" if old else "-fps_mode", "passthrough"]


@functools.lru_cache(maxsize=1)
def _read_params() -> list[str]:
    """The read options for the ffmpeg imageio runs (asking its version runs it once: 0.2 s)."""
    import imageio_ffmpeg  # imageio's own ffmpeg plugin needs it too; folders of images do not

    return ffmpeg_read_params(imageio_ffmpeg.get_ffmpeg_version())


_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)
_REASON_CHARS = 120


@dataclass
class SceneSource:
    """One scene to process: a folder of frames, a video, or a list of image files."""

    name: str
    kind: str  # "frames" or "video"
    paths: list[Path]  # frame files in natural order (kind "frames"), or [video_path]

    @property
    def location(self) -> Path:
        """What to name in messages: the frames' folder, or the video file."""
        return self.paths[0] if self.kind == "video" else self.paths[0].parent

    def describe(self) -> str:
        """Short human description, e.g. ``elephant (30 frames in /x/elephant)``."""
        if self.kind == "video":
            return f"{self.name} (video {self.paths[0]})"
        return f"{self.name} ({len(self.paths)} frames in {self.paths[0].parent})"


@dataclass
class DecodedFrames:
    """Decoded frames of one scene, in sequence order."""

    images: list[np.ndarray]  # uint8 [H, W, 3] RGB each, original size, EXIF orientation applied
    indices: list[int]  # index of each frame in the scene's full frame sequence
    names: list[str]  # file name of each frame, or f"{video_file_name}#{index}" for videos
    fps: float | None  # video fps from metadata, None for frame folders

    def select(self, indices: Sequence[int]) -> "DecodedFrames":
        """The frames at scene ``indices`` (each one of ``self.indices``)."""
        position = {index: k for k, index in enumerate(self.indices)}
        keep = [position[int(i)] for i in indices]
        return DecodedFrames([self.images[k] for k in keep], [self.indices[k] for k in keep], [self.names[k] for k in keep], self.fps)


# --------------------------------------------------------------------------- discovery


def discover_scenes(inputs: Sequence[str | Path], name: str | None = None) -> list[SceneSource]:
    """Scenes from command-line inputs: folders, videos and/or image files.

    Image files given directly form one scene together (named after ``name`` or their
    common parent folder), placed where the first of them appeared. ``name`` renames the
    scene and is only valid when the inputs give exactly one.
    """
    if isinstance(inputs, (str, Path)):  # a str is a Sequence too, of single characters
        inputs = [inputs]
    if not inputs:
        raise TracefieldError(f"no input given; {_LAYOUTS}")
    scenes: list[SceneSource] = []
    image_files: list[Path] = []
    image_slot = 0
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise input_error(path, "does not exist", "check the path and the current folder")
        if path.is_dir():
            scenes.extend(_folder_scenes(path))
        elif _is_image(path):
            if not image_files:
                image_slot = len(scenes)
            image_files.append(path)
        elif _is_video(path):
            scenes.append(SceneSource(path.stem, "video", [path]))
        else:
            raise input_error(
                path,
                f"unsupported file type '{path.suffix or '(no suffix)'}'",
                f"pass images ({', '.join(IMAGE_SUFFIXES)}), videos ({', '.join(VIDEO_SUFFIXES)}) or a folder",
            )
    if image_files:
        scenes.insert(image_slot, _frames_scene(_common_folder_name(image_files), image_files))
    if name is not None:
        if len(scenes) != 1:
            listed = ", ".join(scene.name for scene in scenes)
            raise TracefieldError(
                f"--name needs a single scene but the inputs give {len(scenes)} ({listed}); "
                "drop --name or pass one scene"
            )
        scenes[0].name = name
    _name_videos_apart(scenes)
    _check_unique_names(scenes)
    for scene in scenes:
        log.debug("scene %s", scene.describe())
    return scenes


def _folder_scenes(folder: Path) -> list[SceneSource]:
    """A folder of frames is one scene; otherwise its scene subfolders and videos, by name."""
    entries = _visible_entries(folder)
    images = [p for p in entries if p.is_file() and _is_image(p)]
    if images:
        for other in entries:
            if other.is_dir() or not _is_image(other):
                log.debug("ignoring %s: not an image file directly inside a folder of frames", other)
        return [_frames_scene(folder.resolve().name, images)]

    scenes = []
    for entry in entries:
        if entry.is_dir():
            frames = [p for p in _visible_entries(entry) if p.is_file() and _is_image(p)]
            if frames:  # too few frames fail when the scene is planned: one bad scene of many stops no other
                scenes.append(_frames_scene(entry.name, frames, check=False))
            else:
                log.debug("ignoring %s: no image files directly inside", entry)
        elif _is_video(entry):
            scenes.append(SceneSource(entry.stem, "video", [entry]))
        else:
            log.debug("ignoring %s: neither a video nor a scene folder", entry)
    if not scenes:
        raise input_error(folder, _folder_contents(entries), _LAYOUTS)
    return sorted(scenes, key=lambda scene: _natural_key(scene.name))


def _visible_entries(folder: Path) -> list[Path]:
    """Folder entries without hidden ones (e.g. macOS ``._frame1.png`` resource forks)."""
    entries = []
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            log.debug("ignoring hidden %s", entry)
        else:
            entries.append(entry)
    return entries


def _folder_contents(entries: list[Path]) -> str:
    """The problem half of the no-scene error: what the folder holds instead."""
    if not entries:
        return "empty folder"
    names = sorted((p.name + "/" if p.is_dir() else p.name for p in entries), key=_natural_key)
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"no images, videos or scene folders, only {', '.join(names[:3])}{more}"


def _frames_scene(name: str, files: list[Path], check: bool = True) -> SceneSource:
    """A frames scene in natural order; a single frame cannot give a trajectory (``check``: refused now)."""
    if check and len(files) < MIN_FRAMES:
        raise _too_few_frames(files[0], len(files))
    return SceneSource(name, "frames", sorted(files, key=lambda p: _natural_key(str(p))))


def _common_folder_name(files: list[Path]) -> str:
    """Name of the deepest folder holding all ``files`` (resolved, so ``./a.png`` works)."""
    common = Path(os.path.commonpath([p.resolve().parent for p in files]))
    return common.name or "scene"


def _name_videos_apart(scenes: list[SceneSource]) -> None:
    """Videos sharing a name with another scene (``a.mp4``, ``a.gif``, a folder ``a/``) are named ``a_mp4``, ``a_gif``.

    Each input then gets its own scene folder instead of one replacing another's.
    """
    counts: dict[str, int] = {}
    for scene in scenes:
        counts[scene.name.casefold()] = counts.get(scene.name.casefold(), 0) + 1
    for scene in scenes:
        if scene.kind == "video" and counts[scene.name.casefold()] > 1:
            scene.name = f"{scene.name}_{scene.paths[0].suffix.lstrip('.').lower()}"


def _check_unique_names(scenes: list[SceneSource]) -> None:
    """Scene names become output names, so they must differ (also in case, for macOS/Windows)."""
    seen: dict[str, SceneSource] = {}
    for scene in scenes:
        other = seen.setdefault(scene.name.casefold(), scene)
        if other is not scene:
            raise TracefieldError(
                f"two scenes are named '{scene.name}': {other.describe()} and {scene.describe()}; "
                "rename one, or run them separately with --name"
            )


def _natural_key(text: str) -> tuple[str | int, ...]:
    """Sort key comparing digit runs as numbers (``frame2`` < ``frame10``), case-insensitively.

    ``re.split`` with a capturing group alternates text and digits, always starting with
    text, so equal positions of two keys always hold the same type.
    """
    parts = re.split(r"(\d+)", text)
    return tuple(int(part) if i % 2 else part.casefold() for i, part in enumerate(parts)) + (text,)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def _too_few_frames(path: Path, count: int) -> TracefieldError:
    return input_error(
        path,
        f"has only {count} frame{'' if count == 1 else 's'}; trajectories need at least {MIN_FRAMES} frames",
        "add frames or pass a video",
    )


# --------------------------------------------------------------------------- selection


def count_frames(scene: SceneSource) -> int:
    """Number of frames in the scene; for a video, the number ffmpeg/Pillow can decode."""
    if scene.kind == "frames":
        if len(scene.paths) < MIN_FRAMES:
            raise _too_few_frames(scene.paths[0], len(scene.paths))
        return len(scene.paths)
    path = scene.paths[0]
    with _video_errors(path):
        count = _video_length(path)
    if count < MIN_FRAMES:
        raise _too_few_frames(path, count)
    return count


def video_fps(scene: SceneSource) -> float | None:
    """A video's frame rate from its metadata (None if unknown); frame folders have none."""
    if scene.kind != "video":
        return None
    path = scene.paths[0]
    with _video_errors(path), _open_video(path) as reader:
        return _video_fps(reader.get_meta_data())


def time_range(scene: SceneSource, count: int, start: float | None, end: float | None, fps: float | None = None) -> range:
    """The frames of a video shown from ``start`` to ``end`` seconds (both included), or all frames.

    A frame's time is its index over the video's frame rate (``fps``, else read from the
    video), the numbering of :func:`count_frames`.
    """
    if start is None and end is None:
        return range(count)
    where = scene.location
    if scene.kind != "video":
        raise input_error(where, "--start/--end pick seconds of a video, and a folder of frames has no frame rate",
                          "drop them and pass only the frames you want")
    fps = fps or video_fps(scene)
    if fps is None:
        raise input_error(where, "its frame rate is unknown, so --start/--end cannot be turned into frames",
                          "re-encode it with a frame rate (ffmpeg -i IN -r 30 OUT.mp4) or drop --start/--end")
    duration = count / fps
    first = max(0, math.ceil((start or 0.0) * fps - 1e-6))
    stop = count if end is None else min(count, math.floor(end * fps + 1e-6) + 1)
    if stop - first < MIN_FRAMES:
        raise input_error(
            where,
            f"--start {start or 0:g} --end {end if end is not None else duration:g} s holds {max(0, stop - first)} of its "
            f"{count} frames ({duration:.2f} s at {fps:g} fps); trajectories need at least {MIN_FRAMES}",
            f"pick a range within 0-{duration:.2f} s",
        )
    return range(first, stop)


def check_selection(max_frames: int, stride: int) -> None:
    """Refuse a ``--max-frames`` or ``--stride`` that no scene could use."""
    if max_frames < MIN_FRAMES:
        raise TracefieldError(
            f"--max-frames is {max_frames}; trajectories need at least {MIN_FRAMES} frames, "
            f"pass --max-frames {MIN_FRAMES} or more"
        )
    if stride < 1:
        raise TracefieldError(f"--stride is {stride}; pass --stride 1 or more (1 keeps every frame)")


def select_frames(count: int, max_frames: int = 40, stride: int = 1) -> list[int]:
    """Indices of the frames to use: every ``stride``-th, then at most ``max_frames`` evenly.

    The even pick always keeps the first and last frame so the trajectories span the whole
    clip. (The public release keeps all frames for 41-77 frames; this caps at ``max_frames``.)
    """
    check_selection(max_frames, stride)
    candidates = np.arange(0, count, stride)
    if len(candidates) < MIN_FRAMES <= count:
        raise TracefieldError(
            f"--stride {stride} keeps {len(candidates)} of {count} frames; "
            f"trajectories need at least {MIN_FRAMES}, pass a smaller --stride"
        )
    if len(candidates) > max_frames:
        # The step between positions is > 1, so rounding cannot produce duplicates.
        positions = np.round(np.linspace(0, len(candidates) - 1, max_frames)).astype(int)
        candidates = candidates[positions]
    return candidates.tolist()


# --------------------------------------------------------------------------- decoding


def check_frame_sizes(scene: SceneSource, indices: Sequence[int]) -> tuple[int, int]:
    """(H, W) shared by the selected frames, checked from file headers before any decoding.

    A folder with one odd-sized frame then fails in a second instead of after decoding the
    frames before it. Sizes are as displayed: EXIF orientations 5-8 swap width and height.
    """
    indices = _checked_indices(indices, _known_count(scene))
    if scene.kind == "video":
        return _video_size(scene.paths[0])
    sizes = [(scene.paths[i], _header_size(scene.paths[i])) for i in indices]
    first_path, first_size = sizes[0]
    for path, size in sizes[1:]:
        _require_size(path, size, first_path, first_size)
    return first_size[1], first_size[0]


def read_frames(scene: SceneSource, indices: Sequence[int], progress: bool = True) -> DecodedFrames:
    """Decode only the frames at ``indices`` (strictly increasing) as uint8 RGB arrays."""
    indices = _checked_indices(indices, _known_count(scene))
    if scene.kind == "video":
        return _read_video(scene, indices, progress)
    height, width = check_frame_sizes(scene, indices)
    first_path = scene.paths[indices[0]]
    images = []
    with _progress_bar(scene, len(indices), progress) as bar:
        for i in indices:
            path = scene.paths[i]
            image = _decode_image(path)
            # Re-checked after decoding: PNG EXIF stored after the pixels is not in the header.
            _require_size(path, (image.shape[1], image.shape[0]), first_path, (width, height))
            images.append(image)
            bar.update()
    return DecodedFrames(images, indices, [scene.paths[i].name for i in indices], None)


def read_whole_video(scene: SceneSource, on_open: Callable[[], None] | None = None, max_bytes: int = KEEP_BYTES) -> DecodedFrames | None:
    """Every frame of a short video, from one decoding pass that also counts them; None for a
    video whose frames would take more than ``max_bytes`` (by its header, or once decoded past it).

    Counting, sizing and reading a video otherwise start ffmpeg three times (0.3 s of a
    40-frame HD clip before any frame is kept). ``on_open`` is called once ffmpeg has read
    the header: the file is a video it can decode.
    """
    path = scene.paths[0]
    images: list[np.ndarray] = []
    with _video_errors(path), _open_video(path) as reader:
        meta = reader.get_meta_data()
        fps = _video_fps(meta)
        if on_open is not None:
            on_open()
        if _header_bytes(meta, fps) > max_bytes:
            return None
        kept = 0
        for frame in reader:
            kept += frame.nbytes
            if kept > max_bytes:
                return None
            images.append(_to_rgb(frame))
    if len(images) < MIN_FRAMES:
        raise _too_few_frames(path, len(images))
    return DecodedFrames(images, list(range(len(images))), [f"{path.name}#{i}" for i in range(len(images))], fps)


def _header_bytes(meta: dict[str, Any], fps: float | None) -> float:
    """Decoded bytes of a video by its ffmpeg header (duration x fps frames of its size); 0 when unknown (GIF)."""
    size, duration = meta.get("size"), meta.get("duration")
    if meta.get("plugin") != "ffmpeg" or not size or not duration or not fps or not math.isfinite(duration):
        return 0.0
    return size[0] * size[1] * 3 * duration * fps


def _known_count(scene: SceneSource) -> int | None:
    """Frame count when it is free to know: frame folders yes, videos would need decoding."""
    return len(scene.paths) if scene.kind == "frames" else None


def _checked_indices(indices: Sequence[int], count: int | None) -> list[int]:
    """Indices as a list; wrong ones are a caller bug (``select_frames`` gives valid ones)."""
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("no frame indices given")
    if any(b <= a for a, b in zip(indices, indices[1:])):
        raise ValueError(f"frame indices must be strictly increasing, got {indices}")
    if indices[0] < 0 or (count is not None and indices[-1] >= count):
        raise ValueError(f"frame indices {indices[0]}..{indices[-1]} out of range for {count} frames")
    return indices


def _header_size(path: Path) -> tuple[int, int]:
    """(W, H) as displayed, from the header only."""
    with _image_errors(path), Image.open(path) as image:
        width, height = image.size
        # PNG may keep EXIF after the pixel data, and Pillow would decode the whole image to
        # find it; read_frames re-checks decoded sizes, so such files are still caught.
        if image.format == "PNG" and "exif" not in image.info:
            return width, height
        orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    return (height, width) if orientation in _TRANSPOSED_ORIENTATIONS else (width, height)


def _require_size(path: Path, size: tuple[int, int], first_path: Path, first_size: tuple[int, int]) -> None:
    """Raise the mixed-size error unless ``size`` (W, H) equals the first frame's."""
    if size != first_size:
        raise input_error(
            path,
            f"frame is {size[0]}x{size[1]} but {first_path} is {first_size[0]}x{first_size[1]}",
            "all frames of a scene must have one size (resize them or split the scene)",
        )


def _decode_image(path: Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB with EXIF orientation applied (RGBA, gray and palette converted)."""
    with _image_errors(path), Image.open(path) as image:
        return np.array(ImageOps.exif_transpose(image).convert("RGB"))


def _read_video(scene: SceneSource, indices: list[int], progress: bool) -> DecodedFrames:
    """One sequential pass over the video, keeping the selected frames, stopping after the last."""
    path = scene.paths[0]
    wanted = set(indices)
    images = []
    with _video_errors(path), _open_video(path) as reader, _progress_bar(scene, len(indices), progress) as bar:
        fps = _video_fps(reader.get_meta_data())
        for i, frame in enumerate(itertools.islice(reader, indices[-1] + 1)):
            if i in wanted:
                images.append(_to_rgb(frame))
                bar.update()
    if len(images) < len(indices):
        raise ValueError(f"frame index {indices[len(images)]} out of range: {path} ended before it")
    return DecodedFrames(images, indices, [f"{path.name}#{i}" for i in indices], fps)


def _video_size(path: Path) -> tuple[int, int]:
    """(H, W) of a video's frames, which all share one size, from its first frame."""
    with _video_errors(path), _open_video(path) as reader:
        frame = next(iter(reader), None)
    if frame is None:
        raise _too_few_frames(path, 0)
    return frame.shape[0], frame.shape[1]


def _open_video(path: Path) -> Any:
    """An imageio reader: Pillow for GIF (knows its frame count), ffmpeg for everything else."""
    if path.suffix.lower() == ".gif":
        return iio.get_reader(path)
    return iio.get_reader(path, format="FFMPEG", output_params=list(_read_params()))  # a copy: the cached list stays as it is


def _video_length(path: Path) -> int:
    """Frames as stored: Pillow knows a GIF's; for a video, one ffmpeg pass decodes and counts them,
    converting and piping nothing (imageio's reader would start a decoding ffmpeg first, only to ask the same)."""
    if path.suffix.lower() == ".gif":
        with _open_video(path) as reader:
            length = reader.get_length()
            return length if isinstance(length, int) and length >= 0 else sum(1 for _ in reader)
    import imageio_ffmpeg

    return int(imageio_ffmpeg.count_frames_and_secs(str(path))[0])


def _video_fps(meta: dict[str, Any]) -> float | None:
    """Frame rate from reader metadata; None when unknown.

    ffmpeg always reports ``fps`` (0 when undetected). Pillow's GIF metadata has no fps,
    only ``duration``, the first frame's display time in milliseconds.
    """
    fps = meta.get("fps")
    if fps is None and meta.get("duration"):
        fps = 1000.0 / meta["duration"]
    return float(fps) if fps and math.isfinite(fps) and fps > 0 else None


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] from a decoder's gray, gray+alpha, RGB or RGBA frame."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = frame[:, :, None]
    if frame.shape[2] < 3:
        frame = np.repeat(frame[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(frame[:, :, :3], dtype=np.uint8)


def _progress_bar(scene: SceneSource, total: int, enabled: bool) -> tqdm:
    """Progress over the frames to decode; ``disable=None`` hides it when not on a terminal."""
    return tqdm(
        total=total, desc=f"decoding {scene.name}", unit="frame", leave=False, disable=None if enabled else True
    )


def _image_errors(path: Path) -> contextlib.AbstractContextManager[None]:
    return _decoder_errors(path, "cannot decode image", _IMAGE_FIX)


def _video_errors(path: Path) -> contextlib.AbstractContextManager[None]:
    command = f"ffmpeg -i {shlex.quote(str(path))} -c:v libx264 -pix_fmt yuv420p fixed.mp4"
    return _decoder_errors(path, "cannot decode video", f"check that it plays, or re-encode it: {command}")


@contextlib.contextmanager
def _decoder_errors(path: Path, problem: str, fix: str) -> Iterator[None]:
    """Turn any decoder failure into one ``TracefieldError`` line; the full text goes to the debug log.

    Pillow, imageio's plugins and ffmpeg raise many unrelated exception types for a bad
    file, so the catch is broad; the blocks using this hold little besides decoder calls.
    """
    try:
        yield
    except Exception as exc:
        log.debug("decoding %s failed", path, exc_info=True)
        raise input_error(path, f"{problem} ({short_reason(exc, _REASON_CHARS)})", fix) from exc
