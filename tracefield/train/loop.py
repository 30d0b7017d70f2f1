"""``tracefield train``: the network on synthetic scenes rendered on the fly.

Each step renders fresh scenes from seeds (no dataset on disk, never the evaluation seeds),
runs the network, and applies :mod:`tracefield.train.losses` with AdamW, warm-up + cosine
learning rate, gradient clipping and bf16 autocast on CUDA. ``<output>/last.pt`` holds the
weights, optimiser, schedule and step (tensors and numbers only: it reloads with
``weights_only=True``), so a run split across calls resumes exactly where it stopped;
``<output>/model.safetensors`` is the fp16 model with its config, and ``log.csv`` the losses
and seconds of every step.

Started by ``torchrun --nproc_per_node G -m tracefield train ...``, G processes train one
model data-parallel: each renders its own share of every step's scenes (``batch_size``
per process), gradients are averaged across them after each backward pass, and process 0
alone logs and writes checkpoints (its own losses are the ones logged).

The network has no dropout or batch norm: train and eval modes differ only in the decoder's
inference logit gain. Training from scratch uses the eval-mode function throughout, so
the weights learn the function inference runs (``train_mode_attention: true`` restores the
release's training scale, e.g. to fine-tune the public checkpoint as it was trained).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import torch
import torch.distributed as dist
from omegaconf import OmegaConf
from tqdm import tqdm

from tracefield.data.synthetic import EVAL_SEED_BASE, SceneConfig, render_scene
from tracefield.data.toy import check_curriculum, stage_at
from tracefield.distributed import World, join, leave, share
from tracefield.errors import TracefieldError, short_reason
from tracefield.io.atomic import atomic_file
from tracefield.io.preprocess import to_network_input
from tracefield.model import load_config, load_model, resolve_device
from tracefield.model.checkpoint import save_checkpoint
from tracefield.model.network import TraceAnything
from tracefield.paths import config_path
from tracefield.provenance import SYNTHETIC_TRAINING
from tracefield.train.losses import LossWeights, trace_anything_loss, weights_at
from tracefield.train.matching import DecoderMatching

log = logging.getLogger(__name__)


@dataclass
class DataArgs:
    min_frames: int = 8
    max_frames: int = 16
    height: int = SceneConfig.height
    width: int = SceneConfig.width
    seed_offset: int = 0
    scenes: Optional[int] = None  # distinct training scenes, cycled (None: a new scene every step)
    curriculum: str = "full"  # stage(s) of the toy family (tracefield.data.toy), e.g. square, or square,rotate,camera,full
    stage_steps: List[int] = field(default_factory=list)  # the step where each next stage of the curriculum starts


@dataclass
class OptimArgs:
    lr: float = 3e-4
    weight_decay: float = 0.05
    betas: list = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 500
    steps: int = 20_000
    grad_clip: float = 1.0


@dataclass
class TrainArgs:
    model: str = "configs/small.yaml"
    init_checkpoint: Optional[str] = None
    output: str = "runs/small"
    batch_size: int = 1
    log_every: int = 50
    checkpoint_every: int = 500
    train_mode_attention: bool = False
    data: DataArgs = field(default_factory=DataArgs)
    optim: OptimArgs = field(default_factory=OptimArgs)
    loss: LossWeights = field(default_factory=LossWeights)


def load_train_config(path: str | Path, overrides: Optional[list[str]] = None) -> TrainArgs:
    path = Path(path)
    if not path.is_file():
        raise TracefieldError(f"{path}: training config not found; see configs/train_small.yaml")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainArgs), OmegaConf.load(path), OmegaConf.from_dotlist(overrides or []))
    except Exception as exc:  # omegaconf's validation errors name the key
        raise TracefieldError(f"{path}: invalid training config ({short_reason(exc)})") from exc
    args = OmegaConf.to_object(merged)
    try:
        check_curriculum(args.data.curriculum, args.data.stage_steps)
    except ValueError as exc:
        raise TracefieldError(f"{path}: data.curriculum={args.data.curriculum!r}, data.stage_steps={list(args.data.stage_steps)}: {exc}") from exc
    return args


def learning_rate(step: int, optim: OptimArgs) -> float:
    """Linear warm-up, then cosine decay to 1% of the peak."""
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    progress = (step - optim.warmup_steps) / max(1, optim.steps - optim.warmup_steps)
    return optim.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def training_batch(step: int, args: TrainArgs, device: torch.device, world: World = World()) -> dict[str, torch.Tensor]:
    """This process's scenes for one step: seeds follow the step, so a resumed run sees the same data.

    A step's scenes are ``batch_size`` per process, all with the same frame count and the
    curriculum's stage at that step; process r takes the r-th share of the step's seeds.
    """
    index = step if args.data.scenes is None else step % args.data.scenes
    g = torch.Generator().manual_seed(args.data.seed_offset + index)
    frames = int(torch.randint(args.data.min_frames, args.data.max_frames + 1, (1,), generator=g))
    stage = stage_at(step, args.data.curriculum, args.data.stage_steps)
    config = SceneConfig(frames=frames, height=args.data.height, width=args.data.width, stage=stage)
    scenes = []
    per_step = args.batch_size * world.size
    for item in share(per_step, world):
        seed = (args.data.seed_offset + index * per_step + item) % EVAL_SEED_BASE
        scenes.append(render_scene(seed, config, device=device, visibility=False))
    return {
        "images": torch.stack([to_network_input(s.images) for s in scenes]),  # on the render device
        "times": torch.stack([s.times for s in scenes]),
        "tracks": torch.stack([s.tracks for s in scenes]),
        "poses": torch.stack([s.poses for s in scenes]),
        "depth": torch.stack([s.depth for s in scenes]),
        "intrinsics": torch.stack([s.intrinsics for s in scenes]),
    }


def _model_for_training(args: TrainArgs, device: torch.device) -> TraceAnything:
    model = load_model(config_path(args.model), args.init_checkpoint, device=device, dtype="float32", attention="sdpa" if device.type == "cuda" else "math")
    model.runtime.cuda_graph_max_views = 0
    model.train(args.train_mode_attention)
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def _optimizer(params: list[torch.nn.Parameter], optim: OptimArgs) -> torch.optim.AdamW:
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=optim.lr, betas=tuple(optim.betas))


def _average_gradients(params: list[torch.nn.Parameter], world: World) -> None:
    """Mean of every gradient over the processes, in one all-reduce of the flattened gradients."""
    if world.size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    for grad, part in zip(grads, flat.split([g.numel() for g in grads])):
        grad.copy_(part.view_as(grad))


def _all_agree(flag: bool, world: World, device: torch.device) -> bool:
    """Process 0's ``flag`` on every process (a stop decision every process must take together)."""
    if world.size == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.broadcast(value, 0)
    return bool(value.item())


def train(
    args: TrainArgs, device: Optional[str] = None, max_steps: Optional[int] = None, max_minutes: Optional[float] = None, progress: bool = True
) -> Path:
    """Train (or resume) until ``optim.steps``, ``max_steps`` more steps or ``max_minutes``; returns the model file."""
    world = World.from_env()
    device = join(world, resolve_device(device))  # under torchrun: one GPU each (NCCL), or the CPU (gloo)
    model_file = _train(args, device, world, max_steps, max_minutes, progress and world.leader)
    leave(world)  # together, not after an error: the others may wait in a collective, and torchrun stops them
    return model_file


def _train(args: TrainArgs, device: torch.device, world: World, max_steps: Optional[int], max_minutes: Optional[float], progress: bool) -> Path:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    model = _model_for_training(args, device)
    matching = DecoderMatching(model).to(device) if args.loss.match else None
    params = [*model.parameters(), *(matching.parameters() if matching is not None else [])]
    optimizer = _optimizer(params, args.optim)
    step = _resume(out / "last.pt", model, optimizer, matching)
    end = args.optim.steps if max_steps is None else min(args.optim.steps, step + max_steps)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    first_step, started, logged = step, time.perf_counter(), []
    bar = tqdm(range(step, end), desc="training", unit="step", disable=not progress or None, initial=step, total=args.optim.steps)
    for step in bar:
        step_started = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.optim)
        batch = training_batch(step, args, device, world)
        with autocast:
            prediction = model.predict(batch["images"], batch["times"])
        losses = trace_anything_loss(prediction, batch["tracks"], batch["poses"], batch["times"][0], weights_at(args.loss, step))
        if args.loss.displacement:
            losses.setdefault("displacement", torch.zeros(()))  # off before motion_start_step, but one log.csv header throughout
        if matching is not None:
            losses["match"] = matching.loss(batch, torch.Generator().manual_seed(step))
            losses["total"] = losses["total"] + args.loss.match * losses["match"]
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        _average_gradients(params, world)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, args.optim.grad_clip)
        optimizer.step()
        if not torch.isfinite(losses["total"]):
            raise TracefieldError(f"{out}: the loss became {losses['total'].item()} at step {step}; lower optim.lr and resume")
        values = {k: float(v.item() if torch.is_tensor(v) else v) for k, v in losses.items()}  # .item() waits for the GPU
        logged.append({"step": step, "lr": learning_rate(step, args.optim), "grad_norm": grad_norm.item(), "seconds": time.perf_counter() - step_started, **values})
        bar.set_postfix(loss=f"{logged[-1]['total']:.4f}")
        if (step + 1) % args.log_every == 0:
            if world.leader:
                _append_log(out / "log.csv", logged)
            logged = []
        out_of_time = _all_agree(max_minutes is not None and time.perf_counter() - started > 60 * max_minutes, world, device)
        if ((step + 1) % args.checkpoint_every == 0 or step + 1 == end or out_of_time) and world.leader:
            _append_log(out / "log.csv", logged)
            logged = []
            _save(args, out, model, optimizer, step + 1, matching)
        if out_of_time:
            end = step + 1
            break
    seconds = time.perf_counter() - started
    if world.leader:
        log.info("trained to step %d in %.0f s (%.2f steps/s); weights in %s", end, seconds, (end - first_step) / max(seconds, 1e-9), out / "model.safetensors")
    return out / "model.safetensors"


def _append_log(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        if new:
            writer.writeheader()
        writer.writerows(rows)


def _save(args: TrainArgs, out: Path, model: TraceAnything, optimizer: torch.optim.Optimizer, step: int, matching: Optional[DecoderMatching]) -> None:
    state = {"step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
    if matching is not None:
        state["matching"] = matching.state_dict()
    with atomic_file(out / "last.pt") as tmp:
        torch.save(state, tmp)
    half = {k: v.detach().to(torch.float16) for k, v in model.state_dict().items()}
    runtime = asdict(load_config(config_path(args.model)).runtime)  # the file alone says how to run it
    save_checkpoint(half, out / "model.safetensors", model.net_config.to_json(), extra={"step": str(step), "trained_on": SYNTHETIC_TRAINING},
                    runtime=runtime)


def _resume(path: Path, model: TraceAnything, optimizer: torch.optim.Optimizer, matching: Optional[DecoderMatching]) -> int:
    if not path.exists():
        return 0
    state = torch.load(path, map_location=next(model.parameters()).device, weights_only=True)
    if (matching is not None) != ("matching" in state):
        raise TracefieldError(f"{path}: saved {'with' if 'matching' in state else 'without'} the matching term; resume with the same loss.match or use a new output")
    model.load_state_dict(state["model"])
    if matching is not None:
        matching.load_state_dict(state["matching"])
    optimizer.load_state_dict(state["optimizer"])
    log.info("resuming %s at step %d", path, state["step"])
    return int(state["step"])
