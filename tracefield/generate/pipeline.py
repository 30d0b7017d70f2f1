"""ATI image-to-video: Wan2.1 I2V with ATI's motion patch, computing what ATI's ``WanATI.generate`` computes.

The components are diffusers' and transformers' classes (Wan transformer and VAE, UMT5,
CLIP vision), so their attention backends and memory options apply; the orchestration is
ATI's, because ATI's weights were trained with ATI's preprocessing and schedule, and
diffusers' Wan pipeline differs from it in ways that change the video:

1. the first frame: the image as a [-1, 1] tensor, resized with torch bicubic (no
   antialiasing, no clamp) to the size bucket, then VAE-encoded with 80 black frames
   (diffusers: PIL Lanczos);
2. the CLIP input: the whole [-1, 1] image squashed to the encoder's square size with torch
   bicubic, mapped to [0, 1] and normalised (diffusers: short-side resize and centre crop);
3. the schedule: ATI's sigma grids (:mod:`.schedule`);
4. ATI's negative prompt ("镜头晃动，" before Wan's) and defaults: shift 5.0, 40 steps,
   guidance 5.0;
5. the noise drawn like ATI: one ``torch.randn(16, T, h, w)`` from a generator seeded on
   the device that runs the model (CUDA and CPU generators give different numbers);
6. precisions: VAE in float32, CLIP in float16 and UMT5 in bfloat16 on CUDA; the transformer
   under bfloat16 autocast with its residual stream, time embedding and output head in
   float32, as ATI's ``WanModel`` runs (see :func:`match_ati_precision`);
7. frames truncated to uint8 (:func:`to_uint8`).

Both guidance branches can run as one batch of two (``batch_guidance``); the motion patch
(:mod:`.motion_patch`) writes the tracks into the image condition once, before the loop.
One video can be spread over several processes (:mod:`.parallel` sets :attr:`ATIPipeline.parallel`).
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiffusionPipeline
from tqdm import tqdm

from tracefield.errors import TracefieldError
from tracefield.export.wan_sizes import TEMPORAL_STRIDE, VAE_STRIDE, aspect_bucket
from tracefield.generate import MAX_AREAS, OFFLOAD_MODES
from tracefield.generate.motion_patch import MASK_CHANNELS, patch_motion
from tracefield.generate.schedule import make_scheduler

if TYPE_CHECKING:
    from tracefield.generate.parallel import Spread

log = logging.getLogger(__name__)

FRAMES, FPS = 81, 16
LATENT_CHANNELS, TEXT_LENGTH = 16, 512
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Wan's negative prompt (garish colours, overexposure, static, blurry details, subtitles, style,
# artwork, still frame, grey cast, worst/low quality, JPEG artefacts, ugly, mutilated, extra
# fingers, badly drawn hands and faces, deformed, disfigured, malformed limbs, fused fingers,
# motionless, cluttered background, three legs, crowded, walking backwards), which ATI's I2V
# config prefixes with "camera shake,".
WAN_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，"
    "多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)
ATI_NEGATIVE_PROMPT = "镜头晃动，" + WAN_NEGATIVE_PROMPT


@dataclass
class GenerationOptions:
    """ATI's ``generate.py`` settings; the defaults are ATI's."""

    steps: int = 40
    guidance_scale: float = 5.0
    shift: float = 5.0
    solver: str = "unipc"
    negative_prompt: str = ATI_NEGATIVE_PROMPT
    seed: int = 0  # -1: a random seed, logged
    frames: int = FRAMES
    max_area: int = MAX_AREAS["480p"]
    noise_device: Optional[str] = None  # where the noise generator runs; None: the transformer's device, as ATI
    batch_guidance: bool = True  # both guidance branches in one batch of two

    def resolved_seed(self) -> int:
        if self.seed >= 0:
            return self.seed
        seed = random.randint(0, 2**63 - 1)
        log.warning("seed -1: using random seed %d (pass --seed %d to repeat this video)", seed, seed)  # shown even with -q
        return seed


Stage = Callable[[str, torch.Tensor], None]


def signed_image(image: np.ndarray) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> ``[3, H, W]`` in [-1, 1], with ATI's arithmetic (``to_tensor``, ``- 0.5``, ``/ 0.5``)."""
    return torch.tensor(image).permute(2, 0, 1).float().div(255).sub(0.5).div(0.5)


def first_frame(signed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The conditioning frame: torch bicubic to the bucket size, no antialiasing, no clamp (ATI)."""
    return F.interpolate(signed[None], size=(height, width), mode="bicubic")[0]


def clip_pixels(signed: torch.Tensor, size: int) -> torch.Tensor:
    """The image encoder's input: the whole image squashed to ``size``² (torch bicubic), to [0, 1], normalised (ATI)."""
    squashed = F.interpolate(signed[None], size=(size, size), mode="bicubic", align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=signed.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=signed.device).view(1, 3, 1, 1)
    return (squashed.mul(0.5).add(0.5) - mean) / std


def clean_prompt(text: str) -> str:
    """Wan's prompt cleaning: ftfy, HTML entities, whitespace (what its tokenizer wrapper does)."""
    import html

    import ftfy

    return re.sub(r"\s+", " ", html.unescape(html.unescape(ftfy.fix_text(text))).strip()).strip()


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """``[3, F, H, W]`` in [-1, 1] -> ``[F, H, W, 3]`` uint8, truncated as ATI's ``cache_video`` saves it."""
    return ((video.clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()


def match_ati_precision(transformer: torch.nn.Module) -> torch.nn.Module:
    """Make the transformer's bfloat16 run follow ATI's: float32 residual stream, time embedding and head.

    ATI keeps float32 weights and runs its ``WanModel`` under bfloat16 autocast: matrix
    products in bfloat16, but its residual additions produce float32, and the time embedding,
    time projection and output head run in float32. With weight matrices stored in bfloat16
    (what autocast would round them to anyway) and everything else in float32
    (:func:`.weights.target_dtype`), these hooks give the same numerics at half the memory.
    They change nothing in a float32 run.
    """
    def float_output(module, args, output):
        return output.float()

    def in_float32(forward):
        def run(*args, **kwargs):
            args = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
            with torch.autocast(device_type=transformer.device.type, enabled=False):
                return forward(*args, **kwargs)
        return run

    if getattr(transformer, "_ati_precision", False):
        return transformer
    transformer.patch_embedding.register_forward_hook(float_output)
    embedder = transformer.condition_embedder
    for module in (embedder.time_embedder, embedder.time_proj, transformer.proj_out):
        module.forward = in_float32(module.forward)
    transformer._ati_precision = True
    return transformer


def compute_dtype(transformer: torch.nn.Module) -> torch.dtype:
    """The dtype the transformer's matrix products run in: that of its weight matrices."""
    return transformer.blocks[0].attn1.to_q.weight.dtype


def transformer_autocast(transformer: torch.nn.Module, device: torch.device) -> torch.autocast:
    """ATI's autocast around the transformer: matrix products in its weights' dtype."""
    dtype = compute_dtype(transformer)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)


def both_branches(transformer, x, t, contexts, clip_features, batch: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Flow predictions of ``x`` (``[1, C, T, h, w]``: latent and condition) with the prompt and the negative
    prompt (``contexts[0]``, ``contexts[1]``): in one batch of two, or one after the other (ATI's order)."""
    if batch:
        out = transformer(hidden_states=x.expand(2, -1, -1, -1, -1), timestep=t.expand(2), encoder_hidden_states=contexts,
                          encoder_hidden_states_image=clip_features.expand(2, -1, -1), return_dict=False)[0]
        return out[0].float(), out[1].float()
    return one_branch(transformer, x, t, contexts, clip_features, 0), one_branch(transformer, x, t, contexts, clip_features, 1)


def one_branch(transformer, x, t, contexts, clip_features, i: int) -> torch.Tensor:
    """One guidance branch alone: 0 with the prompt, 1 with the negative prompt."""
    return transformer(hidden_states=x, timestep=t[None], encoder_hidden_states=contexts[i:i + 1],
                       encoder_hidden_states_image=clip_features, return_dict=False)[0][0].float()


class ATIPipeline(DiffusionPipeline):
    """Wan2.1 I2V components run ATI's way; :meth:`generate` makes one video.

    ``text_encoder``/``tokenizer`` (UMT5) and ``image_encoder`` (CLIP vision) may be replaced
    by overriding :meth:`encode_text` and :meth:`encode_image`.
    """

    model_cpu_offload_seq = "text_encoder->image_encoder->transformer->vae"

    def __init__(self, tokenizer, text_encoder, image_encoder, vae, transformer) -> None:
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, image_encoder=image_encoder, vae=vae, transformer=transformer)
        self.device_for_models = torch.device("cpu")
        self.offload: Optional[str] = None
        self.parallel: Optional[Spread] = None  # one video over several processes (see .parallel)
        match_ati_precision(transformer)

    # ------------------------------------------------------------------ placement
    def place(self, device: torch.device, offload: Optional[str] = None) -> "ATIPipeline":
        """Run on ``device``. ``offload="model"``: every component waits on the CPU until its turn (ATI's
        ``offload_model``); ``"blocks"``: moreover the transformer's blocks stream in one at a time."""
        if offload not in (None, *OFFLOAD_MODES):
            raise TracefieldError(f"--offload {offload}: unknown; use one of {', '.join(OFFLOAD_MODES)}")
        self.device_for_models = torch.device(device)
        self.offload = offload if self.device_for_models.type == "cuda" else None
        for module in self._modules():
            module.to("cpu" if self.offload else device)
        if self.offload == "blocks":
            self.transformer.enable_group_offload(self.device_for_models, offload_device=torch.device("cpu"), offload_type="block_level",
                                                  num_blocks_per_group=1, use_stream=True)
        return self

    def _modules(self) -> list[torch.nn.Module]:
        return [m for m in (self.text_encoder, self.image_encoder, self.transformer, self.vae) if isinstance(m, torch.nn.Module)]

    @contextlib.contextmanager
    def using(self, module) -> Iterator[None]:
        """``module`` on the run device for the block; back to the CPU after it when offloading."""
        swap = bool(self.offload) and isinstance(module, torch.nn.Module) and not (self.offload == "blocks" and module is self.transformer)
        if swap:
            module.to(self.device_for_models)
        try:
            yield
        finally:
            if swap:
                module.to("cpu")
                torch.cuda.empty_cache()

    # ------------------------------------------------------------------ encoders
    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """UMT5 states of each prompt, zero beyond its length, padded to 512 tokens -> ``[B, 512, D]`` float32."""
        tokens = self.tokenizer([clean_prompt(p) for p in prompts], padding="max_length", max_length=TEXT_LENGTH,
                                truncation=True, add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        device = self.device_for_models
        with self.using(self.text_encoder):
            states = self.text_encoder(tokens.input_ids.to(device), tokens.attention_mask.to(device)).last_hidden_state
        keep = tokens.attention_mask.to(device).bool()[..., None]
        return torch.where(keep, states.float(), 0.0)

    @torch.no_grad()
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP's penultimate-layer states (what Wan's I2V reads) -> ``[B, tokens, 1280]`` float32."""
        with self.using(self.image_encoder):
            dtype = self.image_encoder.dtype
            out = self.image_encoder(pixel_values=pixels.to(self.device_for_models, dtype), output_hidden_states=True)
        return out.hidden_states[-2].float()

    @property
    def clip_size(self) -> int:
        return int(self.image_encoder.config.image_size)

    # ------------------------------------------------------------------ VAE
    def _latent_stats(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.vae.config.latents_mean, device=device).view(1, -1, 1, 1, 1)
        std = torch.tensor(self.vae.config.latents_std, device=device).view(1, -1, 1, 1, 1)
        return mean, std

    @torch.no_grad()
    def image_condition(self, frame: torch.Tensor, frames: int) -> torch.Tensor:
        """``y`` before the motion patch: 4 mask channels (1 on the first latent frame) and the VAE latents of
        ``[frame, frames - 1 black frames]`` -> ``[20, T, h, w]`` float32."""
        _, height, width = frame.shape
        device = self.device_for_models
        video = torch.cat([frame[:, None], frame.new_zeros(3, frames - 1, height, width)], dim=1)
        with self.using(self.vae):
            dist = self.vae.encode(video[None].to(device, self.vae.dtype)).latent_dist
            mean, std = self._latent_stats(device)
            latents = ((dist.mode().float() - mean) * (1.0 / std))[0]
        latent_frames = latents.shape[1]
        mask = torch.zeros(MASK_CHANNELS, latent_frames, *latents.shape[2:], device=device)
        mask[:, 0] = 1
        return torch.cat([mask, latents])

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Latents ``[16, T, h, w]`` -> video ``[3, F, H, W]`` float32 in [-1, 1]."""
        with self.using(self.vae):
            mean, std = self._latent_stats(self.device_for_models)
            z = latent[None].to(self.device_for_models, self.vae.dtype) / (1.0 / std) + mean
            return self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0][0].float().clamp(-1, 1)

    # ------------------------------------------------------------------ denoising
    def _predict(self, latent, y, contexts, clip_features, t, batch: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The transformer's flow prediction with the prompt and with the negative prompt."""
        x = torch.cat([latent, y])[None]
        with transformer_autocast(self.transformer, self.device_for_models):
            if self.parallel is not None and self.parallel.branch is not None:  # this process runs one branch, its peer the other
                return self.parallel.both_branches(one_branch(self.transformer, x, t, contexts, clip_features, self.parallel.branch))
            return both_branches(self.transformer, x, t, contexts, clip_features, batch)

    @torch.no_grad()
    def prepare(self, image: np.ndarray, prompt: str, tracks: torch.Tensor, options: GenerationOptions,
                on_stage: Optional[Stage] = None) -> "Conditions":
        """Everything the denoising loop reads: text and image features, the motion-patched condition, the noise."""
        stage = on_stage or (lambda name, tensor: None)
        if options.frames % TEMPORAL_STRIDE != 1:
            raise TracefieldError(f"--frames {options.frames}: must be 4n + 1 (ATI uses 81)")
        if options.frames != tracks.shape[0]:
            raise TracefieldError(f"tracks have {tracks.shape[0]} frames but --frames is {options.frames}; export tracks for {options.frames} frames")
        device = self.device_for_models
        height, width = aspect_bucket(image.shape[1], image.shape[0], options.max_area)
        signed = signed_image(image)
        resized = first_frame(signed, height, width)
        stage("resized", resized)
        pixels = clip_pixels(signed.to(device), self.clip_size)
        stage("clip_pixels", pixels)

        contexts = self.encode_text([prompt, options.negative_prompt])
        clip_features = self.encode_image(pixels)
        y = self.image_condition(resized, options.frames)
        stage("y_before_patch", y)
        y = patch_motion(tracks.to(device, torch.float32)[None], y)
        stage("y", y)

        seed = options.resolved_seed()
        noise_device = torch.device(options.noise_device) if options.noise_device else device
        generator = torch.Generator(device=noise_device).manual_seed(seed)
        latent_frames = (options.frames - 1) // TEMPORAL_STRIDE + 1
        noise = torch.randn(LATENT_CHANNELS, latent_frames, height // VAE_STRIDE, width // VAE_STRIDE,
                            dtype=torch.float32, generator=generator, device=noise_device).to(device)
        stage("noise", noise)
        return Conditions(contexts, clip_features, y, noise)

    @torch.no_grad()
    def denoise(self, conditions: "Conditions", options: GenerationOptions, on_stage: Optional[Stage] = None,
                progress: bool = True) -> torch.Tensor:
        """The sampling loop: both guidance branches per step, then the solver's step -> final latents ``[16, T, h, w]``."""
        stage = on_stage or (lambda name, tensor: None)
        scheduler = make_scheduler(options.solver, options.steps, options.shift, self.device_for_models)
        stage("sigmas", scheduler.sigmas)
        stage("timesteps", scheduler.timesteps)
        latent = conditions.noise
        with self.using(self.transformer):
            bar = tqdm(scheduler.timesteps, desc="denoising", unit="step", disable=not progress or None)
            for i, t in enumerate(bar):
                started = time.perf_counter()
                cond, uncond = self._predict(latent, conditions.y, conditions.contexts, conditions.clip_features, t, options.batch_guidance)
                guided = uncond + options.guidance_scale * (cond - uncond)
                latent = scheduler.step(guided[None], t, latent[None], return_dict=False)[0][0]
                stage(f"latents.{i}", latent)
                log.debug("step %d/%d (t=%d): %.2f s", i + 1, options.steps, int(t), time.perf_counter() - started)
        return latent

    @torch.no_grad()
    def generate(self, image: np.ndarray, prompt: str, tracks: torch.Tensor, options: GenerationOptions,
                 on_stage: Optional[Stage] = None, progress: bool = True) -> Optional[torch.Tensor]:
        """One video ``[3, F, H, W]`` in [-1, 1] for an RGB uint8 image, its prompt and its tracks.

        ``tracks`` is ATI's reader output ``[F, N, 4]`` (t, x, y, visibility) for this image.
        ``on_stage(name, tensor)`` sees every intermediate (``resized``, ``clip_pixels``,
        ``y_before_patch``, ``y``, ``noise``, ``sigmas``, ``timesteps``, ``latents.<i>``, ``video``).
        Spread over processes, all take process 0's conditions and only process 0 decodes:
        the others return None.
        """
        conditions = self.prepare(image, prompt, tracks, options, on_stage)
        if self.parallel is not None:
            conditions = self.parallel.same_conditions(conditions)
        latent = self.denoise(conditions, options, on_stage, progress)
        if self.parallel is not None and not self.parallel.leader:
            return None
        video = self.decode(latent)
        if on_stage is not None:
            on_stage("video", video)
        return video


@dataclass
class Conditions:
    """What the denoising loop reads (see :meth:`ATIPipeline.prepare`)."""

    contexts: torch.Tensor  # [2, 512, D] prompt and negative prompt
    clip_features: torch.Tensor  # [1, tokens, 1280]
    y: torch.Tensor  # [20, T, h, w] the motion-patched image condition
    noise: torch.Tensor  # [16, T, h, w] the initial latent
