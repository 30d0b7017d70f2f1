"""The generator's weights laid out exactly as the published repositories lay them out, with random values.

The real weights are tens of GB and cannot be fetched in tests or on an offline GPU, yet
the loader must be exercised on files, not on state dicts handed over in memory. This writes
both repositories that ``tracefield download --generator`` fetches (see :mod:`.weights`):

* the diffusers-format Wan2.1 I2V repo: ``model_index.json``, ``tokenizer/``,
  ``text_encoder/`` (UMT5), ``image_encoder/`` (CLIP vision), ``image_processor/``, ``vae/``,
  ``scheduler/``, ``transformer/config.json`` (no transformer weights, as downloaded);
* ATI's transformer in Wan's original key layout: ``config.json`` (WanModel arguments),
  ``diffusion_pytorch_model-0000k-of-0000n.safetensors`` shards and their index.

``tiny`` runs the whole pipeline on a CPU in seconds (the tokenizer is a small word-level
one); ``14b`` has the real dimensions (ATI/Wan2.1 I2V 14B, UMT5-XXL, CLIP ViT-H/14, the Wan
VAE) for load-time, speed and memory benchmarks on a GPU.

Values follow one rule (that of ``../shared/vectors/ati_pipeline``): per tensor, in order,
one ``torch.randn`` call; norm scales ``1 + 0.1 x``, biases ``0.05 x``, matrices and kernels
``x / sqrt(fan_in)``, anything else ``0.1 x``.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Iterable, Iterator

import torch
from safetensors.torch import save_file

from tracefield.generate.weights import INDEX_SUFFIX, parameters_on_meta

log = logging.getLogger(__name__)

SHARD_PREFIX = "diffusion_pytorch_model"
SIZES = {
    "tiny": {
        "transformer": dict(dim=32, ffn_dim=64, freq_dim=32, text_dim=32, num_heads=2, num_layers=2),
        "text": dict(d_model=32, d_kv=16, d_ff=64, num_layers=1, num_heads=2, relative_attention_num_buckets=8),
        "image": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14),
        "vae": dict(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1),
        "shards": 2,
    },
    "14b": {
        "transformer": dict(dim=5120, ffn_dim=13824, freq_dim=256, text_dim=4096, num_heads=40, num_layers=40),
        "text": dict(d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64, relative_attention_num_buckets=32),
        "image": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224, patch_size=14),
        "vae": dict(base_dim=96, dim_mult=[1, 2, 4, 4], num_res_blocks=2),
        "shards": 7,
    },
}
VOCABULARY = ["<pad>", "</s>", "<unk>"] + [f"w{i}" for i in range(61)]


def ati_config(size: str) -> dict:
    """ATI's ``config.json``: the ``WanModel`` arguments of an image-to-video transformer."""
    return {"_class_name": "WanModel", "model_type": "i2v", "patch_size": [1, 2, 2], "text_len": 512, "in_dim": 36,
            "out_dim": 16, "window_size": [-1, -1], "qk_norm": True, "cross_attn_norm": True, "eps": 1e-6,
            **SIZES[size]["transformer"]}


def original_transformer_shapes(config: dict, image_dim: int = 1280) -> list[tuple[str, tuple[int, ...]]]:
    """Keys and shapes of ATI's ``WanModel`` (i2v) state dict, in its order."""
    dim, ffn, freq, text = config["dim"], config["ffn_dim"], config["freq_dim"], config["text_dim"]
    pt, ph, pw = config.get("patch_size", (1, 2, 2))
    linear = lambda name, out, inp: [(f"{name}.weight", (out, inp)), (f"{name}.bias", (out,))]  # noqa: E731
    shapes = [("patch_embedding.weight", (dim, config["in_dim"], pt, ph, pw)), ("patch_embedding.bias", (dim,))]
    shapes += linear("text_embedding.0", dim, text) + linear("text_embedding.2", dim, dim)
    shapes += linear("time_embedding.0", dim, freq) + linear("time_embedding.2", dim, dim)
    shapes += linear("time_projection.1", 6 * dim, dim)
    for i in range(config["num_layers"]):
        b = f"blocks.{i}"
        shapes.append((f"{b}.modulation", (1, 6, dim)))
        for proj in "qkvo":
            shapes += linear(f"{b}.self_attn.{proj}", dim, dim)
        shapes += [(f"{b}.self_attn.norm_q.weight", (dim,)), (f"{b}.self_attn.norm_k.weight", (dim,))]
        shapes += [(f"{b}.norm3.weight", (dim,)), (f"{b}.norm3.bias", (dim,))]
        for proj in "qkvo":
            shapes += linear(f"{b}.cross_attn.{proj}", dim, dim)
        shapes += [(f"{b}.cross_attn.norm_q.weight", (dim,)), (f"{b}.cross_attn.norm_k.weight", (dim,))]
        shapes += linear(f"{b}.cross_attn.k_img", dim, dim) + linear(f"{b}.cross_attn.v_img", dim, dim)
        shapes.append((f"{b}.cross_attn.norm_k_img.weight", (dim,)))
        shapes += linear(f"{b}.ffn.0", ffn, dim) + linear(f"{b}.ffn.2", dim, ffn)
    shapes += [("head.modulation", (1, 2, dim))] + linear("head.head", config["out_dim"] * pt * ph * pw, dim)
    shapes += [("img_emb.proj.0.weight", (image_dim,)), ("img_emb.proj.0.bias", (image_dim,))]
    shapes += linear("img_emb.proj.1", image_dim, image_dim) + linear("img_emb.proj.3", dim, image_dim)
    shapes += [("img_emb.proj.4.weight", (dim,)), ("img_emb.proj.4.bias", (dim,))]
    return shapes


def random_tensor(key: str, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
    """One ``torch.randn`` call, scaled by the key's role (the shared reference case's rule)."""
    x = torch.randn(*shape, generator=generator, device=device)
    leaf = key.rsplit(".", 1)[-1]
    if "gamma" in leaf or (leaf == "weight" and len(shape) == 1):
        return 1 + 0.1 * x
    if leaf == "bias":
        return 0.05 * x
    if len(shape) >= 2:
        return x / math.sqrt(math.prod(shape[1:]))
    return 0.1 * x


def random_weights(shapes: Iterable[tuple[str, tuple[int, ...]]], seed: int, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> Iterator[tuple[str, torch.Tensor]]:
    """Seeded random tensors for ``shapes``, drawn one after the other from one generator."""
    generator = torch.Generator(device=device).manual_seed(seed)
    for key, shape in shapes:
        yield key, random_tensor(key, tuple(shape), generator, device).to(dtype)


def save_sharded(tensors: Iterable[tuple[str, torch.Tensor]], folder: Path, shards: int, total_bytes: int) -> list[Path]:
    """Write ``prefix-0000k-of-0000n.safetensors`` shards of about equal size and their index, as the hub lays them out."""
    folder.mkdir(parents=True, exist_ok=True)
    per_shard = total_bytes / shards
    names = [f"{SHARD_PREFIX}-{k + 1:05d}-of-{shards:05d}.safetensors" for k in range(shards)]
    weight_map: dict[str, str] = {}
    current: dict[str, torch.Tensor] = {}
    size, index = 0, 0

    def flush() -> None:
        nonlocal current, size, index
        save_file({k: v.contiguous().cpu() for k, v in current.items()}, str(folder / names[index]), metadata={"format": "pt"})
        weight_map.update({key: names[index] for key in current})
        current, size, index = {}, 0, index + 1

    for key, tensor in tensors:
        current[key] = tensor
        size += tensor.numel() * tensor.element_size()
        if size >= per_shard and index < shards - 1:
            flush()
    flush()
    while index < shards:  # fewer tensors than shards: the hub never does this, but keep names consistent
        save_file({}, str(folder / names[index]), metadata={"format": "pt"})
        index += 1
    index_file = folder / f"{SHARD_PREFIX}{INDEX_SUFFIX}"
    index_file.write_text(json.dumps({"metadata": {"total_size": total_bytes}, "weight_map": weight_map}, indent=2))
    return [folder / name for name in names]


def write_ati_transformer(folder: Path, config: dict, seed: int, image_dim: int = 1280, shards: int = 2,
                          device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Path:
    """ATI's transformer repo: ``config.json`` and original-layout shards with their index."""
    shapes = original_transformer_shapes(config, image_dim)
    total = sum(math.prod(shape) for _, shape in shapes) * torch.finfo(dtype).bits // 8
    save_sharded(random_weights(shapes, seed, device, dtype), folder, shards, total)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


def _fill_random(module: torch.nn.Module, seed: int, device: torch.device | str, dtype: torch.dtype) -> torch.nn.Module:
    """Give a module built with meta parameters seeded random values on ``device``."""
    module.to_empty(device=device)
    params = dict(module.named_parameters())
    values = random_weights(((name, tuple(p.shape)) for name, p in params.items()), seed, device, dtype)
    with torch.no_grad():
        for name, value in values:
            params[name].data = value
    return module


def write_wan_repo(folder: Path, size: str, seed: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Path:
    """The diffusers-format Wan2.1 I2V repo without transformer weights, as ``tracefield download --generator`` leaves it."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanTransformer3DModel
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPVisionConfig, CLIPVisionModel, PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    from tracefield.generate.pipeline import CLIP_MEAN, CLIP_STD
    from tracefield.generate.weights import diffusers_transformer_config

    dims = SIZES[size]
    folder.mkdir(parents=True, exist_ok=True)
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCABULARY)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=512)
    tokenizer.save_pretrained(folder / "tokenizer")
    text_config = UMT5Config(vocab_size=len(VOCABULARY) if size == "tiny" else 256384, **dims["text"])
    image_config = CLIPVisionConfig(**dims["image"])
    with parameters_on_meta():
        text = UMT5EncoderModel(text_config)
        image = CLIPVisionModel(image_config)
        vae = AutoencoderKLWan(z_dim=16, temperal_downsample=[False, True, True], **dims["vae"])
    shard = "2GB" if size == "tiny" else "10GB"
    _fill_random(text, seed + 1, device, dtype)
    text.encoder.embed_tokens.weight = text.shared.weight  # one tensor under both names, as UMT5 ties them
    text.save_pretrained(folder / "text_encoder", max_shard_size=shard)
    _fill_random(image, seed + 2, device, dtype).save_pretrained(folder / "image_encoder", max_shard_size=shard)
    _fill_random(vae, seed + 3, device, torch.float32).save_pretrained(folder / "vae")
    side = dims["image"]["image_size"]
    (folder / "image_processor").mkdir(exist_ok=True)
    (folder / "image_processor" / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": side}, "do_center_crop": True,
        "crop_size": {"height": side, "width": side}, "do_normalize": True, "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
        "do_rescale": True, "rescale_factor": 1 / 255, "resample": 3}, indent=2))
    UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0).save_pretrained(folder / "scheduler")
    transformer = diffusers_transformer_config(ati_config(size), dims["image"]["hidden_size"])
    (folder / "transformer").mkdir(exist_ok=True)
    (folder / "transformer" / "config.json").write_text(json.dumps({"_class_name": WanTransformer3DModel.__name__, **transformer}, indent=2))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "WanImageToVideoPipeline",
        "image_encoder": ["transformers", "CLIPVisionModel"],
        "image_processor": ["transformers", "CLIPImageProcessor"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"],
    }, indent=2))
    return folder


def write_layouts(root: Path, size: str = "tiny", seed: int = 0, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32) -> tuple[Path, Path]:
    """Both repositories under ``root`` as ``tracefield download --generator`` names them; returns (wan, ati)."""
    from tracefield.generate.weights import ATI_DIR, WAN_DIR

    wan = write_wan_repo(root / WAN_DIR, size, seed, device, dtype)
    ati = write_ati_transformer(root / ATI_DIR, ati_config(size), seed, SIZES[size]["image"]["hidden_size"],
                                SIZES[size]["shards"], device, dtype)
    return wan, ati
