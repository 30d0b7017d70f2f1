"""The release's preprocessing, recorded so every output maps back to original pixels.

The network sees landscape frames whose long side is 512 and whose sides are multiples of
16: portrait frames are rotated 90 degrees counter-clockwise, resized with PIL's bilinear
filter (as the release does), and cropped at the top-left. The release forgets this;
:class:`Preprocess` keeps it and maps pixel coordinates both ways.

Coordinates are continuous pixels with pixel centres at integers (OpenCV's convention):
the top-left pixel's centre is (0, 0), x to the right, y down.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image

from tracefield.errors import TracefieldError

LONG_SIDE = 512
MULTIPLE = 16


@dataclass(frozen=True)
class Preprocess:
    """original (H0, W0) -> [rotate 90 CCW if portrait] -> resize to resized_hw -> crop to model_hw."""

    original_hw: tuple[int, int]
    rotated: bool
    resized_hw: tuple[int, int]
    model_hw: tuple[int, int]

    @classmethod
    def plan(cls, height: int, width: int, long_side: int = LONG_SIDE, multiple: int = MULTIPLE, source: str = "frame") -> "Preprocess":
        """The release's sizes for a ``height`` x ``width`` frame."""
        rotated = height > width
        h, w = (width, height) if rotated else (height, width)
        resized = (int(h * long_side / w), long_side)
        model = (resized[0] - resized[0] % multiple, resized[1] - resized[1] % multiple)
        if min(model) < multiple:
            raise TracefieldError(
                f"{source}: a {width}x{height} frame becomes {resized[1]}x{resized[0]} at long side {long_side}, "
                f"too thin for {multiple}-pixel patches; crop it to an aspect ratio under {long_side // multiple}:1"
            )
        return cls(original_hw=(height, width), rotated=rotated, resized_hw=resized, model_hw=model)

    # ------------------------------------------------------------------ images
    def apply(self, image: np.ndarray) -> np.ndarray:
        """uint8 ``[H0, W0, 3]`` original frame -> uint8 ``[H, W, 3]`` network frame."""
        if tuple(image.shape[:2]) != self.original_hw:
            raise ValueError(f"frame is {image.shape[:2]}, expected {self.original_hw}")
        pil = Image.fromarray(image)
        if self.rotated:
            pil = pil.transpose(Image.Transpose.ROTATE_90)
        pil = pil.resize((self.resized_hw[1], self.resized_hw[0]), Image.BILINEAR)
        pil = pil.crop((0, 0, self.model_hw[1], self.model_hw[0]))
        return np.asarray(pil)

    # ------------------------------------------------------------------ points
    def to_original(self, xy: Any) -> np.ndarray:
        """Network-frame pixel coordinates ``[..., 2]`` (x, y) -> original-frame coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        rot_w, rot_h = self._rotated_wh()
        x = (xy[..., 0] + 0.5) * (rot_w / self.resized_hw[1]) - 0.5
        y = (xy[..., 1] + 0.5) * (rot_h / self.resized_hw[0]) - 0.5
        if self.rotated:  # rotated (x', y') = (y, W0 - 1 - x)
            x, y = self.original_hw[1] - 1 - y, x
        return np.stack([x, y], axis=-1)

    def to_model(self, xy: Any) -> np.ndarray:
        """Original-frame pixel coordinates ``[..., 2]`` -> network-frame coordinates (may fall in the crop)."""
        xy = np.asarray(xy, dtype=np.float64)
        x, y = xy[..., 0], xy[..., 1]
        if self.rotated:
            x, y = y, self.original_hw[1] - 1 - x
        rot_w, rot_h = self._rotated_wh()
        x = (x + 0.5) * (self.resized_hw[1] / rot_w) - 0.5
        y = (y + 0.5) * (self.resized_hw[0] / rot_h) - 0.5
        return np.stack([x, y], axis=-1)

    def _rotated_wh(self) -> tuple[int, int]:
        h0, w0 = self.original_hw
        return (h0, w0) if self.rotated else (w0, h0)

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Preprocess":
        return cls(
            original_hw=tuple(data["original_hw"]),
            rotated=bool(data["rotated"]),
            resized_hw=tuple(data["resized_hw"]),
            model_hw=tuple(data["model_hw"]),
        )

    @classmethod
    def identity(cls, height: int, width: int) -> "Preprocess":
        """For fields whose original frames are unknown (e.g. the release's output.pt)."""
        return cls(original_hw=(height, width), rotated=False, resized_hw=(height, width), model_hw=(height, width))


def to_network_input(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``[N, H, W, 3]`` -> float ``[N, 3, H, W]`` in [-1, 1], computed like the release's transforms.

    A tensor stays on its device (synthetic scenes rendered on the GPU need no round trip).
    """
    pixels = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
    x = pixels.permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.5


def from_network_input(images: torch.Tensor) -> np.ndarray:
    """float ``[N, 3, H, W]`` in [-1, 1] -> uint8 ``[N, H, W, 3]`` (rounded; the release truncates)."""
    x = images.detach().float().cpu().add(1.0).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)  # channels first: contiguous
    return x.permute(0, 2, 3, 1).contiguous().numpy()
