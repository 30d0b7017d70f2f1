"""The export pipeline behind ``tracefield export`` and the viewer's Export panel (see the package docstring)."""


from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from tracefield.errors import TracefieldError
from tracefield.export import FORMATS
from tracefield.export.canvas import Canvas, parse_canvas
from tracefield.export.draw import draw_tracks, overlay_video, save_image
from tracefield.export.formats.ati import write_ati
from tracefield.export.formats.simple import write_comfyui, write_npz, write_wanmove
from tracefield.export.formats.worldcanvas import write_worldcanvas
from tracefield.export.images import original_frame
from tracefield.export.selection import SelectionOptions, select
from tracefield.export.timing import Timing, clip_times
from tracefield.export.tracks import CameraOptions, Tracks, build_tracks
from tracefield.field import TraceField

log = logging.getLogger(__name__)

DEFAULT_PROMPT = "The scene moves along the drawn trajectories."
DEFAULT_CLIP_FPS = 16.0


@dataclass
class ExportOptions:
    format: str
    output: Path
    name: Optional[str] = None
    selection: SelectionOptions = field(default_factory=SelectionOptions)
    camera: CameraOptions = field(default_factory=CameraOptions)
    frames: Optional[int] = None
    fps: Optional[float] = None
    start: float = 0.0
    end: float = 1.0
    speed: Optional[float] = None
    source_fps: Optional[float] = None
    canvas: Optional[str] = None  # "WxH"; the format's default when None
    prompt: Optional[str] = None
    captions: dict[int, str] = field(default_factory=dict)  # object id -> caption (WorldCanvas)
    pictures: bool = True


@dataclass
class ExportResult:
    tracks: Tracks
    files: list[Path]


def run_export(field: TraceField, options: ExportOptions) -> ExportResult:
    """Select, retime, project and write one export; returns the tracks and every file written."""
    if options.format not in FORMATS:
        raise TracefieldError(f"--format {options.format}: unknown; use one of {', '.join(FORMATS)}")
    frames, fps, canvas_text = FORMATS[options.format]
    timing = Timing(
        frames=options.frames or frames or field.num_frames,
        fps=options.fps or fps or field.frames.fps or DEFAULT_CLIP_FPS,
        start=options.start, end=options.end, speed=options.speed, source_fps=options.source_fps,
    )
    seeds = select(field, options.selection)
    times = clip_times(timing, field)
    tracks = build_tracks(field, seeds, times, timing.fps, options.camera)
    _require_some_visible(field, tracks)
    w0, h0 = tracks.original_size
    canvas = parse_canvas(options.canvas or canvas_text, w0, h0) if (options.canvas or canvas_text) else Canvas.identity(w0, h0)
    name = options.name or "export"
    out = Path(options.output)
    out.mkdir(parents=True, exist_ok=True)
    first = original_frame(field, seeds.frame)
    prompt = options.prompt or DEFAULT_PROMPT
    if options.prompt is None and options.format in ("ati", "worldcanvas"):
        log.info("no --prompt given; using %r (describe the scene for better videos)", DEFAULT_PROMPT)
    files = [save_image(first, out / f"{name}.png")]
    files += _write_format(options.format, tracks, out, name, canvas, prompt, options.captions)
    if options.pictures:
        xy = canvas.map(tracks.xy)
        files.append(save_image(draw_tracks(canvas.image(first), xy, tracks.visible), out / f"{name}_tracks.png"))
        files.append(overlay_video(field, canvas, xy, tracks.visible, tracks.clip_times, timing.fps, out / f"{name}_tracks.mp4"))
    log.info("%s: %d tracks, %d frames at %g fps -> %s", options.format, tracks.num_tracks, len(times), timing.fps, out)
    return ExportResult(tracks=tracks, files=files)


def _write_format(fmt: str, tracks: Tracks, out: Path, name: str, canvas: Canvas, prompt: str, captions: dict[int, str]) -> list[Path]:
    if fmt == "ati":
        return list(write_ati(tracks, out / f"{name}.pth", f"{name}.png", prompt))
    if fmt == "worldcanvas":
        return [write_worldcanvas(tracks, out / f"{name}.json", canvas, captions, prompt)]
    if fmt == "comfyui":
        return [write_comfyui(tracks, out / f"{name}.json", canvas)]
    if fmt == "wanmove":
        return list(write_wanmove(tracks, out / name, canvas))
    return [write_npz(tracks, out / f"{name}.npz")]


def _require_some_visible(field: TraceField, tracks: Tracks) -> None:
    """Nothing visible anywhere is an error that says why (outside the frame, occluded, low confidence)."""
    if tracks.visible.any():
        hidden = int((~tracks.visible.any(axis=0)).sum())
        if hidden:
            log.warning("%d of %d tracks are never visible (outside the frame, occluded or low confidence)", hidden, tracks.num_tracks)
        return
    w0, h0 = tracks.original_size
    outside = ~Canvas.identity(w0, h0).inside(tracks.xy)
    source = field.frames.source or "the field"
    if outside.mean() > 0.5:
        raise TracefieldError(f"{source}: the selected tracks are outside the {w0}x{h0} frame at every output frame; "
                              "use a gentler --camera path or --camera static")
    raise TracefieldError(f"{source}: all {tracks.num_tracks} tracks are hidden (occluded or low confidence) at every output frame; "
                          "try --no-occlusion or a lower --conf-percentile")
