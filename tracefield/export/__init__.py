"""Export: chosen 3D trajectories -> the 2D track conditions of video generators.

``run_export`` is the whole path: select seeds on a frame (or take the viewer's picks),
evaluate their curves at the generator's frame times starting at that frame's time,
project them through the chosen camera, anchor each track at its picked pixel, place them
in the consumer's image, write the format with only the tracks its consumer can use, and
draw the pictures from the file read back. Formats and their defaults:

=============  ======  =====  =======================  =====================================
format         frames  fps    pixels of                files
=============  ======  =====  =======================  =====================================
ati            121     24     the frame (or --image)   .pth tracks, .yaml run list, .png image
worldcanvas    81      16     the 832x480 canvas       .json conditions, .png canvas image
comfyui        121     24     the 832x480 canvas       .json tracks, .png canvas image
wanmove        81      16     the 832x480 canvas       <name>/tracks.npy + visibility.npy, .png
npz            N       clip   the frame (or --image)   .npz with 3D points, cameras, ids
=============  ======  =====  =======================  =====================================

Coordinates follow one convention (origin at the image's top-left corner, pixel i spans
[i, i+1)) and one visibility rule (seen and inside the image), see
:mod:`tracefield.export.canvas` and :mod:`tracefield.export.conditions`; each format
module documents what its consumer does with hidden, occluded and off-image points.
Every export also writes ``<name>_tracks.png`` (the first image with the tracks the file
holds) and ``<name>_tracks.mp4`` (the frames with growing trails).
"""

from __future__ import annotations

import importlib
from typing import Any

FORMATS = {  # name: (frames, fps, canvas) with None meaning the field's own / original pixels
    "ati": (121, 24.0, None),
    "worldcanvas": (81, 16.0, "832x480"),
    "comfyui": (121, 24.0, "832x480"),
    "wanmove": (81, 16.0, "832x480"),
    "npz": (None, None, None),
}

STRATEGIES = ("objects", "grid", "fps", "pixels")  # how seeds are picked (tracefield.export.selection)
REGIONS = ("foreground", "background", "all")  # where

_LAZY = {"run_export", "ExportOptions", "ExportResult", "DEFAULT_PROMPT"}  # loaded on first use: they pull in cv2, imageio
__all__ = sorted(_LAZY | {"FORMATS", "REGIONS", "STRATEGIES"})


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tracefield.export' has no attribute {name!r}")
    return getattr(importlib.import_module("tracefield.export.run"), name)
