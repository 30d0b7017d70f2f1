"""Network configuration: the release's ``model.net`` section, validated through omegaconf.

The field names mirror the public release's YAML (``encoder_args``, ``decoder_args``,
``head_args``, ``poly_degree``...) so its ``configs/eval.yaml`` loads unchanged. Structured
configs reject unknown keys and wrong types, so a typo is an error instead of a silent
default. ``head_dims`` (DPT widths) and ``runtime`` (attention backend, dtype) are ours.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Mapping, Optional, Union

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tracefield.errors import TracefieldError, short_reason
from tracefield.io.preprocess import LONG_SIDE
from tracefield.model.attention import BACKENDS as ATTENTION_BACKENDS

DTYPES = ("auto", "float32", "bfloat16", "float16")

# Values the release and the conformance vectors use; the function is the same for all of
# them (attn_implementation is only a kernel hint), so they are accepted and not acted on.
_ACCEPTED = {
    "encoder_type": ("croco",),
    "patch_embed_cls": ("ManyAR_PatchEmbed", "PatchEmbedDust3R"),
    "decoder_type": ("fast3r", "transformer"),
    "head_type": ("dpt",),
    "output_mode": ("pts3d",),
    "targeting_mechanism": ("bspline_conf",),
    "attn_implementation": ("pytorch_naive", "flash_attention", "pytorch_auto"),
}


@dataclass
class EncoderArgs:
    """CroCo ViT encoder (``encoder.*``)."""

    encoder_type: str = "croco"
    img_size: int = 512
    patch_size: int = 16
    patch_embed_cls: str = "ManyAR_PatchEmbed"
    embed_dim: int = 1024
    num_heads: int = 16
    depth: int = 24
    mlp_ratio: float = 4.0
    pos_embed: str = "RoPE100"
    attn_implementation: str = "flash_attention"


@dataclass
class DecoderArgs:
    """Global-attention decoder over all views (``decoder.*``)."""

    decoder_type: str = "fast3r"
    random_image_idx_embedding: bool = False
    # tracefield's extension, off in the release: a fixed 2D sin-cos embedding of each token's
    # patch (row, column) added to the decoder's input (see tracefield.model.decoder).
    position_embedding: bool = False
    enc_embed_dim: int = 1024
    embed_dim: int = 1024
    num_heads: int = 16
    depth: int = 24
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop: float = 0.0
    attn_drop: float = 0.0
    attn_implementation: str = "flash_attention"


@dataclass
class HeadArgs:
    """DPT heads (``ds_head_track``, ``ds_head_local``, ``ds_head_time``)."""

    head_type: str = "dpt"
    output_mode: str = "pts3d"
    landscape_only: bool = True
    depth_mode: List[Any] = field(default_factory=lambda: ["exp", -math.inf, math.inf])
    conf_mode: List[Any] = field(default_factory=lambda: ["exp", 1, math.inf])
    patch_size: int = 16
    with_local_head: bool = True
    ctrl_offsets: bool = False  # ours, off in the release: control points = the pixel's own-time point + offsets (heads.py)


@dataclass
class HeadDims:
    """Widths inside each DPT head; the public model uses these defaults."""

    feature_dim: int = 256
    layer_dims: List[int] = field(default_factory=lambda: [96, 192, 384, 768])

    @property
    def last_dim(self) -> int:
        return self.feature_dim // 2


@dataclass
class RuntimeArgs:
    """How to run the network; never changes its function (up to floating point)."""

    attention: str = "auto"  # auto | cudnn | flash_attn | sdpa | math
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    head_chunk_views: int = 8  # views per DPT-head pass: bounds full-resolution memory
    encoder_chunk_views: int = 64  # views per encoder pass
    channels_last: Optional[bool] = None  # DPT convolutions in NHWC; None: on CUDA only
    cuda_graph_max_views: int = 8  # replay CUDA graphs for inputs up to this many views (0: never)
    compile: bool = False  # torch.compile the blocks and heads (CUDA; pays off over many passes)
    long_side: int = LONG_SIDE  # frames are resized to this long side before inference (the release: 512)


@dataclass
class NetConfig:
    """The release's ``model.net`` section plus our ``head_dims``."""

    encoder_args: EncoderArgs = field(default_factory=EncoderArgs)
    decoder_args: DecoderArgs = field(default_factory=DecoderArgs)
    head_args: HeadArgs = field(default_factory=HeadArgs)
    head_dims: HeadDims = field(default_factory=HeadDims)
    targeting_mechanism: str = "bspline_conf"
    poly_degree: int = 10
    freeze: Optional[str] = None
    whether_local: bool = False

    @property
    def num_ctrl_pts(self) -> int:
        return self.poly_degree

    @property
    def with_local_head(self) -> bool:
        return self.whether_local or self.head_args.with_local_head

    @property
    def hooks(self) -> List[int]:
        """Which of the decoder's depth+1 outputs the DPT heads read (release rule)."""
        depth = self.decoder_args.depth
        return [0, depth * 2 // 4, depth * 3 // 4, depth]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=True)


@dataclass
class ModelConfig:
    """Everything :func:`tracefield.load_model` needs: the network and how to run it."""

    net: NetConfig = field(default_factory=NetConfig)
    runtime: RuntimeArgs = field(default_factory=RuntimeArgs)
    checkpoint: Optional[str] = None  # default weights for this config, if any
    source: str = "<defaults>"  # where the config came from, for messages


ConfigLike = Union[str, Path, Mapping[str, Any], DictConfig, ModelConfig, NetConfig]


def load_config(config: ConfigLike) -> ModelConfig:
    """Read a config from a YAML path, a mapping, or pass a ready one through.

    Accepted layouts (so the release's files and the vectors' metadata work as they are):
    ``{model: {net: {...}}}`` (the release's eval.yaml), ``{model: {...}}`` or ``{net: {...}}``
    (ours), or the net section itself at the top level. ``runtime`` and ``checkpoint`` are
    read from the top level when present.
    """
    if isinstance(config, ModelConfig):
        return config
    if isinstance(config, NetConfig):
        return ModelConfig(net=config)
    source = "<dict>"
    if isinstance(config, (str, Path)):
        source = str(config)
        path = Path(config)
        if not path.is_file():
            raise TracefieldError(f"{path}: config file not found; pass a YAML such as configs/eval.yaml")
        try:
            raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        except Exception as exc:  # omegaconf/yaml raise many types for a bad file
            raise TracefieldError(f"{path}: not a readable YAML config ({exc}); fix the syntax") from exc
    elif isinstance(config, DictConfig):
        raw = OmegaConf.to_container(config, resolve=True)
    else:
        raw = dict(config)
    if not isinstance(raw, dict):
        raise TracefieldError(f"{source}: a config must be a mapping; see configs/eval.yaml")
    net_raw = _find_net_section(raw, source)
    runtime_raw = raw.get("runtime") or {}
    try:
        net = _structured(NetConfig, _strip_targets(net_raw))
        runtime = _structured(RuntimeArgs, runtime_raw)
    except OmegaConfBaseException as exc:
        raise TracefieldError(f"{source}: invalid config ({short_reason(exc)}); compare with configs/eval.yaml") from exc
    checkpoint = raw.get("checkpoint")
    if checkpoint is not None and isinstance(config, (str, Path)):
        checkpoint = str(_resolve_relative(Path(config), checkpoint))
    cfg = ModelConfig(net=net, runtime=runtime, checkpoint=checkpoint, source=source)
    validate(cfg)
    return cfg


def _find_net_section(raw: dict, source: str) -> dict:
    model = raw.get("model")
    if isinstance(model, dict) and isinstance(model.get("net"), dict):
        return model["net"]
    if isinstance(model, dict) and "encoder_args" in model:
        return model
    if isinstance(raw.get("net"), dict):
        return raw["net"]
    if "encoder_args" in raw:
        return {k: v for k, v in raw.items() if k not in ("runtime", "checkpoint")}
    raise TracefieldError(
        f"{source}: no network section (expected model.net, model, net or encoder_args at the top); "
        "see configs/eval.yaml"
    )


def _strip_targets(section: Any) -> Any:
    """Drop hydra's ``_target_``/``_partial_`` entries, which name classes we do not import."""
    if isinstance(section, dict):
        return {k: _strip_targets(v) for k, v in section.items() if k not in ("_target_", "_partial_")}
    return section


def _structured(cls: type, values: Mapping[str, Any]) -> Any:
    merged = OmegaConf.merge(OmegaConf.structured(cls), values)
    return OmegaConf.to_object(merged)


def _resolve_relative(config_path: Path, value: str) -> Path:
    """A checkpoint path in a config is relative to the repository root (the config's parent's parent)."""
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    return config_path.resolve().parent.parent / path


def validate(cfg: ModelConfig) -> None:
    """Reject values the network cannot honour, naming the key and the allowed values."""
    net, src = cfg.net, cfg.source
    checks = {
        "encoder_args.encoder_type": net.encoder_args.encoder_type,
        "encoder_args.patch_embed_cls": net.encoder_args.patch_embed_cls,
        "encoder_args.attn_implementation": net.encoder_args.attn_implementation,
        "decoder_args.decoder_type": net.decoder_args.decoder_type,
        "decoder_args.attn_implementation": net.decoder_args.attn_implementation,
        "head_args.head_type": net.head_args.head_type,
        "head_args.output_mode": net.head_args.output_mode,
        "targeting_mechanism": net.targeting_mechanism,
    }
    for key, value in checks.items():
        allowed = _ACCEPTED[key.split(".")[-1]]
        if value not in allowed:
            raise TracefieldError(f"{src}: {key}={value!r} is not supported; use one of {list(allowed)}")
    enc, dec = net.encoder_args, net.decoder_args
    if not enc.pos_embed.startswith("RoPE"):
        raise TracefieldError(f"{src}: encoder_args.pos_embed={enc.pos_embed!r}; only RoPE<freq> (e.g. RoPE100) exists")
    try:
        rope_frequency(net)
    except ValueError as exc:
        raise TracefieldError(f"{src}: cannot read the frequency in pos_embed={enc.pos_embed!r}; use e.g. RoPE100") from exc
    if dec.random_image_idx_embedding:
        raise TracefieldError(f"{src}: decoder_args.random_image_idx_embedding is a training-only option; set it to false")
    if dec.enc_embed_dim != enc.embed_dim:
        raise TracefieldError(
            f"{src}: decoder_args.enc_embed_dim={dec.enc_embed_dim} must equal encoder_args.embed_dim={enc.embed_dim}"
        )
    for name, dim, heads in (("encoder_args", enc.embed_dim, enc.num_heads), ("decoder_args", dec.embed_dim, dec.num_heads)):
        if dim % heads:
            raise TracefieldError(f"{src}: {name}.embed_dim={dim} is not divisible by num_heads={heads}")
    if (enc.embed_dim // enc.num_heads) % 4:
        raise TracefieldError(f"{src}: encoder head width {enc.embed_dim // enc.num_heads} must be a multiple of 4 for 2D RoPE")
    if net.head_args.patch_size != enc.patch_size:
        raise TracefieldError(f"{src}: head_args.patch_size must equal encoder_args.patch_size ({enc.patch_size})")
    if enc.patch_size != 16:
        raise TracefieldError(f"{src}: patch_size={enc.patch_size}; the DPT heads are built for 16-pixel patches (use 16)")
    for key, mode in (("depth_mode", net.head_args.depth_mode), ("conf_mode", net.head_args.conf_mode)):
        if len(mode) != 3 or mode[0] != "exp":
            raise TracefieldError(f"{src}: head_args.{key}={mode} is not supported; use [exp, lo, hi]")
    if list(net.head_args.depth_mode[1:]) != [-math.inf, math.inf]:
        raise TracefieldError(f"{src}: head_args.depth_mode bounds must be [-inf, inf] as in the release")
    if net.poly_degree < 4:
        raise TracefieldError(f"{src}: poly_degree={net.poly_degree}; a cubic B-spline needs at least 4 control points")
    if len(net.head_dims.layer_dims) != 4:
        raise TracefieldError(f"{src}: head_dims.layer_dims needs 4 entries, got {net.head_dims.layer_dims}")
    rt = cfg.runtime
    if rt.attention not in ATTENTION_BACKENDS:
        raise TracefieldError(f"{src}: runtime.attention={rt.attention!r}; use one of {list(ATTENTION_BACKENDS)}")
    if rt.dtype not in DTYPES:
        raise TracefieldError(f"{src}: runtime.dtype={rt.dtype!r}; use one of {list(DTYPES)}")
    if rt.head_chunk_views < 1 or rt.encoder_chunk_views < 1:
        raise TracefieldError(f"{src}: runtime chunk sizes must be >= 1")


# The keys that define the network's function; every other key of NetConfig is a hint the
# release writes (attn_implementation, img_size, freeze ...) that the network does not act on.
ARCHITECTURE_KEYS = (
    "encoder_args.patch_size", "encoder_args.embed_dim", "encoder_args.num_heads", "encoder_args.depth",
    "encoder_args.mlp_ratio", "encoder_args.pos_embed",
    "decoder_args.embed_dim", "decoder_args.num_heads", "decoder_args.depth", "decoder_args.mlp_ratio", "decoder_args.qkv_bias",
    "decoder_args.position_embedding",
    "head_args.depth_mode", "head_args.conf_mode", "head_args.ctrl_offsets", "head_dims.feature_dim", "head_dims.layer_dims", "poly_degree",
)


def network_differences(a: NetConfig, b: NetConfig) -> list[str]:
    """``key: value_a != value_b`` for every architecture key where two configs build different networks."""
    def value(net: NetConfig, key: str) -> Any:
        section, _, name = key.rpartition(".")
        return getattr(getattr(net, section), name) if section else getattr(net, name)

    differences = [f"{key}: {value(a, key)!r} != {value(b, key)!r}" for key in ARCHITECTURE_KEYS if value(a, key) != value(b, key)]
    if a.with_local_head != b.with_local_head:
        differences.append(f"local head: {a.with_local_head} != {b.with_local_head}")
    return differences


def rope_frequency(net: NetConfig) -> float:
    """The RoPE base written in ``pos_embed`` (``RoPE100`` -> 100)."""
    return float(net.encoder_args.pos_embed[len("RoPE"):])
