"""Weights of the ATI generator: where they come from and how they load.

* Everything but the transformer comes from the diffusers-format Wan2.1 image-to-video repo
  (``Wan-AI/Wan2.1-I2V-14B-480P-Diffusers``: UMT5 text encoder and tokenizer, CLIP vision
  encoder and processor, Wan VAE, flow-matching scheduler). An original ``Wan2.1_VAE.pth``
  may replace its VAE (converted by diffusers' own ``convert_wan_vae_to_diffusers``).
* The transformer is ATI's (``bytedance-research/ATI``): sharded safetensors in Wan's
  original key layout, converted with diffusers' ``convert_wan_transformer_to_diffusers``
  (files already in diffusers' layout load as they are), into the repo's transformer config.

Like the tracer's checkpoints, nothing is unpickled (safetensors, ``weights_only=True``) and
any key that does not fit is an error that lists them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import torch

from tracefield.errors import TracefieldError
from tracefield.model.checkpoint import key_differences

log = logging.getLogger(__name__)

WAN_REPO = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
ATI_REPO = "bytedance-research/ATI"
ORIGINAL_MARKER = ".self_attn.q.weight"  # Wan's original layout; diffusers says attn1.to_q


def read_transformer_state(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a transformer: one .safetensors file or a folder of shards, in diffusers' layout."""
    from safetensors.torch import load_file

    files = sorted(path.rglob("*.safetensors")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise TracefieldError(f"{path}: no .safetensors transformer weights here; run `tracefield download --generator` or point --transformer at ATI's shards")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(load_file(str(file)))
        except Exception as exc:  # damaged shard
            raise TracefieldError(f"{file}: not a readable safetensors shard ({exc}); download it again") from exc
    if any(key.endswith(ORIGINAL_MARKER) for key in state):
        from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

        log.info("%s: converting Wan's original key layout to diffusers'", path)
        state = convert_wan_transformer_to_diffusers(state)
    return state


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load strictly: missing, unexpected or misshapen keys are one error listing them."""
    differences = key_differences({k: tuple(v.shape) for k, v in module.state_dict().items()}, state)
    if differences:
        raise TracefieldError(f"{source}: weights do not fit the {type(module).__name__}: {differences}; use ATI's transformer and the Wan2.1 I2V 14B repo")
    module.load_state_dict(state, strict=True, assign=True)


def load_transformer(path: Path, config_dir: Path, dtype: torch.dtype):
    """ATI's transformer (either layout) into the Wan I2V transformer config of ``config_dir``."""
    from diffusers import WanTransformer3DModel

    config_file = config_dir / "config.json"
    if not config_file.is_file():
        raise TracefieldError(f"{config_file}: missing; it comes with {WAN_REPO} (run `tracefield download --generator`)")
    with torch.device("meta"):
        transformer = WanTransformer3DModel.from_config(json.loads(config_file.read_text()))
    load_into(transformer, read_transformer_state(path), str(path))
    return transformer.to(dtype)


def load_original_vae(path: Path, dtype: torch.dtype):
    """Wan's original ``Wan2.1_VAE.pth`` (weights only) into diffusers' AutoencoderKLWan."""
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TracefieldError(f"{path}: not a readable weights-only VAE file ({type(exc).__name__}); download it again") from exc
    with torch.device("meta"):
        vae = AutoencoderKLWan()
    load_into(vae, convert_wan_vae_to_diffusers(state), str(path))
    return vae.to(dtype)


def load_pipeline(model_dir: Path, transformer: Optional[Path], vae: Optional[Path], dtype: torch.dtype):
    """The ATI pipeline from the Wan2.1 I2V diffusers repo, ATI's transformer and optionally an original VAE."""
    from tracefield.generate.pipeline import ATIPipeline

    if not (model_dir / "model_index.json").is_file():
        raise TracefieldError(
            f"{model_dir}: not a diffusers Wan2.1 image-to-video repo (no model_index.json); "
            f"run `tracefield download --generator` or download {WAN_REPO} there"
        )
    parts = {}
    if transformer is not None:
        parts["transformer"] = load_transformer(transformer, model_dir / "transformer", dtype)
    if vae is not None:
        parts["vae"] = load_original_vae(vae, torch.float32)
    return ATIPipeline.from_pretrained(str(model_dir), torch_dtype=dtype, **parts)


def download_generator(dest: Path) -> tuple[Path, Path]:
    """Fetch the Wan2.1 I2V repo (without its base transformer) and ATI's transformer; returns both folders."""
    from huggingface_hub import snapshot_download

    wan_dir, ati_dir = dest / "wan2.1-i2v-14b-480p", dest / "ati"
    try:
        snapshot_download(WAN_REPO, local_dir=wan_dir, ignore_patterns=["transformer/*.safetensors"])
        snapshot_download(ATI_REPO, local_dir=ati_dir)
    except Exception as exc:  # offline, proxy, authentication: the same advice
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:140]
        raise TracefieldError(
            f"{dest}: could not download the generator ({reason}); by hand, put https://huggingface.co/{WAN_REPO} "
            f"(all but transformer/*.safetensors) in {wan_dir} and https://huggingface.co/{ATI_REPO} in {ati_dir}"
        ) from exc
    return wan_dir, ati_dir
