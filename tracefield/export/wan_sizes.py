"""Wan2.1's video sizes: the aspect bucket an image gets within a pixel budget, and the tokens it makes.

Wan's VAE downsamples 8x in space and 4x in time (plus the first frame), and its transformer
patches 2x2 latent cells. ATI and Wan-Move, two consumers of these exports, size their
videos with the same arithmetic: the Wan-Move reader and the bundled ATI generator share
this one copy (numpy only: exporting never imports diffusers).
"""

from __future__ import annotations

import numpy as np

from tracefield.errors import TracefieldError

VAE_STRIDE, PATCH, TEMPORAL_STRIDE = 8, 2, 4


def aspect_bucket(width: int, height: int, max_area: int) -> tuple[int, int]:
    """Wan's video size for a ``width`` x ``height`` image within ``max_area`` pixels -> (height, width)."""
    ratio = height / width
    lat_h = round(np.sqrt(max_area * ratio) // VAE_STRIDE // PATCH * PATCH)
    lat_w = round(np.sqrt(max_area / ratio) // VAE_STRIDE // PATCH * PATCH)
    if lat_h < PATCH or lat_w < PATCH:
        raise TracefieldError(f"--max-area {max_area}: too small for a {width}x{height} image (at least 16 px a side are needed)")
    return lat_h * VAE_STRIDE, lat_w * VAE_STRIDE


def latent_tokens(height: int, width: int, frames: int) -> int:
    """The transformer's sequence length for a ``height`` x ``width`` video of ``frames`` frames (81 frames of ATI's
    464x832 landscape bucket: 21 x 29 x 52 = 31,668)."""
    latent_frames = (frames - 1) // TEMPORAL_STRIDE + 1
    return latent_frames * (height // VAE_STRIDE // PATCH) * (width // VAE_STRIDE // PATCH)
