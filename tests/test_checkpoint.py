"""Checkpoint loading: every layout the release and Lightning produce, and every way it can be wrong."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import tracefield
from tracefield.errors import TracefieldError
from tracefield.model.checkpoint import canonical_key, read_checkpoint, save_checkpoint
from tracefield.model.config import load_config

from conftest import TINY_NET


@pytest.fixture(scope="module")
def reference():
    """A tiny model with random weights, its full state dict (both head names) and an input."""
    model = tracefield.load_model(TINY_NET, device="cpu")
    images = torch.linspace(-1, 1, 2 * 3 * 32 * 48).reshape(1, 2, 3, 32, 48)
    with torch.no_grad():
        out = model.predict(images, torch.tensor([[0.0, 1.0]]))
    return model.state_dict(), images, out


def only_names(state: dict, keep: str) -> dict:
    """Keep one of each head's two names: 'ds' (ds_head_*) or 'short' (track_head, ...)."""
    short = ("time_head.", "track_head.", "local_head.")
    if keep == "ds":
        return {k: v for k, v in state.items() if not k.startswith(short)}
    return {k: v for k, v in state.items() if not k.startswith("ds_head_")}


def assert_loads_same(path_or_sd, reference) -> None:
    _, images, expected = reference
    model = tracefield.load_model(TINY_NET, path_or_sd, device="cpu")
    assert not model.untrained
    with torch.no_grad():
        out = model.predict(images, torch.tensor([[0.0, 1.0]]))
    for key in expected:
        assert torch.equal(out[key], expected[key]), key


@pytest.mark.parametrize("names", ["both", "ds", "short"])
@pytest.mark.parametrize("wrapper", ["plain", "net_prefix", "lightning"])
@pytest.mark.parametrize("suffix", [".pt", ".pth", ".ckpt"])
def test_torch_checkpoint_layouts(tmp_path, reference, names, wrapper, suffix):
    state = reference[0] if names == "both" else only_names(reference[0], names)
    if wrapper in ("net_prefix", "lightning"):
        state = {f"net.{k}": v for k, v in state.items()}
    payload = {"state_dict": state, "epoch": 3, "global_step": 1200, "hyper_parameters": {"lr": 1e-4}} if wrapper == "lightning" else state
    path = tmp_path / f"weights{suffix}"
    torch.save(payload, path)
    assert_loads_same(path, reference)


def test_safetensors_round_trip_keeps_config(tmp_path, reference):
    model = tracefield.load_model(TINY_NET, device="cpu")
    path = save_checkpoint(model.state_dict(), tmp_path / "tiny.safetensors", load_config(TINY_NET).net.to_json())
    tensors, metadata = read_checkpoint(path)
    assert all(not k.startswith(("time_head.", "track_head.")) and "_rn." not in k.replace("layer_rn.", "") for k in tensors)
    assert_loads_same(path, reference)
    from_metadata = tracefield.load_model(None, path, device="cpu")  # config read from the file
    assert from_metadata.num_ctrl_pts == TINY_NET["poly_degree"]


def test_safetensors_keeps_the_runtime_and_skips_keys_it_does_not_know(tmp_path):
    """The runtime section travels with the weights (the frame size a network was trained at); a key from another version is ignored."""
    model = tracefield.load_model(TINY_NET, device="cpu")
    path = save_checkpoint(model.state_dict(), tmp_path / "tiny.safetensors", load_config(TINY_NET).net.to_json(),
                           runtime={"long_side": 448, "attention": "sdpa", "from_the_future": 1})
    loaded = tracefield.load_model(None, path, device="cpu")
    assert loaded.runtime.long_side == 448 and loaded.attention_backend == "sdpa"
    assert loaded.config_source == f"the config stored in {path}"


def test_plain_safetensors_with_release_names(tmp_path, reference):
    path = tmp_path / "release.safetensors"
    save_file({k: v.contiguous() for k, v in only_names(reference[0], "short").items() if "layer_rn" not in k}, str(path))
    assert_loads_same(path, reference)


def test_missing_unexpected_and_shape_errors_list_them(tmp_path, reference):
    state = dict(only_names(reference[0], "ds"))
    del state["encoder.enc_blocks.0.attn.qkv.weight"]
    state["decoder.extra.weight"] = torch.zeros(3)
    state["decoder.decoder_embed.weight"] = torch.zeros(7, 7)
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(TracefieldError) as info:
        tracefield.load_model(TINY_NET, path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert "1 missing [encoder.enc_blocks.0.attn.qkv.weight]" in message  # a few keys: each in full
    assert "1 unexpected [decoder.extra.weight]" in message
    assert "decoder.decoder_embed.weight (file [7, 7], model [32, 32])" in message
    assert "--config" in message


def test_long_lists_of_differences_are_grouped(tmp_path, reference):
    """A checkpoint of another model misses hundreds of keys: grouped by block with counts, still one line."""
    state = {k: v for k, v in only_names(reference[0], "ds").items() if not k.startswith("decoder.")}
    path = tmp_path / "no_decoder.pt"
    torch.save(state, path)
    with pytest.raises(TracefieldError) as info:
        tracefield.load_model(TINY_NET, path)
    message = str(info.value)
    decoder_keys = [k for k in reference[0] if k.startswith("decoder.")]
    assert f"{len(decoder_keys)} missing [" in message and "decoder.dec_blocks.0.* x" in message
    assert "\n" not in message and len(message) < 400


def test_checkpoint_of_another_architecture(tmp_path, reference):
    path = tmp_path / "k4.pt"
    torch.save(reference[0], path)
    other = {**TINY_NET, "poly_degree": 10}
    with pytest.raises(TracefieldError, match="shape mismatches"):
        tracefield.load_model(other, path)


def test_conflicting_alias_values(tmp_path, reference):
    state = dict(reference[0])
    key = "track_head.dpt.head.4.bias"
    state[key] = state[key] + 1
    torch.save(state, tmp_path / "conflict.pt")
    with pytest.raises(TracefieldError, match="name the same weight but differ"):
        tracefield.load_model(TINY_NET, tmp_path / "conflict.pt")


class RunsCode:
    """A pickle payload that would create a file if it were ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol, match", [(2, "refusing to unpickle.*GLOBAL posix.system"), (pickle.HIGHEST_PROTOCOL, "not a plain torch weights file")])
def test_pickle_that_runs_code_is_refused(tmp_path, reference, protocol, match):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": reference[0], "trap": RunsCode(marker)}, path, pickle_protocol=protocol)
    with pytest.raises(TracefieldError, match=match):
        tracefield.load_model(TINY_NET, path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("weights.onnx", b"x", "unknown checkpoint type"),
        ("damaged.pt", b"not a zip or pickle", "not a plain torch weights file"),
        ("truncated.pt", b"PK\x03\x04garbage", "not a readable torch checkpoint"),
        ("damaged.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage", "not a readable safetensors"),
    ],
)
def test_unreadable_files(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(TracefieldError, match=match):
        tracefield.load_model(TINY_NET, path)


def test_not_a_state_dict(tmp_path):
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt")
    with pytest.raises(TracefieldError, match="not tensors"):
        tracefield.load_model(TINY_NET, tmp_path / "meta.pt")


def test_missing_file():
    with pytest.raises(TracefieldError, match="tracefield download"):
        tracefield.load_model(TINY_NET, "nowhere/trace_anything.pt")


def test_canonical_names():
    assert canonical_key("net.x") == "net.x"
    assert canonical_key("track_head.dpt.scratch.layer3_rn.weight") == "ds_head_track.dpt.scratch.layer_rn.2.weight"
    assert canonical_key("time_head.scalar_head.2.bias") == "ds_head_time.scalar_head.2.bias"
    assert canonical_key("encoder.enc_blocks.1.attn.qkv.weight") == "encoder.enc_blocks.1.attn.qkv.weight"


@pytest.fixture(scope="module")
def noisy_reference(reference):
    """The reference weights on random frames (the linear ramp of ``reference`` barely tells RoPE frequencies apart)."""
    images, times = torch.rand(1, 2, 3, 32, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1, torch.tensor([[0.0, 1.0]])
    with torch.no_grad():
        out = tracefield.load_model(TINY_NET, reference[0], device="cpu").predict(images, times)
    return reference[0], images, times, out["ctrl_pts3d"]


@pytest.mark.parametrize(
    "change, key",
    [
        ({"encoder_args": {"pos_embed": "RoPE10"}}, "encoder_args.pos_embed"),
        ({"encoder_args": {"num_heads": 4}}, "encoder_args.num_heads"),
        ({"decoder_args": {"num_heads": 4}}, "decoder_args.num_heads"),
        ({"decoder_args": {"position_embedding": True}}, "decoder_args.position_embedding"),
    ],
)
def test_configs_differing_only_where_no_weight_shows_it_are_refused(tmp_path, noisy_reference, change, key):
    """The rotary frequency, the head counts and the decoder's position embedding change what the network computes
    (shown below on the same weights) but no weight's name or shape: the weights would load silently, so only the
    config stored in the checkpoint can tell, and a --config that disagrees with it is refused, naming the key."""
    from omegaconf import OmegaConf

    state, images, times, same = noisy_reference
    other = OmegaConf.to_container(OmegaConf.merge(TINY_NET, change))
    with torch.no_grad():
        changed = tracefield.load_model(other, state, device="cpu").predict(images, times)["ctrl_pts3d"]
    assert (changed - same).abs().max() > 1e-4  # another function (random tiny weights: 2.7e-4 for RoPE10, more for the rest)
    path = save_checkpoint(state, tmp_path / "tiny.safetensors", load_config(TINY_NET).net.to_json())
    with pytest.raises(TracefieldError, match=f"describe different networks.*{key}"):
        tracefield.load_model(other, path, device="cpu")
