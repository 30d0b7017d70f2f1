"""Export: chosen 3D trajectories -> the 2D track conditions of video generators.

``run_export`` is the whole path: select seeds on a frame, evaluate their curves at the
generator's frame times, project them through the chosen camera, decide visibility, write
the format, and draw the pictures that come with it. Formats and their defaults:

=============  ======  =====  ================  =======================================
format         frames  fps    coordinates       files
=============  ======  =====  ================  =======================================
ati            121     24     original pixels   .pth tracks, .yaml run list, .png image
worldcanvas    81      16     832x480 canvas    .json conditions, .png image
comfyui        121     24     832x480 canvas    .json tracks, .png image
wanmove        81      16     832x480 canvas    <name>/tracks.npy + visibility.npy
npz            N       clip   original pixels   .npz with 3D points, cameras, ids
=============  ======  =====  ================  =======================================

Every export also writes ``<name>_tracks.png`` (first frame with the tracks) and
``<name>_tracks.mp4`` (the frames with growing trails).
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

_LAZY = {"run_export", "ExportOptions", "ExportResult", "DEFAULT_PROMPT"}  # loaded on first use: they pull in cv2, imageio
__all__ = sorted(_LAZY | {"FORMATS"})


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tracefield.export' has no attribute {name!r}")
    return getattr(importlib.import_module("tracefield.export.run"), name)
