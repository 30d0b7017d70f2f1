#!/usr/bin/env python3
"""Make ``examples/shapes/``: the small synthetic clip that ``make demo`` traces.

16 frames of 256x448: a textured wall seen by a slowly panning camera, a disc moving
left to right and a square circling and turning. Deterministic; re-run to regenerate.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

HEIGHT, WIDTH, FRAMES = 256, 448, 16
OUT = Path(__file__).resolve().parent / "shapes"


def wall(shift: float) -> np.ndarray:
    """Checkerboard over colour gradients, shifted left by ``shift`` pixels (the camera pans right)."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    x = x + shift
    checker = ((x // 32 + y // 32) % 2).astype(np.float32)
    r = 0.55 + 0.25 * np.sin(x / 70.0) + 0.15 * checker
    g = 0.50 + 0.20 * np.cos(y / 45.0) + 0.10 * checker
    b = 0.45 + 0.20 * np.sin((x + y) / 90.0) - 0.10 * checker
    return np.clip(np.stack([r, g, b], axis=-1), 0, 1)


def draw_disc(img: np.ndarray, cx: float, cy: float, radius: float, colour: tuple) -> None:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    inside = (x - cx) ** 2 + (y - cy) ** 2 <= radius**2
    rings = 0.85 + 0.15 * np.cos(np.hypot(x - cx, y - cy) / 3.0)
    img[inside] = np.asarray(colour)[None, :] * rings[inside, None]


def draw_square(img: np.ndarray, cx: float, cy: float, half: float, angle: float, colour: tuple) -> None:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u = c * (x - cx) + s * (y - cy)
    v = -s * (x - cx) + c * (y - cy)
    inside = (np.abs(u) <= half) & (np.abs(v) <= half)
    stripes = 0.8 + 0.2 * ((u // 6) % 2)
    img[inside] = np.asarray(colour)[None, :] * stripes[inside, None]


def frame(i: int) -> np.ndarray:
    t = i / (FRAMES - 1)
    img = wall(shift=40.0 * t)
    draw_square(img, 300 + 60 * np.cos(2.2 * t), 120 + 50 * np.sin(2.2 * t), 34, 1.2 * t, (0.15, 0.35, 0.9))
    draw_disc(img, 70 + 220 * t, 170 - 40 * t, 30, (0.9, 0.2, 0.15))
    return (img * 255).round().astype(np.uint8)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for i in range(FRAMES):
        Image.fromarray(frame(i)).save(OUT / f"{i:03d}.png", optimize=True)


if __name__ == "__main__":
    main()
