"""Frames -> trajectory field, one scene: plan, decode, one forward pass, masks, the field.

The field is assembled where the network ran (the GPU): masks, casts and the preview are
computed there and only what is written comes back to the host. Running many scenes
(decoding, the network and writing overlapped; resuming; failures that do not stop the
others) is :mod:`tracefield.runner`; writing a scene folder is :mod:`tracefield.scene_writer`.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from tracefield.errors import TracefieldError
from tracefield.field import FrameInfo, TraceField
from tracefield.io.frames import DecodedFrames, SceneSource, check_frame_sizes, count_frames, discover_scenes, read_frames, read_whole_video, select_frames, time_range
from tracefield.io.preprocess import LONG_SIDE, Preprocess, to_network_input
from tracefield.masks import foreground_masks
from tracefield.model.config import ModelConfig, NetConfig, RuntimeArgs
from tracefield.model.network import TraceAnything

log = logging.getLogger(__name__)
RESIZE_THREADS = min(8, os.cpu_count() or 1)


@dataclass
class InferOptions:
    max_frames: int = 40  # frames per pass, picked evenly over the clip
    stride: int = 1  # take every stride-th frame before picking
    long_side: int = LONG_SIDE  # resize frames to this long side (the model's runtime.long_side, or --resolution)
    start: Optional[float] = None  # seconds into a video where the frames start (videos only)
    end: Optional[float] = None  # seconds into a video where they end (included)
    release_output: bool = False  # also write the release's output.pt (fp32: ~1 GB for 40 frames at 512x288)
    local_head: bool = False  # keep the local head's control points
    field_dtype: torch.dtype = torch.float16  # precision of points in field.safetensors
    overwrite: bool = False  # trace scenes again whose folder is already finished
    progress: bool = True


@dataclass
class ScenePlan:
    """A scene and the frames to trace, checked from file headers before any frame is decoded (a short video's frames are decoded by the check)."""

    scene: SceneSource
    indices: list[int]
    total: int  # frames in the scene
    transform: Preprocess
    decoded: Optional[DecodedFrames] = None  # the picked frames, when planning already decoded them (a short video)


@dataclass
class PreparedScene:
    frames: np.ndarray  # uint8 [N, H, W, 3] at network size
    time_steps: np.ndarray  # [N] in [0, 1]
    transform: Preprocess
    info: FrameInfo


def plan_scene(scene: SceneSource, options: InferOptions, on_open: Optional[Callable[[], None]] = None) -> ScenePlan:
    """Count the scene's frames, pick those to trace and check their sizes: bad input fails in a second.

    A short video is decoded here, once: the pass that counts its frames keeps the picked
    ones (:func:`~tracefield.io.frames.read_whole_video`). ``on_open``: called as soon as a
    video's header reads (the scene is traceable, so the network may start loading).
    """
    whole = read_whole_video(scene, on_open) if scene.kind == "video" else None
    total = len(whole.images) if whole is not None else count_frames(scene)
    span = time_range(scene, total, options.start, options.end, fps=whole.fps if whole is not None else None)
    indices = [span[i] for i in select_frames(len(span), options.max_frames, options.stride)]
    decoded = whole.select(indices) if whole is not None else None
    height, width = decoded.images[0].shape[:2] if decoded is not None else check_frame_sizes(scene, indices)
    source = str(scene.paths[indices[0]] if scene.kind == "frames" else scene.paths[0])
    transform = Preprocess.plan(height, width, long_side=options.long_side, source=source)
    return ScenePlan(scene=scene, indices=indices, total=total, transform=transform, decoded=decoded)


def plan_scenes(inputs: Sequence[str | Path], options: InferOptions, name: Optional[str] = None) -> list[ScenePlan]:
    """Find the scenes of command-line ``inputs`` and plan each."""
    return [plan_scene(scene, options) for scene in discover_scenes(inputs, name=name)]


def prepare_scene(plan: ScenePlan, options: InferOptions, progress: Optional[bool] = None) -> PreparedScene:
    """Decode and preprocess a scene's frames; time steps follow the frames' positions in the clip."""
    scene, indices = plan.scene, plan.indices
    if len(indices) < plan.total:
        log.info("%s: using %d of %d frames (%s ... %s)", scene.name, len(indices), plan.total, indices[:3], indices[-1])
    decoded = plan.decoded or read_frames(scene, indices, progress=options.progress if progress is None else progress)
    with ThreadPoolExecutor(RESIZE_THREADS) as pool:  # Pillow resizes without the GIL: 40 HD frames 0.29 s -> a few ms each
        frames = np.stack(list(pool.map(plan.transform.apply, decoded.images)))
    span = max(indices[-1] - indices[0], 1)
    time_steps = (np.asarray(indices, dtype=np.float64) - indices[0]) / span
    info = FrameInfo(source=str(scene.location), names=decoded.names, indices=list(decoded.indices), fps=decoded.fps)
    if plan.transform.rotated:
        log.info("%s: portrait frames rotated to landscape (mapped back in exports)", scene.name)
    return PreparedScene(frames=frames, time_steps=time_steps, transform=plan.transform, info=info)


def predict(
    model: TraceAnything, frames: np.ndarray | torch.Tensor, time_steps: np.ndarray, label: str, progress: bool = True, local_head: bool = False
) -> dict[str, torch.Tensor]:
    """One forward pass over all frames; returns the network's per-frame outputs (batch axis dropped), on its device.

    The local head runs only when asked for: nothing but ``--local-head`` reads it.
    Out-of-memory becomes a one-line error suggesting fewer frames.
    """
    device = next(model.parameters()).device
    pixels = torch.as_tensor(frames).to(device, non_blocking=True)
    images = to_network_input(pixels)[None]
    times = torch.as_tensor(time_steps, dtype=torch.float32)[None]
    num = len(frames)
    with tqdm(total=model.num_forward_steps(num, local_head), desc=f"tracing {label}", unit="step", leave=False, disable=not progress or None) as bar:
        try:
            with torch.inference_mode():
                out = model.predict(images, times, on_step=bar.update, local_head=local_head)
        except (MemoryError, RuntimeError) as exc:  # torch.cuda.OutOfMemoryError is a RuntimeError
            if not _is_out_of_memory(exc):
                raise
            _release_memory(device)
            raise _out_of_memory(label, num, frames.shape[1:3], device) from exc
    return {key: value[0] for key, value in out.items()}


def warm_up(model: TraceAnything, plan: ScenePlan, local_head: bool = False) -> None:
    """On CUDA, one pass on blank frames of ``plan``'s shape, so lazy kernels, cuDNN plans and CUDA graphs
    are ready when its frames arrive (run while they decode). Nothing to warm on the CPU."""
    if next(model.parameters()).device.type != "cuda":
        return
    height, width = plan.transform.model_hw
    blank = np.zeros((len(plan.indices), height, width, 3), np.uint8)
    out = predict(model, blank, np.linspace(0, 1, len(plan.indices)), "warm-up", progress=False, local_head=local_head)
    foreground_masks(out["ctrl_pts3d"])


def _is_out_of_memory(exc: BaseException) -> bool:
    """CUDA's and the CPU allocator's out-of-memory errors (the latter a plain RuntimeError)."""
    message = str(exc)
    return isinstance(exc, (torch.cuda.OutOfMemoryError, MemoryError)) or "can't allocate memory" in message or "out of memory" in message


def _release_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _out_of_memory(label: str, num: int, hw: Sequence[int], device: torch.device) -> TracefieldError:
    return TracefieldError(
        f"{label}: out of {'GPU' if device.type == 'cuda' else 'CPU'} memory for {num} frames at {hw[1]}x{hw[0]} on {device}; "
        f"lower --max-frames (e.g. --max-frames {max(2, num // 2)})"
        + (" or use --dtype bfloat16" if device.type == "cuda" else "")
    )


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class Footprint:
    """What the memory estimate needs to know of a network: known before its weights load, so
    scenes that cannot fit are refused before their frames are decoded."""

    net: NetConfig
    runtime: RuntimeArgs
    device: torch.device
    item: int  # bytes per weight and activation element
    weights: int  # bytes of all weights
    math_attention: bool
    local_head: bool  # the network has a local head

    @classmethod
    def of(cls, model: TraceAnything) -> "Footprint":
        param = next(model.parameters())
        return cls(model.net_config, model.runtime, param.device, param.element_size(), sum(p.numel() for p in model.parameters()) * param.element_size(),
                   model.attention_backend == "math", model.ds_head_local is not None)

    @classmethod
    def planned(cls, cfg: ModelConfig, device: torch.device, dtype: torch.dtype, attention: Optional[str] = None) -> "Footprint":
        """The footprint ``load_model(cfg, ..., device, dtype, attention)`` will have: the network built on the
        meta device, nothing run on ``device`` (``auto`` attention is the exact math path on the CPU only)."""
        with torch.device("meta"):
            model = TraceAnything(cfg.net, cfg.runtime)
        item = torch.empty((), dtype=dtype).element_size()
        requested = attention or cfg.runtime.attention
        math_attention = requested == "math" or (requested == "auto" and device.type != "cuda")
        return cls(cfg.net, cfg.runtime, device, item, sum(p.numel() for p in model.parameters()) * item, math_attention,
                   model.ds_head_local is not None)

    def keeps_local(self, local_head: bool) -> bool:
        """Whether a run asking for ``local_head`` keeps the local head's control points: only a network with one does."""
        return local_head and self.local_head


def estimate_memory(network: TraceAnything | Footprint, num_views: int, hw: Sequence[int], local_head: bool = False) -> int:
    """Rough peak bytes of tracing ``num_views`` frames: weights, decoder tokens, one head chunk, outputs.

    Close to measured peaks (8 full-size views in bf16 on an H200: 3.0 GiB estimated, 3.15 GiB
    measured); meant to refuse runs that cannot fit, not to plan tight ones.
    """
    fp = network if isinstance(network, Footprint) else Footprint.of(network)
    net = fp.net
    height, width = hw
    patch = net.encoder_args.patch_size
    tokens = num_views * (height // patch) * (width // patch)
    enc, dec = net.encoder_args.embed_dim, net.decoder_args.embed_dim
    decoder = tokens * (enc + 3 * dec + 12 * dec) * fp.item  # kept hooks + the working block
    attention_scratch = 4 * (1 << 25) if fp.math_attention else 0
    head_width = net.head_dims.last_dim + net.head_dims.feature_dim // 2 + 4 * net.num_ctrl_pts
    heads = min(num_views, fp.runtime.head_chunk_views) * height * width * head_width * fp.item * 2
    heads_kept = 2 if fp.keeps_local(local_head) else 1
    outputs = num_views * net.num_ctrl_pts * height * width * 4 * 4 * heads_kept  # fp32 points + conf
    return fp.weights + decoder + attention_scratch + heads + outputs


def available_memory(device: torch.device) -> Optional[int]:
    """Free bytes on ``device`` (CUDA: free device memory; CPU: MemAvailable), None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(network: TraceAnything | Footprint, plan: ScenePlan, local_head: bool = False) -> None:
    """Refuse, in one line and before decoding, a scene whose frames cannot fit in memory."""
    fp = network if isinstance(network, Footprint) else Footprint.of(network)
    free = available_memory(fp.device)
    num = len(plan.indices)
    need = estimate_memory(fp, num, plan.transform.model_hw, local_head)
    if free is None or need <= free:
        return
    per_view = estimate_memory(fp, num + 1, plan.transform.model_hw, local_head) - need
    fits = max(0, int((free - (need - num * per_view)) // max(per_view, 1)))
    raise TracefieldError(
        f"{plan.scene.location}: {num} frames at "
        f"{plan.transform.model_hw[1]}x{plan.transform.model_hw[0]} need about {need / 2**30:.1f} GiB on {fp.device} "
        f"but {free / 2**30:.1f} GiB are free; pass --max-frames {max(2, fits)} or fewer"
    )


# --------------------------------------------------------------------------- the field


def build_field(
    model: TraceAnything, prepared: PreparedScene, out: dict[str, torch.Tensor], options: InferOptions, masks: Optional[torch.Tensor] = None
) -> TraceField:
    """Network outputs -> a :class:`TraceField` on the network's device (the frames stay on the host), control points in
    ``options.field_dtype`` (float32 when the release's output.pt is written too: the field file is cast when written).

    ``masks``: the outputs' foreground masks when already computed (else computed here).
    """
    device = out["ctrl_pts3d"].device
    keep_local = options.local_head and "ctrl_pts3d_local" in out
    points = torch.float32 if options.release_output else options.field_dtype  # output.pt holds the network's float32 points
    return TraceField(
        ctrl_pts=out["ctrl_pts3d"].to(points),
        ctrl_conf=out["ctrl_conf"].float(),
        times=out["time"].float(),
        time_steps=torch.as_tensor(prepared.time_steps, dtype=torch.float32, device=device),
        images=torch.as_tensor(prepared.frames),  # stays on the host: nothing on the GPU reads the frames, and they are written from here
        fg_masks=foreground_masks(out["ctrl_pts3d"]) if masks is None else masks,
        transform=prepared.transform,
        frames=prepared.info,
        model={
            "config": model.config_source,
            "checkpoint": model.checkpoint_source,
            "untrained": model.untrained,
            "trained_on": getattr(model, "trained_on", None),
            "num_ctrl_pts": model.num_ctrl_pts,
        },
        ctrl_pts_local=out["ctrl_pts3d_local"].to(points) if keep_local else None,
        ctrl_conf_local=out["ctrl_conf_local"].float() if keep_local else None,
    )
