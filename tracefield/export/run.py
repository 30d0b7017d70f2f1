"""The export pipeline behind ``tracefield export`` and the viewer's Export panel (see the package docstring).

One export: seeds on a frame (a selection, or the viewer's picks) -> the output frames'
clip times, starting at that frame's time (the first output frame is the first-frame
image the generator starts from) -> anchored 2D tracks -> placed in the consumer's image
(the frame or an edited frame, fitted to the format's canvas) -> the format's file, with
the tracks its consumer would misuse left out -> pictures drawn from the file read back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from tracefield.errors import TracefieldError
from tracefield.export import FORMATS
from tracefield.export.canvas import Placement, fit_image, inside, parse_canvas
from tracefield.export.conditions import Conditions, Written, place_tracks
from tracefield.export.draw import draw_tracks, overlay_video, save_image
from tracefield.export.formats.ati import write_ati
from tracefield.export.formats.comfyui import write_comfyui
from tracefield.export.formats.npz import write_npz
from tracefield.export.formats.wanmove import write_wanmove
from tracefield.export.formats.worldcanvas import write_worldcanvas
from tracefield.export.images import original_frame, read_edited_frame, usable_pixels
from tracefield.export.selection import SelectionOptions, seeds_from_picks, select
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
    start: Optional[float] = None  # clip time of the first output frame; None: the seed frame's time
    end: float = 1.0
    speed: Optional[float] = None
    source_fps: Optional[float] = None
    canvas: Optional[str] = None  # "WxH"; the format's default when None
    prompt: Optional[str] = None
    captions: dict[int, str] = field(default_factory=dict)  # object id -> caption (WorldCanvas)
    image: Optional[Path] = None  # an edited first frame to write the conditions for (motion transfer)
    pictures: bool = True


@dataclass
class ExportResult:
    tracks: Tracks  # every selected track, original pixels
    conditions: Conditions  # the same tracks placed in the format's image
    written: Written  # what the format's file holds, read back, and what was left out
    files: list[Path]


def run_export(field: TraceField, options: ExportOptions, picks: Optional[Sequence[np.ndarray]] = None) -> ExportResult:
    """Select, retime, project, anchor and write one export.

    ``picks`` (the viewer's, on ``options.selection.frame``: flat network-pixel indices, one
    array per pick) replace the selection strategy; see :func:`seeds_from_picks`.
    """
    if options.format not in FORMATS:
        raise TracefieldError(f"--format {options.format}: unknown; use one of {', '.join(FORMATS)}")
    frames, fps, canvas_text = FORMATS[options.format]
    frame = options.selection.frame
    if not 0 <= frame < field.num_frames:
        raise TracefieldError(f"--frame {frame}: the field has frames 0..{field.num_frames - 1}")
    source, placement = _first_image(field, frame, options.image)
    if options.canvas or canvas_text:
        width, height = parse_canvas(options.canvas or canvas_text)
        placement = placement.then(Placement.cover(placement.width, placement.height, width, height))
    usable = usable_pixels(field.transform, placement)
    if picks:
        s = options.selection
        seeds = seeds_from_picks(field, frame, picks, s.per_object, s.background, s.conf_percentile, s.min_object_area, usable)
    else:
        seeds = select(field, options.selection, usable)
    start = _start(field, seeds.frame, options)
    timing = Timing(
        frames=options.frames or frames or field.num_frames,
        fps=options.fps or fps or field.frames.fps or DEFAULT_CLIP_FPS,
        start=start, end=options.end, speed=options.speed, source_fps=options.source_fps,
    )
    times = clip_times(timing, field)
    tracks = build_tracks(field, seeds, times, timing.fps, options.camera, span=(start, options.end))
    conditions = place_tracks(field, tracks, placement)
    _require_some_visible(field, conditions)
    name = options.name or "export"
    out = Path(options.output)
    out.mkdir(parents=True, exist_ok=True)
    prompt = options.prompt or DEFAULT_PROMPT
    if options.prompt is None and options.format == "ati":
        log.info("no --prompt given; using %r (describe the scene for better videos)", DEFAULT_PROMPT)
    image = fit_image(source, placement.width, placement.height)
    image_path = save_image(image, out / f"{name}.png")
    written = _write_format(options.format, conditions, tracks, out, name, image_path, prompt, options.captions)
    files = [image_path, *written.files]
    if options.pictures:
        xy = written.xy - 0.5  # file coordinates -> the pixel centres OpenCV draws at
        files.append(save_image(draw_tracks(image, xy, written.visible), out / f"{name}_tracks.png"))
        files.append(overlay_video(field, placement, xy, written.visible, tracks.clip_times, timing.fps, out / f"{name}_tracks.mp4"))
    left_out = sum(written.dropped.values())
    reasons = "; ".join(f"{count} {reason}" for reason, count in written.dropped.items())
    log.info("%s: %d tracks in %s%s, %d frames at %g fps", options.format, written.num_tracks, written.files[0].name,
             f" ({left_out} of {tracks.num_tracks} left out: {reasons})" if left_out else "", len(times), timing.fps)
    return ExportResult(tracks=tracks, conditions=conditions, written=written, files=files)


def _start(field: TraceField, frame: int, options: ExportOptions) -> float:
    """The clip time of the first output frame: the seed frame's own time unless ``--start`` says otherwise."""
    own = float(field.times[frame])
    if options.start is None:
        if own >= options.end:
            raise TracefieldError(f"frame {frame} is at clip time {own:.3f}, the end of the exported span (end {options.end:g}): "
                                  "nothing moves after it; pick the tracks on an earlier frame (--frame, or the viewer's time)")
        return own
    if abs(options.start - own) > 1e-3:
        log.warning("--start %g: the first output frame is not frame %d (time %.3f), whose image is written; "
                    "the tracks pass through their picks at time %.3f instead", options.start, frame, own, own)
    return float(options.start)


def _first_image(field: TraceField, frame: int, edited: Optional[Path]) -> tuple[np.ndarray, Placement]:
    """The image the generator starts from, and where original-frame pixels land in it."""
    h0, w0 = field.transform.original_hw
    if edited is None:
        return original_frame(field, frame), Placement.identity(w0, h0)
    image = read_edited_frame(edited, (w0, h0))
    return image, Placement.cover(w0, h0, image.shape[1], image.shape[0])


def _write_format(fmt: str, conditions: Conditions, tracks: Tracks, out: Path, name: str, image_path: Path, prompt: str,
                  captions: dict[int, str]) -> Written:
    if fmt == "ati":
        return write_ati(conditions, out / f"{name}.pth", image_path, prompt)
    if fmt == "worldcanvas":
        return write_worldcanvas(conditions, out / f"{name}.json", captions)
    if fmt == "comfyui":
        return write_comfyui(conditions, out / f"{name}.json")
    if fmt == "wanmove":
        return write_wanmove(conditions, out / name)
    return write_npz(conditions, tracks, out / f"{name}.npz")


def _require_some_visible(field: TraceField, conditions: Conditions) -> None:
    """Nothing visible anywhere is an error that says why (outside the image, occluded, low confidence)."""
    if conditions.visible.any():
        hidden = int((~conditions.visible.any(axis=0)).sum())
        if hidden:
            log.warning("%d of %d tracks are never visible (outside the image, occluded or low confidence)", hidden, conditions.num_tracks)
        return
    width, height = conditions.size
    outside = ~inside(conditions.xy, width, height)
    source = field.frames.source or "the field"
    if outside.mean() > 0.5:
        raise TracefieldError(f"{source}: the selected tracks are outside the {width}x{height} image at every output frame; "
                              "use a gentler --camera path or --camera static")
    raise TracefieldError(f"{source}: all {conditions.num_tracks} tracks are hidden (occluded or low confidence) at every output frame; "
                          "try --no-occlusion or a lower --conf-percentile")
