"""The network against the public release: conformance vectors, key layout, parameter counts."""

from __future__ import annotations

import json

import pytest
import torch

import tracefield
from tracefield.curves import evaluate_points_and_conf
from tracefield.model import TraceAnything, load_config
from tracefield.paths import config_path

from conftest import SHARED, TINY_NET, relative_error, require_shared

TOLERANCE = 1e-4
OUTPUT_KEYS = ("time", "ctrl_pts3d", "ctrl_conf", "ctrl_pts3d_local", "ctrl_conf_local")


def run_release_api(vector):
    model = tracefield.load_model(vector.config, vector.state_dict, device="cpu")
    views = [{"img": img, "time_step": t} for img, t in zip(vector.images, vector.times)]
    return model, model(views)


def test_conformance_outputs(vector):
    """Every out.* tensor of the reference within 1e-4 relative error, through the release's interface."""
    _, outputs = run_release_api(vector)
    assert len(outputs) == vector.num_views
    for i, out in enumerate(outputs):
        for key in OUTPUT_KEYS:
            ref = vector.outputs[f"{i}.{key}"]
            assert out[key].shape == ref.shape, key
            assert relative_error(out[key], ref) < TOLERANCE, (vector.name, i, key)


def test_conformance_tracks(vector):
    """track_pts3d / track_conf: each view's curve at all predicted times, via tracefield.curves."""
    _, outputs = run_release_api(vector)
    times = torch.cat([out["time"] for out in outputs])
    for i, out in enumerate(outputs):
        pts, conf = evaluate_points_and_conf(out["ctrl_pts3d"], out["ctrl_conf"], times)
        assert relative_error(pts, vector.outputs[f"{i}.track_pts3d"]) < TOLERANCE
        assert relative_error(conf, vector.outputs[f"{i}.track_conf"]) < TOLERANCE


def test_predict_matches_release_interface_and_is_differentiable(k10_vector):
    model, outputs = run_release_api(k10_vector)
    images = torch.stack(k10_vector.images, dim=1)
    times = torch.stack(k10_vector.times, dim=1)
    pred = model.predict(images, times)
    assert pred["ctrl_pts3d"].shape == (1, 3, 10, 64, 96, 3)
    assert torch.allclose(pred["ctrl_pts3d"][0, 1], outputs[1]["ctrl_pts3d"])
    pred["ctrl_pts3d"].sum().backward()  # training path: predict keeps the graph
    assert model.encoder.patch_embed.proj.weight.grad is not None


def test_batch_of_sequences_equals_each_sequence(k10_vector):
    """B > 1: each sequence is traced independently (views never attend across sequences)."""
    model = tracefield.load_model(k10_vector.config, k10_vector.state_dict, device="cpu")
    images = torch.stack(k10_vector.images, dim=1)
    times = torch.stack(k10_vector.times, dim=1)
    with torch.no_grad():
        single = model.predict(images, times)
        double = model.predict(torch.cat([images, images.flip(1)]), torch.cat([times, times]))
    assert torch.allclose(double["ctrl_pts3d"][0], single["ctrl_pts3d"][0], rtol=1e-4, atol=1e-5)


def test_chunked_heads_and_encoder_change_nothing(k10_vector):
    model = tracefield.load_model(k10_vector.config, k10_vector.state_dict, device="cpu")
    images, times = torch.stack(k10_vector.images, dim=1), torch.stack(k10_vector.times, dim=1)
    with torch.no_grad():
        whole = model.predict(images, times)
        model.runtime.head_chunk_views = 1
        model.runtime.encoder_chunk_views = 2
        chunked = model.predict(images, times)
    for key in whole:
        assert torch.allclose(whole[key], chunked[key], rtol=1e-5, atol=1e-6), key


def test_skipping_the_local_head_keeps_the_other_outputs(k10_vector):
    model = tracefield.load_model(k10_vector.config, k10_vector.state_dict, device="cpu")
    images, times = torch.stack(k10_vector.images, dim=1), torch.stack(k10_vector.times, dim=1)
    steps = []
    with torch.no_grad():
        whole = model.predict(images, times)
        without = model.predict(images, times, on_step=lambda: steps.append(1), local_head=False)
    assert set(without) == {"time", "ctrl_pts3d", "ctrl_conf"}
    assert len(steps) == model.num_forward_steps(images.shape[1], local_head=False) < model.num_forward_steps(images.shape[1])
    for key in without:
        assert torch.equal(whole[key], without[key]), key


def test_full_size_state_dict_matches_public_checkpoint_keys():
    keys = json.loads(require_shared(SHARED / "spec" / "checkpoint_keys.json").read_text())
    with torch.device("meta"):
        model = TraceAnything(load_config(config_path("eval")).net)
    state = model.state_dict()
    assert set(state) == set(keys)
    assert {k: list(v.shape) for k, v in state.items()} == keys


def test_full_size_parameter_counts():
    """668.1 M in all: encoder 303.1 M, decoder 303.4 M, 20.6 M per DPT head (MODEL.md)."""
    with torch.device("meta"):
        model = TraceAnything(load_config(config_path("eval")).net)
    def millions(module: torch.nn.Module) -> float:
        return sum(p.numel() for p in module.parameters()) / 1e6

    assert round(millions(model), 1) == 668.1
    assert round(millions(model.encoder), 1) == 303.1
    assert round(millions(model.decoder), 1) == 303.4
    assert round(millions(model.ds_head_track), 1) == 20.6


def test_eval_yaml_is_the_release_network():
    """configs/eval.yaml, the release's own eval.yaml layout and our defaults agree."""
    ours = load_config(config_path("eval"))
    release_layout = {"model": {"_target_": "x.Module", "net": {"_target_": "x.Net", **ours.net.to_dict(), "freeze": "none"}}}
    assert load_config(release_layout).net.encoder_args == ours.net.encoder_args
    assert ours.net == type(ours.net)()


def test_portrait_or_unaligned_images_are_rejected():
    model = tracefield.load_model(TINY_NET)
    with pytest.raises(ValueError, match="portrait"):
        model.predict(torch.zeros(1, 2, 3, 64, 32), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="multiple"):
        model.predict(torch.zeros(1, 2, 3, 40, 64), torch.zeros(1, 2))


def test_random_weights_are_seeded_and_flagged():
    a, b = tracefield.load_model(TINY_NET), tracefield.load_model(TINY_NET)
    assert a.untrained and b.untrained
    assert torch.equal(a.encoder.patch_embed.proj.weight, b.encoder.patch_embed.proj.weight)


def offsets_net() -> dict:
    return {**TINY_NET, "head_args": {**TINY_NET["head_args"], "ctrl_offsets": True}}


def test_offset_heads_pass_each_curve_through_the_point_the_head_gives_at_its_view_time():
    """head_args.ctrl_offsets: each pixel's curve at its own view's time (not another view's, not 0) is the head's anchor
    output, activated like the release's points; the rest of the network is the release's (only the heads' last conv grows by 3)."""
    from tracefield.curves import evaluate_each

    model = tracefield.load_model(offsets_net(), device="cpu")
    raw = {}
    model.ds_head_track.dpt.register_forward_hook(lambda module, inputs, output: raw.update(track=output.detach()))
    times = torch.tensor([[0.0, 0.3, 1.0]])
    with torch.no_grad():
        out = model.predict(torch.rand(1, 3, 3, 32, 48) * 2 - 1, times)
    anchor = raw["track"][:, :3].permute(0, 2, 3, 1)
    anchor = anchor / anchor.norm(dim=-1, keepdim=True) * torch.expm1(anchor.norm(dim=-1, keepdim=True))
    torch.testing.assert_close(evaluate_each(out["ctrl_pts3d"][0], times[0]), anchor, rtol=1e-4, atol=1e-5)
    assert (out["ctrl_pts3d"][0].std(dim=1) > 1e-4).any()  # the offsets do move the control points
    release = tracefield.load_model(TINY_NET, device="cpu").state_dict()
    offsets = model.state_dict()
    changed = {k for k in release if release[k].shape != offsets[k].shape}
    assert set(release) == set(offsets) and {k.split(".")[0] for k in changed} == {"ds_head_track", "ds_head_local", "track_head", "local_head"}
    assert {k.split(".dpt.")[1] for k in changed} == {"head.4.weight", "head.4.bias"}  # the points heads' last conv alone
    k = TINY_NET["poly_degree"]
    assert {offsets[key].shape[0] for key in changed} == {4 * k + 3}


def test_zero_offsets_are_standing_still():
    from tracefield.model.heads import points_from_offsets

    k = 4
    raw = torch.randn(2, 3 + 4 * k, 5, 6)
    raw[:, 3 : 3 + 3 * k] = 0.7  # every offset the same: a curve that stays put
    points, conf = points_from_offsets(raw, k, torch.tensor([0.0, 0.6]))
    torch.testing.assert_close(points, points[:, :1].expand_as(points))
    assert points.shape == (2, k, 5, 6, 3) and conf.shape == (2, k, 5, 6) and (conf > 1).all()


def test_a_checkpoint_of_the_release_heads_does_not_load_into_offset_heads(tmp_path):
    from tracefield.errors import TracefieldError
    from tracefield.model.checkpoint import save_checkpoint
    from tracefield.model.config import load_config

    path = save_checkpoint(tracefield.load_model(TINY_NET, device="cpu").state_dict(), tmp_path / "release.safetensors", load_config(TINY_NET).net.to_json())
    with pytest.raises(TracefieldError, match="ctrl_offsets"):
        tracefield.load_model(offsets_net(), path, device="cpu")
    trained = save_checkpoint(tracefield.load_model(offsets_net(), device="cpu").state_dict(), tmp_path / "offsets.safetensors", load_config(offsets_net()).net.to_json())
    assert tracefield.load_model(None, trained, device="cpu").net_config.head_args.ctrl_offsets  # the file says how to build it


def test_decoder_position_embedding_tells_tokens_of_a_uniform_image_where_they_are():
    """Without it (the release) a uniform frame's tokens are all alike after the encoder and decoder: RoPE turns attention
    logits, never values, so no token can carry where it, or its match, is. decoder_args.position_embedding adds that."""
    images, times = torch.zeros(1, 2, 3, 32, 64), torch.tensor([[0.0, 1.0]])
    for flag in (False, True):
        net = {**TINY_NET, "decoder_args": {**TINY_NET["decoder_args"], "position_embedding": flag}}
        model = tracefield.load_model(net, device="cpu")
        with torch.no_grad():
            tokens = model._encode(images.flatten(0, 1), None).unflatten(0, (1, 2))
            last = model.decoder(tokens, times, (2, 4), model.net_config.hooks)[model.net_config.hooks[-1]]  # [1, 2, 8, D]
        assert torch.allclose(tokens, tokens[:, :, :1].expand_as(tokens), atol=1e-5)  # the encoder sees no difference
        spread = (last - last[:, :, :1]).abs().amax().item()
        assert (spread > 1e-2) if flag else (spread < 1e-4), flag


def test_training_after_inference_in_one_process():
    """An inference pass first (tracefield eval, then train, in one process) must not leave cached RoPE tables that training cannot use."""
    from tracefield.model.rope import rope_tables

    rope_tables.cache_clear()
    model = tracefield.load_model(TINY_NET, device="cpu")
    images, times = torch.rand(1, 2, 3, 32, 48), torch.tensor([[0.0, 1.0]])
    with torch.inference_mode():
        model.predict(images, times)
    model.predict(images, times)["ctrl_pts3d"].sum().backward()
    assert model.encoder.patch_embed.proj.weight.grad is not None


def test_offset_channels_are_xyz_major_like_the_release_points():
    """MODEL.md lays the release's point channels out as (3, K), xyz-major; the offsets of ctrl_offsets heads follow
    it: offset k's x, y and z sit in channels 3 + k, 3 + K + k and 3 + 2K + k. Control points differ exactly as their
    offsets do (the anchor term is shared by all K)."""
    from tracefield.model.heads import points_from_offsets

    k = 4
    raw = torch.randn(2, 3 + 4 * k, 5, 6, generator=torch.Generator().manual_seed(0))
    points, conf = points_from_offsets(raw, k, torch.tensor([0.2, 0.7]))
    offsets = torch.stack([raw[:, 3 + c * k : 3 + (c + 1) * k] for c in range(3)], dim=-1)  # [B, K, H, W, 3] by hand
    torch.testing.assert_close(points - points[:, :1], offsets - offsets[:, :1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(conf, 1 + raw[:, 3 + 3 * k :].exp())


@pytest.mark.parametrize(
    "asked, runtime, expected",
    [
        ("bfloat16", "auto", torch.bfloat16),
        (torch.bfloat16, "float32", torch.bfloat16),
        ("float32", "bfloat16", torch.float32),
        (None, "bfloat16", torch.bfloat16),
        (None, "auto", torch.float32),  # auto on a CPU: float32, the conformance path
    ],
)
def test_the_dtype_asked_for_wins_over_the_config(asked, runtime, expected):
    """load_model(dtype=...) (the CLI's --dtype) overrides runtime.dtype; without it the config's dtype holds."""
    model = tracefield.load_model({"model": TINY_NET, "runtime": {"dtype": runtime}}, device="cpu", dtype=asked)
    assert {p.dtype for p in model.parameters()} == {expected}
