"""The ATI generator: motion patch against the reference, the whole path on a tiny pipeline, weights, bad input."""

from __future__ import annotations

import io

import imageio.v2 as iio
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from tracefield.cli import main
from tracefield.errors import TracefieldError
from tracefield.export import ExportOptions, run_export
from tracefield.export.selection import SelectionOptions
from tracefield.generate.motion_patch import patch_motion
from tracefield.generate.pipeline import GenerationOptions, aspect_bucket
from tracefield.generate.random_pipeline import random_pipeline
from tracefield.generate.run import prepare, read_run_list
from tracefield.generate.weights import load_transformer, read_transformer_state

from conftest import SHARED, require_shared
from scene import make_scene

TINY = GenerationOptions(steps=2, max_area=48 * 80)


@pytest.mark.parametrize("name", ["bear", "fish"])
@pytest.mark.parametrize("chunk", [1, 64])
def test_motion_patch_matches_ati(name, chunk):
    data = np.load(require_shared(SHARED / "vectors" / "ati" / f"motion_patch_{name}.npz"))
    out = patch_motion(torch.from_numpy(data["tracks"]), torch.from_numpy(data["y"]), chunk=chunk)
    np.testing.assert_allclose(out.numpy(), data["expected"], atol=1e-5, rtol=0)


def test_motion_patch_chunks_thousands_of_tracks():
    g = torch.Generator().manual_seed(0)
    tracks = torch.rand(1, 81, 3000, 4, generator=g) * 2 - 1
    tracks[..., 3] = 1.0
    condition = torch.randn(20, 21, 30, 52, generator=g)
    few = patch_motion(tracks, condition, chunk=3000)
    many = patch_motion(tracks, condition, chunk=37)
    torch.testing.assert_close(few, many)
    assert not torch.equal(few[4:, 1:], condition[4:, 1:])  # the latents really moved


def test_aspect_buckets_follow_ati():
    # ATI's float arithmetic puts sqrt(480 * 832 * 480 / 832) just under 480: an 832x480 image gives 464x832.
    assert aspect_bucket(832, 480, 480 * 832) == (464, 832)
    assert aspect_bucket(480, 832, 480 * 832) == (832, 480)
    assert aspect_bucket(1280, 720, 480 * 832) == (464, 832)
    assert aspect_bucket(1280, 720, 720 * 1280) == (720, 1280)


@pytest.fixture(scope="module")
def ati_export(tmp_path_factory):
    """An ATI run list exported from the synthetic test scene (the real export -> generate path)."""
    out = tmp_path_factory.mktemp("ati")
    run_export(make_scene().field, ExportOptions(format="ati", output=out, name="card", prompt="w1 w2",
                                                 selection=SelectionOptions(per_object=4, background=2, min_object_area=20)))
    return out / "card.yaml"


def test_export_then_generate_on_a_tiny_pipeline(ati_export, tmp_path):
    code = main(["generate", str(ati_export), "-o", str(tmp_path / "videos"), "--random-weights", "tiny",
                 "--steps", "2", "--max-area", str(48 * 80), "--device", "cpu", "-q"])
    assert code == 0
    height, width = aspect_bucket(128, 72, 48 * 80)  # the scene's frames are 128x72
    video = iio.mimread(tmp_path / "videos" / "card.mp4")
    assert len(video) == 81 and video[0].shape == (height, width, 3)
    assert len(iio.mimread(tmp_path / "videos" / "card_tracks.mp4")) == 81
    assert iio.imread(tmp_path / "videos" / "card_tracks.png").shape == (height, width, 3)


def test_tracks_reach_the_transformer(ati_export):
    """Different tracks give different condition channels in the transformer's input."""
    pipe = random_pipeline("tiny")
    entry = prepare(read_run_list(ati_export)[0])
    seen = []
    pipe.transformer.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["hidden_states"][:, 16:].clone()), with_kwargs=True)
    options = GenerationOptions(steps=1, max_area=48 * 80, guidance_scale=1.0)
    moved = entry.condition.clone()
    moved[1:, :, 1:3] += 0.3
    for tracks in (entry.condition, entry.condition, moved):
        pipe.generate(entry.image, "w1", tracks, options)
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[0], seen[2])


# --------------------------------------------------------------------------- weights


ORIGINAL_NAMES = [  # diffusers' name -> Wan's original (the layout ATI's shards use)
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"), ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"), ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"), ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"), ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"), ("attn1", "self_attn"), ("attn2", "cross_attn"),
    (".to_out.0.", ".o."), (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."), (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."), (".norm_added_k.", ".norm_k_img."), ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"),
    ("proj_out", "head.head"), (".norm2.", ".norm__3."), (".norm3.", ".norm2."), (".norm__3.", ".norm3."),
]


def original_layout(state: dict) -> dict:
    out = {}
    for key, value in state.items():
        new = key
        for diffusers_name, original in ORIGINAL_NAMES:
            new = new.replace(diffusers_name, original)
        new = "head.modulation" if new == "scale_shift_table" else new.replace("scale_shift_table", "modulation")
        out[new] = value.clone()
    return out


def test_original_layout_shards_convert(tmp_path):
    reference = random_pipeline("tiny", seed=1).transformer
    reference.save_config(tmp_path / "config")
    original = original_layout(reference.state_dict())
    assert any(k.endswith(".self_attn.q.weight") for k in original)
    keys = sorted(original)
    save_file({k: original[k].contiguous() for k in keys[: len(keys) // 2]}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({k: original[k].contiguous() for k in keys[len(keys) // 2 :]}, str(tmp_path / "model-00002-of-00002.safetensors"))
    loaded = load_transformer(tmp_path, tmp_path / "config", torch.float32)
    for name, value in reference.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_unknown_keys_in_weights_are_listed(tmp_path):
    reference = random_pipeline("tiny", seed=1).transformer
    reference.save_config(tmp_path / "config")
    state = dict(reference.state_dict())
    state["blocks.0.attn1.lora_A.weight"] = torch.zeros(2, 2)
    del state["proj_out.bias"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(TracefieldError, match=r"1 missing \[proj_out.bias\], 1 unexpected \[blocks.0.attn1.lora_A.weight\]"):
        load_transformer(tmp_path / "w.safetensors", tmp_path / "config", torch.float32)
    assert "proj_out.weight" in read_transformer_state(tmp_path / "w.safetensors")


def test_download_offline_says_where_files_go(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    assert main(["download", "--generator", "--dest", str(tmp_path)]) == 2
    line = [l for l in capsys.readouterr().err.splitlines() if l.startswith("error: ")][0]
    assert "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers" in line and str(tmp_path / "generator" / "ati") in line


# --------------------------------------------------------------------------- bad input


def write_tracks(path, array):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, array=array.astype(np.float32))
    torch.save(buffer.getvalue(), path)


def run_list(tmp_path, array=None, image_size=(96, 160)):
    from PIL import Image

    Image.fromarray(np.zeros((*image_size, 3), np.uint8)).save(tmp_path / "frame.png")
    if array is not None:
        write_tracks(tmp_path / "t.pth", array)
    (tmp_path / "run.yaml").write_text("- {image: frame.png, text: hello, track: t.pth}\n")
    return read_run_list(tmp_path / "run.yaml")[0]


def good_tracks(n=3) -> np.ndarray:
    array = np.zeros((n, 121, 1, 3))
    array[..., 0] = 40 * 8
    array[..., 1] = 30 * 8
    array[..., 2] = 8
    return array


def test_bad_inputs(tmp_path):
    with pytest.raises(TracefieldError, match="track file not found"):
        prepare(run_list(tmp_path))
    with pytest.raises(TracefieldError, match="holds no tracks"):
        prepare(run_list(tmp_path, np.zeros((0, 121, 1, 3))))
    hidden = good_tracks()
    hidden[1, 0, 0, 2] = 0
    with pytest.raises(TracefieldError, match="1 of 3 tracks are not visible on the first frame"):
        prepare(run_list(tmp_path, hidden))
    far = good_tracks()
    far[:, :, 0, 0] = 1900 * 8
    with pytest.raises(TracefieldError, match="made for another image size"):
        prepare(run_list(tmp_path, far))
    assert prepare(run_list(tmp_path, good_tracks())).condition.shape == (81, 3, 4)
