"""ATI image-to-video: diffusers' Wan2.1 I2V pipeline with the motion patch on its condition.

Wan2.1 I2V conditions every denoising step (both classifier-free-guidance branches) on the
same image latents ``y`` (4 mask channels + 16 VAE channels per latent frame). ATI writes
the trajectories into ``y`` once, before the loop (:mod:`.motion_patch`); everything else
is diffusers' own pipeline, so its memory options (CPU offload, VAE tiling and slicing,
attention backends) apply unchanged.

Sizes follow ATI: the output keeps the input image's aspect ratio inside a pixel budget
(480x832 or 720x1280), rounded to multiples of 16; 81 frames at 16 fps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from diffusers import WanImageToVideoPipeline
from PIL import Image

from tracefield.generate.motion_patch import patch_motion

log = logging.getLogger(__name__)

FRAMES, FPS = 81, 16
MAX_AREAS = {"480p": 480 * 832, "720p": 720 * 1280}
VAE_STRIDE, PATCH = 8, 2
# Wan's own negative prompt (shared_config.sample_neg_prompt): garish colours, overexposure, static,
# blurry details, subtitles, style, artwork, still frame, grey cast, worst/low quality, JPEG
# artefacts, ugly, mutilated, extra fingers, badly drawn hands and faces, deformed, disfigured,
# malformed limbs, fused fingers, motionless, cluttered background, three legs, crowded, walking backwards.
NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，"
    "多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)


def aspect_bucket(width: int, height: int, max_area: int) -> tuple[int, int]:
    """ATI's output size for a ``width`` x ``height`` image within ``max_area`` pixels -> (height, width)."""
    ratio = height / width
    lat_h = round(np.sqrt(max_area * ratio) // VAE_STRIDE // PATCH * PATCH)
    lat_w = round(np.sqrt(max_area / ratio) // VAE_STRIDE // PATCH * PATCH)
    return lat_h * VAE_STRIDE, lat_w * VAE_STRIDE


@dataclass
class GenerationOptions:
    resolution: str = "480p"
    steps: int = 40
    guidance_scale: float = 5.0
    shift: Optional[float] = None  # flow shift; None: 3.0 at 480p, 5.0 at 720p (Wan's advice)
    negative_prompt: str = NEGATIVE_PROMPT
    seed: int = 0
    max_area: Optional[int] = None  # pixel budget overriding the resolution's (small tests and previews)


class ATIPipeline(WanImageToVideoPipeline):
    """``WanImageToVideoPipeline`` whose image condition carries ATI's motion patch.

    Call :meth:`generate`; tracks are ATI's reader output ``[81, N, 4]`` for the image.
    """

    _tracks: Optional[torch.Tensor] = None

    def prepare_latents(self, *args, **kwargs):  # type: ignore[override]
        latents, condition = super().prepare_latents(*args, **kwargs)
        if self._tracks is not None:
            tracks = self._tracks.to(condition.device)[None]
            condition = torch.stack([patch_motion(tracks, item.float()).to(item.dtype) for item in condition])
        return latents, condition

    def generate(
        self, image: np.ndarray, prompt: str, tracks: torch.Tensor, options: GenerationOptions, on_step: Optional[Callable] = None
    ) -> np.ndarray:
        """One video ``[F, H, W, 3]`` uint8 for an RGB image, a prompt and its tracks.

        ``on_step`` is diffusers' ``callback_on_step_end`` (e.g. to time the steps).
        """
        height, width = aspect_bucket(image.shape[1], image.shape[0], options.max_area or MAX_AREAS[options.resolution])
        self.scheduler.register_to_config(flow_shift=options.shift or (3.0 if options.resolution == "480p" else 5.0))
        generator = torch.Generator(device="cpu").manual_seed(options.seed)
        self._tracks = tracks
        try:
            frames = self(
                image=Image.fromarray(image), prompt=prompt, negative_prompt=options.negative_prompt, height=height, width=width,
                num_frames=FRAMES, num_inference_steps=options.steps, guidance_scale=options.guidance_scale,
                generator=generator, output_type="np", callback_on_step_end=on_step,
            ).frames[0]
        finally:
            self._tracks = None
        return (np.clip(frames, 0, 1) * 255).round().astype(np.uint8)
