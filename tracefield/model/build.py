"""``load_model``: config + optional weights -> a ready network on the chosen device and dtype."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from tracefield.errors import TracefieldError
from tracefield.model.checkpoint import check_and_load, config_from_metadata, read_checkpoint, read_metadata
from tracefield.model.config import ConfigLike, ModelConfig, NetConfig, load_config, network_differences
from tracefield.model.network import TraceAnything

log = logging.getLogger(__name__)

CheckpointLike = Union[str, Path, Mapping[str, torch.Tensor], None]
RANDOM_INIT_SEED = 0

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    """``None``/``"auto"`` -> CUDA when available, else CPU; names are checked against the machine."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TracefieldError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    return device


def resolve_dtype(dtype: Union[str, torch.dtype, None], device: torch.device) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA, float32 on CPU (the conformance path)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise TracefieldError(f"--dtype {dtype}: unknown; use one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def load_model(
    config: Optional[ConfigLike] = None,
    checkpoint: CheckpointLike = None,
    device: Union[str, torch.device, None] = None,
    dtype: Union[str, torch.dtype, None] = None,
    attention: Optional[str] = None,
    compile: Optional[bool] = None,
) -> TraceAnything:
    """Build the network from ``config`` and load ``checkpoint`` into it, strictly.

    ``config``: a YAML path, a dict (the release's ``model.net`` keys, optional
    ``head_dims``), or ``None`` to read it from a tracefield ``.safetensors`` checkpoint.
    ``checkpoint``: a file path (``.safetensors``, ``.pt``, ``.pth``, ``.ckpt``), a state
    dict, or ``None`` for seeded random weights (logged as untrained).
    ``device``/``dtype``/``attention``/``compile``: override the config's ``runtime`` section
    (compiling applies on CUDA only).
    Returns the model in eval mode.

    Weights go straight to ``device`` in ``dtype``: the network is built on the meta device
    (no random initialisation to throw away) and a ``.safetensors`` file is read tensor by
    tensor onto the device, cast there, and assigned as the parameters. Random weights are
    drawn on the device itself (on a GPU in milliseconds rather than seconds).
    """
    device = resolve_device(device)
    source = _source_name(checkpoint)
    metadata = read_metadata(checkpoint) if isinstance(checkpoint, (str, Path)) else {}
    stored = config_from_metadata(metadata, source)
    if config is None:
        if stored is None:
            raise TracefieldError(f"{source}: carries no config; pass one, e.g. --config configs/eval.yaml")
        cfg = dataclasses.replace(load_config(stored), source=f"the config stored in {source}")
    else:
        cfg = load_config(config)
        if stored is not None:
            _require_same_network(cfg, load_config(stored).net, source)
    dtype = resolve_dtype(dtype if dtype is not None else cfg.runtime.dtype, device)
    if checkpoint is None:
        model = _random_model(cfg, device)
        log.debug("built %s with random weights (seed %d) on %s", cfg.source, RANDOM_INIT_SEED, device)
    else:
        tensors = checkpoint if isinstance(checkpoint, Mapping) else read_checkpoint(checkpoint, device=device, dtype=dtype)[0]
        with torch.device("meta"):
            model = TraceAnything(cfg.net, cfg.runtime)
        check_and_load(model, tensors, source, cfg.source)
    model = model.to(device=device, dtype=dtype).eval()
    channels_last = cfg.runtime.channels_last if cfg.runtime.channels_last is not None else device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # tokens already arrive channels-last
    model.set_attention(attention or cfg.runtime.attention)
    if (cfg.runtime.compile if compile is None else compile) and device.type == "cuda":
        model.compile_parts()
    model.untrained = checkpoint is None
    model.checkpoint_source = None if checkpoint is None else source
    model.trained_on = metadata.get("trained_on")
    model.config_source = cfg.source
    return model


def _require_same_network(cfg: ModelConfig, stored: NetConfig, source: str) -> None:
    """An explicit config must describe the network the checkpoint was made with; name both when it does not."""
    differences = network_differences(cfg.net, stored)
    if differences:
        raise TracefieldError(
            f"{cfg.source} and {source} describe different networks ({'; '.join(differences[:4])}"
            f"{' ...' if len(differences) > 4 else ''}, the config's value first); "
            f"leave --config out to use the config stored in {source}, or pass the checkpoint made for {cfg.source}"
        )


def _source_name(checkpoint: CheckpointLike) -> str:
    if checkpoint is None:
        return "<random weights>"
    return "<state_dict>" if isinstance(checkpoint, Mapping) else str(checkpoint)


def _random_model(cfg: ModelConfig, device: torch.device) -> TraceAnything:
    """Default PyTorch init under a fixed seed, on ``device``, without disturbing the caller's RNG state.

    The CPU draws the same weights on every machine; a GPU draws its own (also seeded).
    """
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.device(device):
        torch.manual_seed(RANDOM_INIT_SEED)
        return TraceAnything(cfg.net, cfg.runtime)
