"""Reading, checking and writing network weights.

The release loads with ``strict=False``, so a renamed key silently leaves random weights.
Here every file goes through the same steps: read without unpickling objects
(``weights_only=True`` or safetensors), unwrap (Lightning ``state_dict``, ``net.`` prefix),
resolve the release's alias names to one canonical name, then require an exact match of
names and shapes, reporting every difference in one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import pickle
import re
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Mapping, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tracefield.errors import TracefieldError
from tracefield.io.atomic import atomic_file
from tracefield.model.config import RuntimeArgs
from tracefield.model.network import HEAD_ALIASES

StateDict = dict[str, torch.Tensor]

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
CHECKPOINT_FORMAT = "tracefield.checkpoint"
_WRAPPER_KEYS = ("state_dict", "model")
_PREFIXES = ("net.", "module.", "model.")
_RN_ALIAS = re.compile(r"\.scratch\.layer([1-4])_rn\.")
FULL_NAMES = 5  # differences named key by key up to this many; longer lists are grouped


def read_checkpoint(
    path: str | Path, device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None
) -> tuple[StateDict, dict[str, str]]:
    """Tensors of a checkpoint file (unwrapped, prefix-stripped) and its safetensors metadata.

    ``device``/``dtype``: where the tensors should end up and the precision of their floating
    ones. A ``.safetensors`` file is read tensor by tensor straight onto ``device`` and cast
    there, so a GPU load never holds a full-precision copy of the model in host memory.
    """
    path = _existing(path)
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        tensors, metadata = _read_safetensors(path, device or torch.device("cpu"), dtype)
    elif suffix in PICKLE_SUFFIXES:
        tensors, metadata = _unwrap(_read_torch(path), path), {}
        tensors = {key: _moved(value, device, dtype) for key, value in tensors.items()}
    else:
        raise _unknown_type(path)
    return _strip_prefixes(tensors), metadata


def read_metadata(path: str | Path) -> dict[str, str]:
    """A checkpoint's safetensors metadata (its config, what it was trained on) without reading tensors; {} for torch files."""
    path = _existing(path)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return {}
    if suffix != ".safetensors":
        raise _unknown_type(path)
    with _safetensors_errors(path), safe_open(str(path), framework="pt") as handle:
        return dict(handle.metadata() or {})


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise TracefieldError(f"{path}: checkpoint not found; run `tracefield download` or pass --checkpoint PATH")
    return path


def _unknown_type(path: Path) -> TracefieldError:
    return TracefieldError(
        f"{path}: unknown checkpoint type {path.suffix.lower()!r}; use .safetensors or a torch file ({', '.join(PICKLE_SUFFIXES)})"
    )


def _moved(tensor: torch.Tensor, device: Optional[torch.device], dtype: Optional[torch.dtype]) -> torch.Tensor:
    """``tensor`` on ``device``, floating tensors in ``dtype`` (integer buffers keep theirs)."""
    cast = dtype if dtype is not None and tensor.is_floating_point() else None
    return tensor.to(device=device, dtype=cast) if device is not None or cast is not None else tensor


def _read_safetensors(path: Path, device: torch.device, dtype: Optional[torch.dtype]) -> tuple[StateDict, dict[str, str]]:
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    with _safetensors_errors(path), safe_open(str(path), framework="pt", device=str(device)) as handle:
        return {key: _moved(handle.get_tensor(key), None, dtype) for key in handle.keys()}, dict(handle.metadata() or {})


@contextlib.contextmanager
def _safetensors_errors(path: Path) -> Iterator[None]:
    try:
        yield
    except TracefieldError:
        raise
    except Exception as exc:  # safetensors raises its own error types for damaged headers
        raise TracefieldError(f"{path}: not a readable safetensors file ({exc}); download or convert it again") from exc


def _read_torch(path: Path) -> object:
    """``torch.load`` with ``weights_only=True``: tensors and containers only, never code."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) files
    except pickle.UnpicklingError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        refused = next((line for line in lines if "GLOBAL" in line), None)
        if refused is None:
            detail = next((line for line in lines if line.startswith("Unsupported")), type(exc).__name__)
            raise TracefieldError(
                f"{path}: not a plain torch weights file ({detail}); "
                "download it again, or re-save just the weights (torch.save(model.state_dict(), ...))"
            ) from exc
        raise TracefieldError(
            f"{path}: refusing to unpickle Python objects ({refused}); "
            "re-save just the weights (torch.save(model.state_dict(), ...)) where the file was made, or use .safetensors"
        ) from exc
    except Exception as exc:
        raise TracefieldError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc}); download it again") from exc


def _unwrap(obj: object, path: Path) -> StateDict:
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise TracefieldError(f"{path}: holds no state_dict; save model.state_dict() (or a Lightning checkpoint)")
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise TracefieldError(
            f"{path}: entries {not_tensors[:3]} are not tensors, so this is not a state_dict; "
            "save model.state_dict() or a Lightning checkpoint"
        )
    return dict(obj)


def _strip_prefixes(tensors: StateDict) -> StateDict:
    """Remove wrapper prefixes (``net.`` of the Lightning module, ``module.`` of DDP) shared by all keys."""
    changed = True
    while changed and tensors:
        changed = False
        for prefix in _PREFIXES:
            if all(key.startswith(prefix) for key in tensors):
                tensors = {key[len(prefix) :]: value for key, value in tensors.items()}
                changed = True
    return tensors


def canonical_key(key: str) -> str:
    """One name per tensor: ``track_head.`` -> ``ds_head_track.``, ``layer2_rn`` -> ``layer_rn.1``."""
    head, dot, rest = key.partition(".")
    key = HEAD_ALIASES.get(head, head) + dot + rest
    return _RN_ALIAS.sub(lambda m: f".scratch.layer_rn.{int(m.group(1)) - 1}.", key)


def canonicalize(tensors: Mapping[str, torch.Tensor], source: str) -> StateDict:
    """Map every alias to its canonical key; aliases present together must hold equal values."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key in tensors:
        groups[canonical_key(key)].append(key)
    out: StateDict = {}
    for canon, names in groups.items():
        first = tensors[names[0]]
        for other in names[1:]:
            if tensors[other].shape != first.shape or not torch.equal(tensors[other], first):
                raise TracefieldError(
                    f"{source}: {names[0]} and {other} name the same weight but differ; "
                    "keep one of the two names (re-export the checkpoint)"
                )
        out[canon] = first
    return out


def check_and_load(model: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: str, config_source: str) -> None:
    """Load ``tensors`` into ``model`` if names and shapes match exactly; otherwise list every difference."""
    file_sd = canonicalize(tensors, source)
    model_keys = list(model.state_dict().keys())
    differences = key_differences({canonical_key(k): tuple(v.shape) for k, v in model.state_dict().items()}, file_sd)
    if differences:
        raise TracefieldError(
            f"{source}: does not match the network of {config_source}: {differences}; "
            "pass the config this checkpoint was made with (--config) or the right checkpoint"
        )
    full = {key: file_sd[canonical_key(key)] for key in model_keys}
    model.load_state_dict(full, strict=True, assign=True)


def key_differences(expected: Mapping[str, tuple], tensors: Mapping[str, torch.Tensor]) -> str:
    """Missing, unexpected and misshapen keys of ``tensors`` against ``expected`` shapes, in one line ("" if none)."""
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = sorted(
        f"{k} (file {list(tensors[k].shape)}, model {list(expected[k])})" for k in set(expected) & set(tensors) if tuple(tensors[k].shape) != expected[k]
    )
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing [{summarize_keys(missing)}]")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected [{summarize_keys(unexpected)}]")
    if mismatched:
        parts.append(f"{len(mismatched)} shape mismatches [{'; '.join(mismatched[:3])}{' ...' if len(mismatched) > 3 else ''}]")
    return ", ".join(parts)


def summarize_keys(keys: list[str], full: int = FULL_NAMES, groups: int = 4) -> str:
    """Up to ``full`` keys by their whole names; a longer list grouped by the first three name components, with counts."""
    if len(keys) <= full:
        return ", ".join(keys)
    counts: dict[str, int] = defaultdict(int)
    for key in keys:
        parts = key.split(".")
        counts[".".join(parts[:3]) + (".*" if len(parts) > 3 else "")] += 1
    items = [f"{name}{f' x{n}' if n > 1 else ''}" for name, n in counts.items()]
    more = f", +{len(items) - groups} more groups" if len(items) > groups else ""
    return ", ".join(items[:groups]) + more


def save_checkpoint(
    tensors: Mapping[str, torch.Tensor], path: str | Path, net_config_json: str, extra: Optional[dict] = None, runtime: Optional[dict] = None
) -> Path:
    """Write canonical weights to ``.safetensors`` with the network config in its metadata (atomic).

    ``runtime``: how the network is meant to run (the config's ``runtime`` section, e.g. the
    long side its frames were trained at), stored beside the network so that the file alone
    is enough to trace with it.
    """
    path = Path(path)
    canonical = {key: value.detach().cpu().contiguous() for key, value in canonicalize(tensors, str(path)).items()}
    metadata = {"format": CHECKPOINT_FORMAT, "config": net_config_json}
    if runtime is not None:
        metadata["runtime"] = json.dumps(runtime)
    metadata.update({k: json.dumps(v) if not isinstance(v, str) else v for k, v in (extra or {}).items()})
    with atomic_file(path) as tmp:
        save_file(canonical, str(tmp), metadata=metadata)
    return path


def config_from_metadata(metadata: Mapping[str, str], path: str | Path) -> Optional[dict]:
    """The config stored in a tracefield checkpoint's metadata (network, and runtime where stored), if any.

    Runtime keys this version does not know are left out: they only tune how the network
    runs, and an older or newer file should still load.
    """
    raw = metadata.get("config")
    if raw is None or metadata.get("format") != CHECKPOINT_FORMAT:  # another tool's "config" is not ours to read
        return None
    try:
        net = json.loads(raw)
        runtime = json.loads(metadata["runtime"]) if "runtime" in metadata else None
    except json.JSONDecodeError as exc:
        raise TracefieldError(f"{path}: its metadata config is not valid JSON; pass --config explicitly") from exc
    if not isinstance(runtime, dict):
        return net
    known = {f.name for f in dataclasses.fields(RuntimeArgs)}
    return {"model": net, "runtime": {k: v for k, v in runtime.items() if k in known}}


def stored_config(path: str | Path) -> Optional[dict]:
    """The config a tracefield ``.safetensors`` checkpoint carries (its header only is read); None otherwise."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return None
    try:
        metadata = read_metadata(path)
    except TracefieldError:  # a damaged file: reading the weights reports it properly
        return None
    return config_from_metadata(metadata, path)
