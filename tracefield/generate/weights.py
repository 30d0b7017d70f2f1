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
from typing import Callable, Iterator, Optional

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


def shard_files(folder: Path, what: str = "transformer") -> list[Path]:
    """The safetensors shards of a folder, as its index file names them (or all of them, without an index)."""
    return _shards(folder, what)[0]


def _shards(folder: Path, what: str) -> tuple[list[Path], Optional[dict[str, str]]]:
    """Shards and the index's weight map (key -> file name; None without an index)."""
    if not folder.is_dir():
        raise TracefieldError(f"{folder}: {what} folder not found; {DOWNLOAD_FIX} or pass --{what} DIR")
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
        return [folder / name for name in names], weight_map
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise TracefieldError(f"{folder}: no .safetensors weights here; {DOWNLOAD_FIX} or pass --{what} DIR")
    return files, None


def _check_index(file: Path, keys: set[str], weight_map: dict[str, str]) -> None:
    """The shard holds exactly the keys its index says it holds."""
    listed = {key for key, name in weight_map.items() if name == file.name}
    if keys != listed:
        odd = sorted(keys ^ listed)
        raise TracefieldError(
            f"{file}: the index lists {len(listed)} tensors in this shard, it holds {len(keys)} ({len(odd)} differ, e.g. {odd[0]}); "
            f"the index belongs to other weights: download the index and its shards together ({DOWNLOAD_FIX})"
        )


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

    files, weight_map = _shards(ati_dir, "transformer")
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
        if weight_map is not None:
            _check_index(file, set(shard), weight_map)
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


def load_vae(folder: Path, device: torch.device = torch.device("cpu")):
    """The diffusers-format Wan VAE of the repo (``vae/config.json`` + safetensors) in float32, built without random init."""
    from diffusers import AutoencoderKLWan

    config = _read_json(folder / "config.json", "VAE config")
    vae = _build_empty(AutoencoderKLWan, config)
    state: dict[str, torch.Tensor] = {}
    for file in shard_files(folder, "vae"):
        state.update(_read_shard(file, device))
    differences = key_differences({k: tuple(v.shape) for k, v in vae.state_dict().items()}, state)
    if differences:
        raise TracefieldError(f"{folder}: weights do not fit the Wan VAE of its config ({differences}); {DOWNLOAD_FIX}")
    vae.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return vae.to(device).eval().requires_grad_(False)


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


def component_dtypes(dtype: str, device: torch.device) -> dict[str, torch.dtype]:
    """Each component's dtype: ``auto`` is ATI's precisions on CUDA (UMT5 bfloat16, CLIP float16, VAE float32,
    transformer bfloat16 under autocast) and float32 on the CPU, where the reference case is exact."""
    if dtype not in ("auto", "float32", "bfloat16"):
        raise TracefieldError(f"--dtype {dtype}: unknown; use auto, bfloat16 or float32")
    if dtype == "float32" or (dtype == "auto" and device.type != "cuda"):
        return dict.fromkeys(("text", "image", "vae", "transformer"), torch.float32)
    return {"text": torch.bfloat16, "image": torch.float16 if device.type == "cuda" else torch.float32,
            "vae": torch.float32, "transformer": torch.bfloat16}


def _from_pretrained(cls, folder: Path, dtype: torch.dtype, what: str):
    if not folder.is_dir():
        raise TracefieldError(f"{folder}: missing {what}; {DOWNLOAD_FIX} (or download {WAN_REPO} there)")
    try:
        return cls.from_pretrained(str(folder), torch_dtype=dtype) if dtype is not None else cls.from_pretrained(str(folder))
    except (OSError, ValueError, RuntimeError) as exc:
        raise TracefieldError(f"{folder}: cannot load the {what} ({short_reason(exc, 120, sentence=True)}); download it again") from exc


def load_pipeline(wan_dir: Path, ati_dir: Path, vae: Optional[Path], device: torch.device, dtype: str = "auto", offload: Optional[str] = None,
                  on_transformer: Optional[Callable[[torch.nn.Module], Callable[[], None]]] = None):
    """The ATI pipeline from the Wan2.1 I2V diffusers repo and ATI's transformer (optionally an original VAE).

    ``on_transformer`` is called with the transformer as soon as it has loaded (it loads first), and
    what it returns once the other components have: a run starts its set-up there, beside the
    loading (:class:`.warmup.TransformerSetup`).
    """
    from transformers import AutoTokenizer, CLIPVisionModel, UMT5EncoderModel

    from tracefield.generate.pipeline import ATIPipeline

    if not (wan_dir / "model_index.json").is_file():
        raise TracefieldError(f"{wan_dir}: not a diffusers Wan2.1 image-to-video repo (no model_index.json); {DOWNLOAD_FIX} or download {WAN_REPO} there")
    dtypes = component_dtypes(dtype, device)
    transformer = load_transformer(ati_dir, wan_dir, dtypes["transformer"], torch.device("cpu") if offload and device.type == "cuda" else device)
    ready = on_transformer(transformer) if on_transformer is not None else (lambda: None)
    try:
        parts = dict(
            tokenizer=_from_pretrained(AutoTokenizer, wan_dir / "tokenizer", None, "tokenizer"),
            text_encoder=_from_pretrained(UMT5EncoderModel, wan_dir / "text_encoder", dtypes["text"], "text encoder (UMT5)"),
            image_encoder=_from_pretrained(CLIPVisionModel, wan_dir / "image_encoder", dtypes["image"], "image encoder (CLIP)"),
            vae=load_original_vae(vae) if vae is not None else load_vae(wan_dir / "vae"),
        )
    finally:  # also before an error: a thread still running on the GPU must not outlive the run
        ready()
    for module in (parts["text_encoder"], parts["image_encoder"], parts["vae"]):
        module.eval().requires_grad_(False)
    return ATIPipeline(transformer=transformer, **parts).place(device, offload)


def download_generator(dest: Path) -> tuple[Path, Path]:
    """Fetch the Wan2.1 I2V repo (without its base transformer) and ATI's transformer; returns both folders."""
    from huggingface_hub import snapshot_download

    wan_dir, ati_dir = dest / WAN_DIR, dest / ATI_DIR
    try:
        snapshot_download(WAN_REPO, local_dir=wan_dir, ignore_patterns=["transformer/*.safetensors"])
        snapshot_download(ATI_REPO, local_dir=ati_dir)
    except Exception as exc:  # offline, proxy, authentication: the same advice
        raise TracefieldError(
            f"{dest}: could not download the generator ({short_reason(exc, 140)}); by hand, put https://huggingface.co/{WAN_REPO} "
            f"(all but transformer/*.safetensors) in {wan_dir} and https://huggingface.co/{ATI_REPO} in {ati_dir}"
        ) from exc
    return wan_dir, ati_dir
