"""Frames -> trajectory field: selection, preprocessing, one forward pass, masks, outputs.

Per scene the outputs are written into a temporary folder and renamed into place at the
end, so a failure (bad frame, out of memory, Ctrl-C) leaves no partial scene and keeps any
earlier result of the same scene.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from tracefield.errors import TracefieldError
from tracefield.field import FrameInfo, TraceField
from tracefield.io.atomic import atomic_dir
from tracefield.io.frames import SceneSource, check_frame_sizes, count_frames, discover_scenes, read_frames, select_frames
from tracefield.io.preprocess import LONG_SIDE, Preprocess, to_network_input
from tracefield.masks import foreground_masks
from tracefield.model.network import TraceAnything
from tracefield.preview import field_preview
from tracefield.scene_folder import SceneFolder

log = logging.getLogger(__name__)



@dataclass
class InferOptions:
    max_frames: int = 40  # frames per pass, picked evenly over the clip
    stride: int = 1  # take every stride-th frame before picking
    long_side: int = LONG_SIDE  # resize frames to this long side (the model's runtime.long_side)
    release_output: bool = True  # also write the release's output.pt
    local_head: bool = False  # keep the local head's control points
    field_dtype: torch.dtype = torch.float16  # precision of points in field.safetensors
    progress: bool = True


@dataclass
class ScenePlan:
    """A scene and the frames to trace, checked before any model is loaded or frame decoded."""

    scene: SceneSource
    indices: list[int]
    total: int  # frames in the scene
    transform: Preprocess


@dataclass
class PreparedScene:
    frames: np.ndarray  # uint8 [N, H, W, 3] at network size
    time_steps: np.ndarray  # [N] in [0, 1]
    transform: Preprocess
    info: FrameInfo


def plan_scenes(inputs: Sequence[str | Path], options: InferOptions, name: Optional[str] = None) -> list[ScenePlan]:
    """Find the scenes, pick their frames and check sizes from file headers: bad input fails in seconds."""
    plans = []
    for scene in discover_scenes(inputs, name=name):
        total = count_frames(scene)
        indices = select_frames(total, options.max_frames, options.stride)
        height, width = check_frame_sizes(scene, indices)
        source = str(scene.paths[indices[0]] if scene.kind == "frames" else scene.paths[0])
        transform = Preprocess.plan(height, width, long_side=options.long_side, source=source)
        plans.append(ScenePlan(scene=scene, indices=indices, total=total, transform=transform))
    return plans


def prepare_scene(plan: ScenePlan, options: InferOptions) -> PreparedScene:
    """Decode and preprocess a scene's frames; time steps follow the frames' positions in the clip."""
    scene, indices = plan.scene, plan.indices
    if len(indices) < plan.total:
        log.info("%s: using %d of %d frames (%s ... %s)", scene.name, len(indices), plan.total, indices[:3], indices[-1])
    decoded = read_frames(scene, indices, progress=options.progress)
    frames = np.stack([plan.transform.apply(image) for image in decoded.images])
    span = max(indices[-1] - indices[0], 1)
    time_steps = (np.asarray(indices, dtype=np.float64) - indices[0]) / span
    info = FrameInfo(source=str(scene.location), names=decoded.names, indices=list(decoded.indices), fps=decoded.fps)
    if plan.transform.rotated:
        log.info("%s: portrait frames rotated to landscape (mapped back in exports)", scene.name)
    return PreparedScene(frames=frames, time_steps=time_steps, transform=plan.transform, info=info)


def predict(
    model: TraceAnything, frames: np.ndarray, time_steps: np.ndarray, label: str, progress: bool = True, local_head: bool = False
) -> dict[str, torch.Tensor]:
    """One forward pass over all frames; returns the network's per-frame outputs (batch axis dropped).

    The local head runs only when asked for: nothing but ``--local-head`` reads it.
    Out-of-memory becomes a one-line error suggesting fewer frames.
    """
    images = to_network_input(frames)[None]
    times = torch.as_tensor(time_steps, dtype=torch.float32)[None]
    num = len(frames)
    device = next(model.parameters()).device
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


def estimate_memory(model: TraceAnything, num_views: int, hw: Sequence[int], local_head: bool = False) -> int:
    """Rough peak bytes of tracing ``num_views`` frames: weights, decoder tokens, one head chunk, outputs.

    Close to measured peaks (8 full-size views in bf16 on an H200: 3.0 GiB estimated, 3.15 GiB
    measured); meant to refuse runs that cannot fit, not to plan tight ones.
    """
    net, param = model.net_config, next(model.parameters())
    item = param.element_size()
    height, width = hw
    tokens = num_views * (height // model.patch_size) * (width // model.patch_size)
    enc, dec = net.encoder_args.embed_dim, net.decoder_args.embed_dim
    weights = sum(p.numel() for p in model.parameters()) * item
    decoder = tokens * (enc + 3 * dec + 12 * dec) * item  # kept hooks + the working block
    attention_scratch = 4 * (1 << 25) if model.attention_backend == "math" else 0
    head_width = net.head_dims.last_dim + net.head_dims.feature_dim // 2 + 4 * net.num_ctrl_pts
    heads = min(num_views, model.runtime.head_chunk_views) * height * width * head_width * item * 2
    heads_kept = 2 if local_head and model.ds_head_local is not None else 1
    outputs = num_views * net.num_ctrl_pts * height * width * 4 * 4 * heads_kept  # fp32 points + conf
    return weights + decoder + attention_scratch + heads + outputs


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


def check_memory(model: TraceAnything, plan: ScenePlan, local_head: bool = False) -> None:
    """Refuse, in one line and before decoding, a scene whose frames cannot fit in memory."""
    device = next(model.parameters()).device
    free = available_memory(device)
    num = len(plan.indices)
    need = estimate_memory(model, num, plan.transform.model_hw, local_head)
    if free is None or need <= free:
        return
    per_view = estimate_memory(model, num + 1, plan.transform.model_hw, local_head) - need
    fits = max(0, int((free - (need - num * per_view)) // max(per_view, 1)))
    raise TracefieldError(
        f"{plan.scene.location}: {num} frames at "
        f"{plan.transform.model_hw[1]}x{plan.transform.model_hw[0]} need about {need / 2**30:.1f} GiB on {device} "
        f"but {free / 2**30:.1f} GiB are free; pass --max-frames {max(2, fits)} or fewer"
    )


def build_field(model: TraceAnything, prepared: PreparedScene, out: dict[str, torch.Tensor], local_head: bool) -> TraceField:
    """Wrap network outputs (on any device) into a CPU float32 :class:`TraceField` with masks."""
    masks = torch.from_numpy(foreground_masks(out["ctrl_pts3d"]))
    keep_local = local_head and "ctrl_pts3d_local" in out
    cpu = {key: value.float().cpu() for key, value in out.items() if keep_local or not key.endswith("_local")}
    return TraceField(
        ctrl_pts=cpu["ctrl_pts3d"],
        ctrl_conf=cpu["ctrl_conf"],
        times=cpu["time"],
        time_steps=torch.as_tensor(prepared.time_steps, dtype=torch.float32),
        images=torch.from_numpy(prepared.frames),
        fg_masks=masks,
        transform=prepared.transform,
        frames=prepared.info,
        model={
            "config": model.config_source,
            "checkpoint": model.checkpoint_source,
            "untrained": model.untrained,
            "num_ctrl_pts": model.num_ctrl_pts,
        },
        ctrl_pts_local=cpu["ctrl_pts3d_local"] if keep_local else None,
        ctrl_conf_local=cpu["ctrl_conf_local"] if keep_local else None,
    )


def infer_scene(model: TraceAnything, plan: ScenePlan, options: InferOptions) -> TraceField:
    prepared = prepare_scene(plan, options)
    out = predict(model, prepared.frames, prepared.time_steps, plan.scene.name, options.progress, options.local_head)
    return build_field(model, prepared, out, options.local_head)


def write_scene(field: TraceField, scene_dir: Path, options: InferOptions) -> Path:
    """Write field.safetensors, output.pt, images/, masks/ and preview.png into ``scene_dir`` atomically."""
    with atomic_dir(scene_dir) as tmp:
        new = SceneFolder(tmp)
        field.save(new.field_file, dtype=options.field_dtype)
        if options.release_output:
            field.save_release_output(new.release_file)
        _write_pngs(new.image, field.images.numpy())
        _write_pngs(new.mask, field.fg_masks.numpy().astype(np.uint8) * 255)
        _keep_user_masks(SceneFolder(scene_dir), new, field)
        field_preview(field).save(new.preview)
    return scene_dir


def _write_pngs(path_of: Callable[[int], Path], arrays: np.ndarray) -> None:
    for i, array in enumerate(arrays):
        path = path_of(i)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)


def _keep_user_masks(old: SceneFolder, new: SceneFolder, field: TraceField) -> None:
    """Carry a user's hand-made masks over a re-run; if they no longer fit, keep the old folder aside."""
    user = old.user_masks()
    if not user:
        return
    fits = len(user) == field.num_frames and all(Image.open(p).size == field.hw[::-1] for p in user)
    if fits:
        for p in user:
            shutil.copy2(p, new.masks / p.name)
        log.info("%s: kept %d user masks from the previous run", old.name, len(user))
        return
    backup = old.root.with_name(old.root.name + ".previous")
    shutil.rmtree(backup, ignore_errors=True)
    shutil.copytree(old.root, backup)
    log.warning("%s: user masks do not fit the new frames; the previous result is kept in %s", old.name, backup)


def run_infer(model: TraceAnything, plans: Sequence[ScenePlan], output_dir: str | Path, options: Optional[InferOptions] = None) -> list[Path]:
    """Trace every planned scene into ``output_dir/<scene>``; returns the scene folders."""
    options = options or InferOptions()
    output_dir = Path(output_dir)
    for plan in plans:
        check_memory(model, plan, options.local_head)
    written = []
    for plan in tqdm(plans, desc="scenes", unit="scene", disable=len(plans) < 2 or not options.progress or None):
        log.info("tracing %s", plan.scene.describe())
        field = infer_scene(model, plan, options)
        written.append(write_scene(field, output_dir / plan.scene.name, options))
        log.info("%s: wrote %s (look at %s)", plan.scene.name, written[-1], SceneFolder(written[-1]).preview)
    return written
