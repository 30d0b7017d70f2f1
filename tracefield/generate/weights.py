"""Weights of the ATI generator, read as the published repositories lay them out.

``tracefield download --generator`` puts two repositories side by side:

* ``wan2.1-i2v-14b-480p/``: ``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers`` without its base
  transformer's weights: ``tokenizer/`` + ``text_encoder/`` (UMT5-XXL), ``image_encoder/``
  (CLIP ViT-H/14), ``vae/`` (Wan VAE), ``transformer/config.json``, ``model_index.json``.
* ``ati/``: ``bytedance-research/ATI``: the motion-trained transformer in Wan's ORIGINAL key
  layout (``blocks.0.self_attn.q.weight``, ...), as ``diffusion_pytorch_model-0000k-of-0000n
  .safetensors`` shards with ``diffusion_pytorch_model.safetensors.index.json`` and a
  ``config.json`` of ``WanModel`` arguments.

The transformer is built with its parameters on the meta device (no 14B random
initialisation), while computed buffers (the rotary tables) are made for real; each shard is
read, renamed to diffusers' layout, cast and assigned in turn, so peak host memory is one
shard. Nothing is unpickled (safetensors; an original ``.pth`` VAE with ``weights_only``),
every file named by the index must be there, and any key that does not fit is an error that
lists them.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Iterator, Optional

import torch

from tracefield.errors import TracefieldError, short_reason
from tracefield.model.checkpoint import key_differences

log = logging.getLogger(__name__)

WAN_REPO = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
ATI_REPO = "bytedance-research/ATI"
WAN_DIR, ATI_DIR = "wan2.1-i2v-14b-480p", "ati"
INDEX_SUFFIX = ".safetensors.index.json"
CLIP_WIDTH = 1280  # ATI's WanModel reads CLIP ViT-H/14 states of this width
ORIGINAL_MARKER = ".self_attn.q.weight"  # Wan's original layout; diffusers says attn1.to_q
DOWNLOAD_FIX = "run `tracefield download --generator`"

# Parts of the transformer that ATI runs in float32 inside its bfloat16 autocast (time
# embedding and projection, the output head), and everything that is not a weight matrix:
# they stay float32 whatever the weights' dtype, so that autocast reproduces ATI's numerics.
FLOAT32_PARTS = ("condition_embedder.time_embedder.", "condition_embedder.time_proj.", "proj_out.")


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create modules whose parameters live on the meta device but whose buffers are real.

    Rotary tables and other computed buffers are not in any checkpoint; building the whole
    module under ``torch.device("meta")`` leaves them empty, and ``.to(device)`` then fails
    ("Cannot copy out of meta tensor"). Here each parameter moves to meta as it is
    registered (its uninitialised allocation is freed at once, and the initialisation that
    follows runs on meta for free), and buffers are computed as usual.
    """
    register = torch.nn.Module.register_parameter

    def on_meta(module: torch.nn.Module, name: str, param: Optional[torch.nn.Parameter]) -> None:
        if param is not None and param.device.type != "meta":
            param = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    torch.nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = register  # type: ignore[method-assign]


def _build_empty(cls, config: dict):
    """``cls.from_config(config)`` with meta parameters and real buffers."""
    with parameters_on_meta():
        return cls.from_config(config)


def shard_files(folder: Path) -> list[Path]:
    """The safetensors shards of a folder, as its index file names them (or all of them, without an index)."""
    if not folder.is_dir():
        raise TracefieldError(f"{folder}: transformer folder not found; {DOWNLOAD_FIX} or pass --transformer DIR")
    indexes = sorted(folder.glob(f"*{INDEX_SUFFIX}"))
    if len(indexes) > 1:
        raise TracefieldError(f"{folder}: {len(indexes)} index files ({', '.join(p.name for p in indexes)}); keep the one of these weights")
    if indexes:
        try:
            weight_map = json.loads(indexes[0].read_text())["weight_map"]
            names = sorted(set(weight_map.values()))
        except Exception as exc:
            raise TracefieldError(f"{indexes[0]}: not a safetensors index ({short_reason(exc, 80, typed=True)}); download it again") from exc
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            raise TracefieldError(
                f"{folder / missing[0]}: shard missing ({len(missing)} of {len(names)} named by {indexes[0].name}); "
                f"finish the download ({DOWNLOAD_FIX})"
            )
        return [folder / name for name in names]
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise TracefieldError(f"{folder}: no .safetensors weights here; {DOWNLOAD_FIX} or pass --transformer DIR")
    return files


def _read_shard(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # damaged or truncated shard
        raise TracefieldError(f"{path}: not a readable safetensors shard ({short_reason(exc, 100)}); download it again") from exc


def diffusers_transformer_config(ati_config: dict, image_dim: int) -> dict:
    """diffusers' ``WanTransformer3DModel`` config for ATI's ``WanModel`` arguments (its ``config.json``)."""
    if ati_config.get("model_type", "i2v") != "i2v":
        raise TracefieldError(f"model_type {ati_config.get('model_type')!r}: ATI's transformer is an image-to-video ('i2v') WanModel")
    dim, heads = int(ati_config.get("dim", 5120)), int(ati_config.get("num_heads", 40))
    if dim % heads:
        raise TracefieldError(f"dim {dim} is not a multiple of num_heads {heads}; this config.json is not a WanModel's")
    window = tuple(ati_config.get("window_size", (-1, -1)))
    if window != (-1, -1):
        raise TracefieldError(f"window_size {list(window)}: only global attention (-1, -1) is supported, as in ATI")
    return {
        "patch_size": list(ati_config.get("patch_size", (1, 2, 2))),
        "num_attention_heads": heads,
        "attention_head_dim": dim // heads,
        "in_channels": int(ati_config.get("in_dim", 36)),
        "out_channels": int(ati_config.get("out_dim", 16)),
        "text_dim": int(ati_config.get("text_dim", 4096)),
        "freq_dim": int(ati_config.get("freq_dim", 256)),
        "ffn_dim": int(ati_config.get("ffn_dim", 13824)),
        "num_layers": int(ati_config.get("num_layers", 40)),
        "cross_attn_norm": bool(ati_config.get("cross_attn_norm", True)),
        "qk_norm": "rms_norm_across_heads" if ati_config.get("qk_norm", True) else None,
        "eps": float(ati_config.get("eps", 1e-6)),
        "image_dim": image_dim,
        "added_kv_proj_dim": dim,
        "rope_max_seq_len": 1024,
    }


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise TracefieldError(f"{path}: missing {what}; {DOWNLOAD_FIX}")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise TracefieldError(f"{path}: not valid JSON ({short_reason(exc, 80)}); download it again") from exc


def transformer_config(ati_dir: Path, wan_dir: Path) -> dict:
    """The transformer's config: ATI's own ``config.json`` (WanModel arguments) or, in diffusers' form, beside its weights."""
    own = ati_dir / "config.json"
    if own.is_file():
        config = _read_json(own, "config")
        if "num_attention_heads" in config:  # already diffusers' form
            return config
        image = wan_dir / "image_encoder" / "config.json"
        image_dim = int(_read_json(image, "image encoder config").get("hidden_size", 1280)) if image.is_file() else CLIP_WIDTH
        return diffusers_transformer_config(config, image_dim)
    return _read_json(wan_dir / "transformer" / "config.json", "transformer config")


def target_dtype(key: str, tensor: torch.Tensor, dtype: torch.dtype) -> torch.dtype:
    """``dtype`` for weight matrices, float32 for norms, biases, modulation tables and ATI's float32 parts."""
    if dtype == torch.float32 or tensor.ndim < 2 or key.startswith(FLOAT32_PARTS) or "scale_shift_table" in key:
        return torch.float32
    return dtype


def load_transformer(ati_dir: Path, wan_dir: Path, dtype: torch.dtype, device: torch.device = torch.device("cpu")):
    """ATI's transformer (original or diffusers layout, sharded or not) as a ``WanTransformer3DModel`` on ``device``."""
    from diffusers import WanTransformer3DModel
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    files = shard_files(ati_dir)
    config = transformer_config(ati_dir, wan_dir)
    try:
        model = _build_empty(WanTransformer3DModel, config)
    except (TypeError, ValueError) as exc:
        raise TracefieldError(f"{ati_dir}: config does not describe a Wan transformer ({short_reason(exc, 100)}); {DOWNLOAD_FIX}") from exc
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found: dict[str, torch.Tensor] = {}  # every key of the files, as shapes on meta
    loaded: dict[str, torch.Tensor] = {}
    for file in files:
        shard = _read_shard(file, device)
        if any(key.endswith(ORIGINAL_MARKER) for key in shard) or any(k.startswith(("blocks.0.norm3", "head.", "img_emb.")) for k in shard):
            shard = convert_wan_transformer_to_diffusers(shard)
        for key, value in shard.items():
            found[key] = torch.empty(value.shape, device="meta")
            if expected.get(key) == tuple(value.shape):
                loaded[key] = value.to(target_dtype(key, value, dtype))
        del shard
    differences = key_differences(expected, found)
    if differences:
        raise TracefieldError(
            f"{ati_dir}: weights do not fit a Wan transformer with {config.get('num_layers')} layers of "
            f"{config.get('num_attention_heads', 0) * config.get('attention_head_dim', 0)} ({differences}); "
            "use ATI's 14B transformer with the Wan2.1 I2V 14B repo"
        )
    model.load_state_dict(loaded, strict=True, assign=True)
    model.to(device)
    return model.eval().requires_grad_(False)


def load_original_vae(path: Path, device: torch.device = torch.device("cpu")):
    """Wan's original ``Wan2.1_VAE.pth`` (weights only) as diffusers' ``AutoencoderKLWan`` in float32."""
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    if not path.is_file():
        raise TracefieldError(f"{path}: VAE file not found; pass Wan2.1_VAE.pth from Wan-AI/Wan2.1-I2V-14B-480P, or leave out --vae")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TracefieldError(f"{path}: not a readable weights-only VAE file ({short_reason(exc, 80, typed=True)}); download it again") from exc
    with parameters_on_meta():
        vae = AutoencoderKLWan()
    converted = convert_wan_vae_to_diffusers(state)
    differences = key_differences({k: tuple(v.shape) for k, v in vae.state_dict().items()}, converted)
    if differences:
        raise TracefieldError(f"{path}: not a Wan2.1 VAE ({differences}); use Wan2.1_VAE.pth")
    vae.load_state_dict({k: v.float() for k, v in converted.items()}, strict=True, assign=True)
    return vae.to(device).eval().requires_grad_(False)
