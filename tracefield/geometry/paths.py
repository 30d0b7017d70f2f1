"""User camera paths: the same motion filmed by a camera that orbits, dollies, pans or zooms.

A path is a small YAML mapping; every move ramps from nothing at the clip's start to its
full amount at its end (``ease: smooth`` eases in and out), and the moves compose:

    orbit: {degrees: 30, axis: y}   # around the scene centre (median depth of frame 0)
    dolly: {amount: 0.3}            # forward, as a fraction of the scene depth
    pan:   {degrees: -10}           # turn in place about the vertical axis (tilt: horizontal)
    zoom:  {factor: 1.5}            # focal length multiplier
    ease:  smooth

Positive orbit degrees move the camera to the right around the centre.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from scipy.spatial.transform import Rotation

from tracefield.errors import TracefieldError
from tracefield.geometry.camera import Camera, Intrinsics
from tracefield.io.yaml_file import load_yaml_file

MOVES = {"orbit": ("degrees", "axis"), "dolly": ("amount",), "pan": ("degrees",), "tilt": ("degrees",), "zoom": ("factor",)}


@dataclass
class CameraPath:
    moves: dict[str, dict[str, Any]]
    ease: str
    intrinsics: Intrinsics
    scene_depth: float  # median depth of frame 0, sets orbit centre and dolly scale

    def at(self, t: float) -> Camera:
        """The camera at normalised clip time ``t`` in [0, 1]."""
        s = float(np.clip(t, 0.0, 1.0))
        if self.ease == "smooth":
            s = s * s * (3 - 2 * s)
        rotation, centre = np.eye(3), np.zeros(3)
        focal = self.intrinsics.focal
        for name, args in self.moves.items():
            if name == "orbit":
                axis = {"x": [1.0, 0, 0], "y": [0, -1.0, 0], "z": [0, 0, 1.0]}[args.get("axis", "y")]
                turn = Rotation.from_rotvec(np.radians(args["degrees"] * s) * np.asarray(axis)).as_matrix()
                pivot = np.array([0.0, 0.0, self.scene_depth])
                centre = pivot + turn @ (centre - pivot)
                rotation = rotation @ turn.T
            elif name == "dolly":
                centre = centre + rotation.T @ np.array([0.0, 0.0, args["amount"] * self.scene_depth * s])
            elif name in ("pan", "tilt"):
                axis = [0, 1.0, 0] if name == "pan" else [1.0, 0, 0]
                rotation = Rotation.from_rotvec(np.radians(args["degrees"] * s) * np.asarray(axis)).as_matrix().T @ rotation
            elif name == "zoom":
                focal = focal * (1 + (args["factor"] - 1) * s)
        return Camera(Intrinsics(focal, self.intrinsics.cx, self.intrinsics.cy), rotation, -rotation @ centre)


def load_camera_path(source: str | Path | Mapping[str, Any], intrinsics: Intrinsics, scene_depth: float) -> CameraPath:
    """Parse a path from a YAML file (or mapping), naming the file and the key on any mistake."""
    name = str(source) if not isinstance(source, Mapping) else "<camera path>"
    if isinstance(source, Mapping):
        spec = dict(source)
    else:
        spec = load_yaml_file(Path(source), "camera path file not found; write a YAML such as 'orbit: {degrees: 30}'") or {}
    if not isinstance(spec, dict):
        raise TracefieldError(f"{name}: a camera path is a mapping of moves; e.g. 'orbit: {{degrees: 30}}'")
    ease = spec.pop("ease", "linear")
    if ease not in ("linear", "smooth"):
        raise TracefieldError(f"{name}: ease={ease!r}; use linear or smooth")
    moves = {}
    for move, args in spec.items():
        if move not in MOVES:
            raise TracefieldError(f"{name}: unknown move {move!r}; use {', '.join(MOVES)}")
        args = args if isinstance(args, dict) else {MOVES[move][0]: args}
        required = MOVES[move][0]
        if required not in args or not isinstance(args[required], (int, float)):
            raise TracefieldError(f"{name}: {move} needs a number '{required}', e.g. '{move}: {{{required}: 1}}'")
        if move == "orbit" and args.get("axis", "y") not in ("x", "y", "z"):
            raise TracefieldError(f"{name}: orbit axis {args['axis']!r}; use x, y or z")
        moves[move] = args
    return CameraPath(moves=moves, ease=ease, intrinsics=intrinsics, scene_depth=float(scene_depth))
