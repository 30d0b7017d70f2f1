"""Tracks in one consumer's image, and what a consumer's loader makes of a file.

Every writer starts from :class:`Conditions`: positions in the consumer's image (file
coordinates, :mod:`tracefield.export.canvas`) and ONE visibility rule shared by all formats,
``visible = seen and inside the image``. Formats whose consumer reads each track's
appearance at its first-frame position (ATI, WorldCanvas, ComfyUI, Wan-Move) keep only the
tracks visible on the first frame (:func:`keep_startable`); the others are counted by reason.

Each format module also has a reader that redoes its consumer's loading code and returns a
:class:`ConsumerView`, so tests compare what a generator would use with the ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tracefield.export.canvas import Placement, inside
from tracefield.export.images import warp
from tracefield.export.tracks import Tracks
from tracefield.field import TraceField

OUTSIDE_AT_START = "outside the image on the first frame"
HIDDEN_AT_START = "hidden on the first frame"


@dataclass
class Conditions:
    """Tracks placed in a consumer's ``size`` = (W, H) image."""

    xy: np.ndarray  # [T, N, 2] file coordinates (corner convention)
    visible: np.ndarray  # [T, N] bool: seen (in front, confident, not occluded) and inside the image
    object_ids: np.ndarray  # [N]; 0 = background
    camera_tracks: np.ndarray  # [N] bool
    masks: dict[int, np.ndarray]  # object id -> bool [H, W] of this image, on the first frame
    size: tuple[int, int]
    picks: np.ndarray  # [N, 2] the picked pixels in this image (where each track is at the seed frame's time)

    @property
    def num_tracks(self) -> int:
        return self.xy.shape[1]

    def take(self, keep: np.ndarray) -> "Conditions":
        """The tracks where ``keep`` [N] (masks of objects no longer present dropped)."""
        ids = self.object_ids[keep]
        masks = {obj: mask for obj, mask in self.masks.items() if obj in set(ids.tolist())}
        return replace(self, xy=self.xy[:, keep], visible=self.visible[:, keep], object_ids=ids,
                       camera_tracks=self.camera_tracks[keep], masks=masks, picks=self.picks[keep])


@dataclass
class Written:
    """One format's files and what they hold, read back (the pictures draw exactly this)."""

    files: list[Path]
    xy: np.ndarray  # [T, M, 2] file coordinates as stored (NaN where a track holds no point)
    visible: np.ndarray  # [T, M] bool: the points the consumer uses
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> tracks left out

    @property
    def num_tracks(self) -> int:
        return self.xy.shape[1]


@dataclass
class ConsumerView:
    """What a consumer's own loading code computes from a file."""

    frames: np.ndarray  # [F] for each frame the consumer uses, the index of the file's frame it reads
    xy: np.ndarray  # [F, N, 2] positions in the consumer's pixel space (corner convention)
    used: np.ndarray  # [F, N] bool: the consumer treats the point as visible there
    size: tuple[int, int]  # (W, H) of that pixel space
    start: np.ndarray  # [N, 2] where each track's appearance is read in that space; NaN: a constant, not the image


def place_tracks(field: TraceField, tracks: Tracks, placement: Placement) -> Conditions:
    """Tracks -> a consumer image's file coordinates, with the shared visibility rule and masks in its pixels."""
    xy = placement.to_file(tracks.xy)
    masks = {obj: warp(field.transform, placement, mask, nearest=True) for obj, mask in tracks.object_masks.items()}
    return Conditions(
        xy=xy, visible=tracks.seen & placement.inside(xy), object_ids=tracks.object_ids.copy(), camera_tracks=tracks.camera_tracks.copy(),
        masks=masks, size=(placement.width, placement.height), picks=placement.to_file(tracks.picks),
    )


def keep_startable(conditions: Conditions) -> tuple[Conditions, dict[str, int]]:
    """The tracks visible on the first frame, and how many others were left out, by reason."""
    first = conditions.visible[0]
    outside = ~inside(conditions.xy[0], *conditions.size)
    dropped = {OUTSIDE_AT_START: int((~first & outside).sum()), HIDDEN_AT_START: int((~first & ~outside).sum())}
    return conditions.take(first), {reason: count for reason, count in dropped.items() if count}
