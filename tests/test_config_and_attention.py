"""Configs (the release's files load, mistakes are named) and attention backends (same function)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from omegaconf import OmegaConf

import tracefield
from tracefield.errors import TracefieldError
from tracefield.model import attention as attn
from tracefield.model.config import load_config
from tracefield.paths import config_path

from conftest import TINY_NET, relative_error


def test_release_eval_yaml_layout_loads(tmp_path):
    release = {
        "hydra": {"run": {"dir": "."}},
        "ckpt_path": "checkpoints/trace_anything.ckpt",
        "model": {"_target_": "fast3r.Module", "net": {"_target_": "fast3r.Fast3R", **TINY_NET, "freeze": "none"}},
    }
    path = tmp_path / "eval.yaml"
    OmegaConf.save(release, path)
    cfg = load_config(path)
    assert cfg.net.poly_degree == 4 and cfg.net.decoder_args.depth == 2
    assert cfg.net.hooks == [0, 1, 1, 2]


@pytest.mark.parametrize(
    "change, words",
    [
        ({"encoder_args": {"embed_dims": 64}}, "embed_dims"),
        ({"decoder_args": {"decoder_type": "dpt_v2"}}, "decoder_type='dpt_v2'"),
        ({"decoder_args": {"enc_embed_dim": 48}}, "enc_embed_dim=48 must equal"),
        ({"decoder_args": {"embed_dim": 33}}, "not divisible by num_heads"),
        ({"poly_degree": 3}, "at least 4 control points"),
        ({"head_args": {"conf_mode": ["sigmoid", 0, 1]}}, "conf_mode"),
        ({"encoder_args": {"depth": "deep"}}, "invalid config"),
    ],
)
def test_mistakes_are_named(change, words):
    merged = OmegaConf.to_container(OmegaConf.merge(TINY_NET, change))
    with pytest.raises(TracefieldError, match=words.replace("(", r"\(")):
        load_config(merged)


def test_runtime_section_is_checked():
    with pytest.raises(TracefieldError, match="runtime.attention='xformers'"):
        load_config({"model": TINY_NET, "runtime": {"attention": "xformers"}})


def test_missing_config_file():
    with pytest.raises(TracefieldError, match="config file not found"):
        load_config("configs/nope.yaml")


def test_bundled_configs_resolve_by_name():
    assert config_path("small").is_file() and config_path("eval").is_file()
    assert load_config(config_path("small")).net.poly_degree == 10


def test_backend_choice_on_this_machine():
    cpu = torch.device("cpu")
    assert attn.resolve_backend("auto", cpu, torch.float32) == "math"
    assert attn.resolve_backend("sdpa", cpu, torch.float32) == "sdpa"
    if not attn.flash_attn_available():
        with pytest.raises(TracefieldError, match="flash-attn package is not installed"):
            attn.resolve_backend("flash_attn", cpu, torch.bfloat16)
    assert tracefield.load_model(TINY_NET, device="cpu").attention_backend == "math"
    assert tracefield.load_model(TINY_NET, device="cpu", attention="sdpa").attention_backend == "sdpa"


def test_flash_attn_4_alone_is_not_flash_attn(tmp_path, monkeypatch):
    """flash-attn-4 installs a ``flash_attn`` namespace holding only ``cute/``: the network's flash_attn backend needs
    flash-attn 2's ``flash_attn_func`` (found on a GPU machine with FA4 installed: auto picked it and failed to import)."""
    (tmp_path / "flash_attn" / "cute").mkdir(parents=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flash_attn_2_cuda" else real(name, *a))
    assert importlib.util.find_spec("flash_attn") is not None and not attn.flash_attn_available()
    with pytest.raises(TracefieldError, match="flash-attn package is not installed"):
        attn.resolve_backend("flash_attn", torch.device("cpu"), torch.bfloat16)


def test_math_blocks_and_sdpa_agree(monkeypatch):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 300, 3, 16, generator=g) for _ in range(3))
    whole = attn.attention(q, k, v, 0.2, "math")
    monkeypatch.setattr(attn, "_MATH_SCORE_BUDGET", 2 * 3 * 300 * 7)  # 7 queries per block
    torch.testing.assert_close(attn.attention(q, k, v, 0.2, "math"), whole, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(attn.attention(q, k, v, 0.2, "sdpa"), whole, rtol=1e-5, atol=1e-5)
    reference = torch.softmax(torch.einsum("blhd,bmhd->bhlm", q, k) * 0.2, -1)
    torch.testing.assert_close(whole, torch.einsum("bhlm,bmhd->blhd", reference, v).reshape(2, 300, 48), rtol=1e-5, atol=1e-6)


def test_sdpa_backend_also_conforms(k10_vector):
    model = tracefield.load_model(k10_vector.config, k10_vector.state_dict, device="cpu", attention="sdpa")
    views = [{"img": img, "time_step": t} for img, t in zip(k10_vector.images, k10_vector.times)]
    out = model(views)
    for i in range(k10_vector.num_views):
        assert relative_error(out[i]["ctrl_pts3d"], k10_vector.outputs[f"{i}.ctrl_pts3d"]) < 1e-4


def test_bfloat16_on_cpu_stays_close(k10_vector):
    """The half-precision path runs end to end (RoPE and head activations in fp32)."""
    model = tracefield.load_model(k10_vector.config, k10_vector.state_dict, device="cpu", dtype="bfloat16")
    views = [{"img": img, "time_step": t} for img, t in zip(k10_vector.images, k10_vector.times)]
    out = model(views)
    assert out[0]["ctrl_pts3d"].dtype == torch.float32
    assert relative_error(out[0]["ctrl_pts3d"], k10_vector.outputs["0.ctrl_pts3d"]) < 5e-2
