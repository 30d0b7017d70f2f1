"""The generator's joins, each checked against a truth outside our own code: the published Wan2.1 I2V 14B
configs, transformers' own UMT5 and CLIP, the weights as the files hold them, ATI's precisions, ATI's
track reader output and the pixel geometry of the drawn overlay. Fast: no denoising loop runs here."""

from __future__ import annotations

import io
import json
import math
import shutil

import imageio.v2 as iio
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tracefield.errors import TracefieldError
from tracefield.generate.layouts import ati_config, write_ati_transformer, write_wan_repo
from tracefield.generate.pipeline import ATIPipeline, GenerationOptions, clean_prompt, match_ati_precision, to_uint8, transformer_autocast
from tracefield.generate.run import PreparedItem, RunItem, generate_all, prepare, read_run_list
from tracefield.generate.weights import diffusers_transformer_config, load_transformer, transformer_config

from conftest import SHARED, require_shared

# Wan-AI/Wan2.1-I2V-14B-480P's config.json: the WanModel arguments as published (ATI's transformer is this
# model fine-tuned); every argument it leaves out takes WanModel's default (text_dim 4096, qk_norm and
# cross_attn_norm on, global attention, patch 1x2x2).
WAN_I2V_14B_CONFIG = {"_class_name": "WanModel", "_diffusers_version": "0.30.0", "dim": 5120, "eps": 1e-06, "ffn_dim": 13824,
                      "freq_dim": 256, "in_dim": 36, "model_type": "i2v", "num_heads": 40, "num_layers": 40, "out_dim": 16,
                      "text_len": 512}
# Wan-AI/Wan2.1-I2V-14B-480P-Diffusers transformer/config.json, as published (diffusers' own conversion of it).
DIFFUSERS_I2V_14B_TRANSFORMER = {"added_kv_proj_dim": 5120, "attention_head_dim": 128, "cross_attn_norm": True, "eps": 1e-06,
                                 "ffn_dim": 13824, "freq_dim": 256, "image_dim": 1280, "in_channels": 36, "num_attention_heads": 40,
                                 "num_layers": 40, "out_channels": 16, "patch_size": [1, 2, 2], "pos_embed_seq_len": None,
                                 "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 1024, "text_dim": 4096}
# The same repo's image_encoder/config.json (CLIP ViT-H/14): the width the transformer reads is hidden_size,
# not the projection's.
CLIP_VIT_H_14 = {"hidden_size": 1280, "intermediate_size": 5120, "projection_dim": 1024, "num_hidden_layers": 32,
                 "num_attention_heads": 16, "image_size": 224, "patch_size": 14}

# A tiny transformer whose widths all differ (text 24, time 16, image 40, model 32), so a crossed width shows.
DISTINCT = dict(ati_config("tiny"), text_dim=24, freq_dim=16, num_layers=1)
IMAGE_WIDTH = 40


# --------------------------------------------------------------------------- the transformer's config and weights


def test_atis_config_becomes_the_published_diffusers_transformer_config(tmp_path):
    """Wan's published 14B WanModel config.json must become exactly the published diffusers transformer config:
    a crossed text/time width, a wrong default or the image width taken for the added K/V width builds a
    transformer that refuses ATI's 14B weights (or, for a default, silently differs from ATI's)."""
    expected = {k: v for k, v in DIFFUSERS_I2V_14B_TRANSFORMER.items() if v is not None}  # diffusers' default for the rest
    assert diffusers_transformer_config(WAN_I2V_14B_CONFIG, CLIP_VIT_H_14["hidden_size"]) == expected
    # As read from the two downloaded repositories side by side.
    (tmp_path / "ati").mkdir()
    (tmp_path / "ati" / "config.json").write_text(json.dumps(WAN_I2V_14B_CONFIG))
    (tmp_path / "wan" / "image_encoder").mkdir(parents=True)
    (tmp_path / "wan" / "image_encoder" / "config.json").write_text(json.dumps(CLIP_VIT_H_14))
    assert transformer_config(tmp_path / "ati", tmp_path / "wan") == expected


@pytest.fixture(scope="module")
def distinct_repos(tmp_path_factory):
    """ATI's layout (original keys, two shards and their index) of a transformer with all-different widths,
    beside a Wan repo that holds only its image encoder's config."""
    root = tmp_path_factory.mktemp("distinct")
    write_ati_transformer(root / "ati", DISTINCT, seed=11, image_dim=IMAGE_WIDTH, shards=2)
    (root / "wan" / "image_encoder").mkdir(parents=True)
    (root / "wan" / "image_encoder" / "config.json").write_text(json.dumps({"hidden_size": IMAGE_WIDTH}))
    return root


def file_tensors(ati_dir) -> dict[str, torch.Tensor]:
    """Every tensor of the shards, renamed by diffusers' own converter (the truth for the key mapping)."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    state = {}
    for path in sorted(ati_dir.glob("*.safetensors")):
        state.update(load_file(str(path)))
    return convert_wan_transformer_to_diffusers(state)


def test_a_transformer_of_distinct_widths_loads_the_files_values(distinct_repos):
    """Every tensor lands where diffusers' converter puts it, unchanged, in a model of the config's widths
    (time embedding reads freq_dim 16, text embedding text_dim 24, the image embedder 40)."""
    model = load_transformer(distinct_repos / "ati", distinct_repos / "wan", torch.float32)
    embedder = model.condition_embedder
    assert embedder.time_embedder.linear_1.in_features == 16 and embedder.text_embedder.linear_1.in_features == 24
    assert embedder.image_embedder.norm1.normalized_shape == (IMAGE_WIDTH,)
    state = model.state_dict()
    truth = file_tensors(distinct_repos / "ati")
    assert set(state) == set(truth)
    for key, value in truth.items():
        assert torch.equal(state[key], value), key


# ATI keeps float32 weights and runs its WanModel under bfloat16 autocast; autocast leaves these in float32 (time
# embedding and projection, the output head: ATI runs them with autocast off; norms, biases and modulation tables
# are never cast), so a bfloat16 load must keep them float32 and bit-equal to the file.
KEPT_FLOAT32 = ["condition_embedder.time_embedder.linear_1.weight", "condition_embedder.time_embedder.linear_2.weight",
                "condition_embedder.time_proj.weight", "condition_embedder.time_proj.bias", "proj_out.weight", "proj_out.bias",
                "scale_shift_table", "blocks.0.scale_shift_table", "blocks.0.norm2.weight", "blocks.0.attn1.norm_q.weight",
                "blocks.0.attn2.norm_added_k.weight", "blocks.0.attn1.to_q.bias", "blocks.0.ffn.net.0.proj.bias",
                "condition_embedder.image_embedder.norm1.weight", "patch_embedding.bias"]
# Matrix products autocast runs in bfloat16: their weights are stored so (what autocast would round them to).
IN_BFLOAT16 = ["patch_embedding.weight", "blocks.0.attn1.to_q.weight", "blocks.0.attn2.add_k_proj.weight",
               "blocks.0.ffn.net.0.proj.weight", "condition_embedder.text_embedder.linear_1.weight",
               "condition_embedder.image_embedder.ff.net.0.proj.weight"]


@pytest.fixture(scope="module")
def bf16_transformer(distinct_repos):
    return load_transformer(distinct_repos / "ati", distinct_repos / "wan", torch.bfloat16)


def test_a_bfloat16_load_keeps_atis_float32_parts_exact(distinct_repos, bf16_transformer):
    """ATI's float32 parts stay float32 with the file's exact values; matrices are the file's values in bfloat16."""
    state, truth = bf16_transformer.state_dict(), file_tensors(distinct_repos / "ati")
    for key in KEPT_FLOAT32:
        assert state[key].dtype == torch.float32 and torch.equal(state[key], truth[key]), key
    for key in IN_BFLOAT16:
        assert state[key].dtype == torch.bfloat16 and torch.equal(state[key], truth[key].bfloat16()), key


def tiny_inputs(generator: torch.Generator) -> dict[str, torch.Tensor]:
    return dict(hidden_states=torch.randn(1, 36, 2, 4, 6, generator=generator), timestep=torch.tensor([500]),
                encoder_hidden_states=torch.randn(1, 7, DISTINCT["text_dim"], generator=generator),
                encoder_hidden_states_image=torch.randn(1, 5, IMAGE_WIDTH, generator=generator))


def test_under_autocast_the_residual_stream_time_embedding_and_head_run_in_float32(bf16_transformer):
    """ATI's WanModel under bfloat16 autocast: the blocks' matrix products in bfloat16, but the residual stream
    float32 (its additions take float32 modulation inside a float32 autocast, so a block's output is float32),
    and the time embedding and projection and the output head float32."""
    model = match_ati_precision(bf16_transformer)
    seen: dict[str, torch.dtype] = {}

    def record(name):
        return lambda module, args, output: seen.__setitem__(name, output.dtype)

    hooks = [model.condition_embedder.time_embedder.register_forward_hook(record("time embedding")),
             model.condition_embedder.time_proj.register_forward_hook(record("time projection")),
             model.proj_out.register_forward_hook(record("head")),
             model.blocks[0].attn1.to_q.register_forward_hook(record("block matmul")),
             model.blocks[0].register_forward_hook(record("residual stream"))]
    try:
        with torch.no_grad(), transformer_autocast(model, torch.device("cpu")):
            out = model(**tiny_inputs(torch.Generator().manual_seed(0)), return_dict=False)[0]
    finally:
        for hook in hooks:
            hook.remove()
    assert seen == {"time embedding": torch.float32, "time projection": torch.float32, "head": torch.float32,
                    "block matmul": torch.bfloat16, "residual stream": torch.float32}, seen
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


# --------------------------------------------------------------------------- the encoders, against transformers' own models


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory, distinct_repos):
    """The tiny Wan repo's tokenizer, UMT5 and CLIP as published files, read back by transformers, in our pipeline."""
    from diffusers import AutoencoderKLWan
    from transformers import AutoTokenizer, CLIPVisionModel, UMT5EncoderModel

    wan = write_wan_repo(tmp_path_factory.mktemp("wan") / "wan", "tiny", seed=4)
    return ATIPipeline(tokenizer=AutoTokenizer.from_pretrained(str(wan / "tokenizer")),
                       text_encoder=UMT5EncoderModel.from_pretrained(str(wan / "text_encoder")).eval(),
                       image_encoder=CLIPVisionModel.from_pretrained(str(wan / "image_encoder")).eval(),
                       vae=AutoencoderKLWan.from_pretrained(str(wan / "vae")).eval(),
                       transformer=load_transformer(distinct_repos / "ati", distinct_repos / "wan", torch.float32))


def test_text_states_are_umt5_on_the_prompt_alone_then_zeros(tiny_pipe):
    """ATI cuts UMT5's states at each prompt's length and zero-pads to 512: the rows of a prompt are UMT5's
    on the unpadded tokens (nothing leaks from the padding), and every row after them is exactly 0."""
    prompts = ["w1 w2 w3 w4 w5", "w7 w8"]  # in one batch, as the prompt and the negative prompt go
    states = tiny_pipe.encode_text(prompts)
    assert states.shape == (2, 512, 32) and states.dtype == torch.float32
    for row, prompt in zip(states, prompts):
        ids = tiny_pipe.tokenizer(prompt, add_special_tokens=True, return_tensors="pt").input_ids
        n = ids.shape[1]
        assert n >= 2
        with torch.no_grad():
            alone = tiny_pipe.text_encoder(ids).last_hidden_state[0]
        torch.testing.assert_close(row[:n], alone, atol=1e-5, rtol=1e-5)
        assert torch.count_nonzero(row[n:]) == 0
        assert row[:n].abs().min() > 0  # the prompt's rows are states, not zeros


def test_image_states_are_clips_penultimate_layer(tiny_pipe):
    """Wan's I2V reads CLIP's states after all but its last block (use_31_block): the same weights in a
    CLIPVisionModel one layer shorter give them as its last hidden state."""
    from transformers import CLIPVisionModel

    clip = tiny_pipe.image_encoder
    config = clip.config.to_dict() | {"num_hidden_layers": clip.config.num_hidden_layers - 1}
    shorter = CLIPVisionModel(type(clip.config).from_dict(config)).eval()
    result = shorter.load_state_dict(clip.state_dict(), strict=False)
    assert not result.missing_keys and all(".layers.1." in k for k in result.unexpected_keys)
    pixels = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        truth = shorter(pixel_values=pixels).last_hidden_state
        last = clip(pixel_values=pixels).last_hidden_state
    states = tiny_pipe.encode_image(pixels)
    torch.testing.assert_close(states, truth, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(states, last, atol=1e-3)  # the two layers really differ


def test_latents_are_normalised_both_ways_as_diffusers_wan_pipeline_does(tiny_pipe):
    """diffusers' WanImageToVideoPipeline: the condition's latents are ``(mode - mean) * (1 / std)`` of the VAE's
    published statistics, after 4 mask channels that are 1 on the first latent frame only; decoding takes
    ``latents / (1 / std) + mean``. Here the VAE's own encode/decode on the same tensors is the reference."""
    vae, g = tiny_pipe.vae, torch.Generator().manual_seed(5)
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    assert mean.abs().max() > 0.1 and (inv_std - 1).abs().max() > 0.1  # the published statistics, not 0 and 1
    frame = torch.rand(3, 16, 24, generator=g) * 2 - 1
    y = tiny_pipe.image_condition(frame, 5)
    with torch.no_grad():
        video = torch.cat([frame[:, None], torch.zeros(3, 4, 16, 24)], dim=1)[None]  # the image, then black frames
        truth = ((vae.encode(video).latent_dist.mode() - mean) * inv_std)[0]
    assert y.shape == (20, 2, 2, 3)
    assert torch.equal(y[:4, 0], torch.ones(4, 2, 3)) and torch.count_nonzero(y[:4, 1:]) == 0
    torch.testing.assert_close(y[4:], truth, atol=1e-5, rtol=1e-5)
    latent = torch.randn(16, 2, 2, 3, generator=g)
    with torch.no_grad():
        expected = vae.decode(latent[None] / inv_std + mean).sample[0].clamp(-1, 1)
    torch.testing.assert_close(tiny_pipe.decode(latent), expected, atol=1e-5, rtol=1e-5)


def test_prompts_are_cleaned_as_wans_tokenizer_wrapper_cleans_them():
    """Wan's basic_clean (ftfy, HTML entities unescaped twice) and whitespace_clean, worked out by hand."""
    assert clean_prompt("  a boat &amp;amp; a\tduck \n\n drift ") == "a boat & a duck drift"
    # With a "<" in it ftfy leaves entities alone: Wan's two unescapes are then all that decode them.
    assert clean_prompt("a <sign> reading &amp;amp; rain") == "a <sign> reading & rain"
    assert clean_prompt("caf\u00c3\u00a9 &lt;b&gt;") == "caf\u00e9 <b>"  # ftfy repairs the mojibake


def test_frames_are_truncated_to_uint8_in_file_order():
    """ATI's cache_video: ((x + 1) / 2 * 255) truncated, clamped, laid out [F, H, W, 3]."""
    video = torch.full((3, 2, 3, 5), -1.0)  # C, F, H, W: H != W so a transposed layout shows
    levels = torch.tensor([-1.5, -1.0, 2 * 100.6 / 255 - 1, 2 * 127.99 / 255 - 1, 1.0, 1.5])
    video[0, 1, 2, :] = levels[:5]
    video[2, 0, 0, 4] = levels[5]
    frames = to_uint8(video)
    assert frames.shape == (2, 3, 5, 3) and frames.dtype == np.uint8
    assert frames[1, 2, :, 0].tolist() == [0, 0, 100, 127, 255]  # truncated, not rounded (101, 128)
    assert frames[0, 0, 4].tolist() == [0, 0, 255] and int(frames.sum()) == 100 + 127 + 255 + 255


# --------------------------------------------------------------------------- run lists: ATI's reader output at the generated frames


def pixels_of(tracks: np.ndarray, width: int, height: int) -> np.ndarray:
    """ATI's reader coordinates back to the image's pixels: ``(p - size / 2) / short * 2`` inverted."""
    return tracks[..., 1:3] * min(width, height) / 2 + np.array([width, height]) / 2


@pytest.mark.parametrize("name", ["sea", "deco"])  # landscape; portrait with hidden frames
@pytest.mark.parametrize("frames, step", [(81, 1), (21, 4), (17, 5)])
def test_generated_frames_take_atis_model_frames_evenly_first_to_last(name, frames, step, tmp_path):
    """Generated frame j takes ATI's model frame j * 80 / (frames - 1): the first and the last are ATI's first
    and last, so shorter videos still end where the tracks end. The condition is ATI's reader output there,
    and the overlay's pixels and visibility are those of the same model frames."""
    expected = np.load(require_shared(SHARED / "vectors" / "ati" / f"{name}.expected.npz"))
    width, height, tracks = int(expected["width"]), int(expected["height"]), expected["tracks"]
    shutil.copy(SHARED / "vectors" / "ati" / f"{name}.pth", tmp_path / "t.pth")
    Image.fromarray(np.zeros((height, width, 3), np.uint8)).save(tmp_path / "i.png")
    (tmp_path / "run.yaml").write_text("- {image: i.png, text: w1, track: t.pth}\n")
    entry = prepare(read_run_list(tmp_path / "run.yaml")[0], frames)
    model = tracks[::step]
    assert len(model) == frames and entry.condition.shape == (frames, *tracks.shape[1:])
    np.testing.assert_allclose(entry.condition.numpy(), model, atol=1e-6)
    visible = model[..., 3] > 0
    assert np.array_equal(entry.visible, visible) and (visible.all() if name == "sea" else 0 < visible.sum() < visible.size)
    np.testing.assert_allclose(entry.xy[visible], pixels_of(model, width, height)[visible], atol=0.01)


def write_track_file(path, starts, hidden_at_start=()) -> None:
    """An ATI track file (torch.save of npz bytes, [N, 121, 1, 3] of x, y, visible times 8) of still tracks."""
    array = np.ones((len(starts), 121, 1, 3))
    array[:, :, 0, :2] = np.asarray(starts, float)[:, None]
    array[list(hidden_at_start), 0, 0, 2] = 0
    buffer = io.BytesIO()
    np.savez_compressed(buffer, array=(array * 8).astype(np.float32))
    torch.save(buffer.getvalue(), path)


def test_tracks_may_start_on_the_images_edges_but_not_hidden(tmp_path):
    """On a 200x100 image, tracks may start anywhere in [0, 200] x [0, 100] (corner convention) and a rounding
    margin of 2% of each side beyond (4 px in x, 2 px in y); ATI's reader then gives (p - size / 2) / 50 for
    them. A track starting 10 px right of the image, or hidden on frame 0 (where ATI samples its appearance
    whatever its flag says), is refused before any weights load."""
    Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(tmp_path / "i.png")
    run = tmp_path / "run.yaml"
    run.write_text("- {image: i.png, text: w1, track: t.pth}\n")
    starts = [(0.0, 0.0), (200.0, 100.0), (203.0, -1.5), (-3.5, 101.5)]
    write_track_file(tmp_path / "t.pth", starts)
    entry = prepare(read_run_list(run)[0])
    by_hand = [[-2.0, -1.0], [2.0, 1.0], [2.06, -1.03], [-2.07, 1.03]]  # ((x - 100) / 50, (y - 50) / 50)
    np.testing.assert_allclose(entry.condition[0, :, 1:3].numpy(), by_hand, atol=1e-6)
    np.testing.assert_allclose(entry.xy[0], starts)
    write_track_file(tmp_path / "t.pth", [(100.0, 50.0), (210.0, 50.0)])
    with pytest.raises(TracefieldError, match="another image size"):
        prepare(read_run_list(run)[0])
    write_track_file(tmp_path / "t.pth", [(100.0, 50.0), (20.0, 30.0)], hidden_at_start=[1])
    with pytest.raises(TracefieldError, match="1 of 2 tracks are not visible on the first frame"):
        prepare(read_run_list(run)[0])


# --------------------------------------------------------------------------- what a run writes: the overlay's geometry


class StubPipe:
    """Stands in for the loaded pipeline: records what it is asked and returns a black video of one size."""

    parallel = None

    def __init__(self, height: int, width: int) -> None:
        self.size, self.calls = (height, width), []

    def generate(self, image, prompt, tracks, options, progress=True):
        self.calls.append((image, prompt, tracks))
        return torch.full((3, options.frames, *self.size), -1.0)


def white_centroid(frame: np.ndarray) -> np.ndarray:
    """(x, y) in OpenCV's pixel-centre units of the near-white pixels, weighted by how white they are."""
    whiteness = np.clip(frame.astype(float).min(axis=-1) - 180, 0, None)  # the turbo trail's darkest channel is <= 97
    ys, xs = np.nonzero(whiteness)
    assert len(xs), "no white mark drawn"
    w = whiteness[ys, xs]
    return np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])


def test_the_overlay_marks_each_track_where_the_video_shows_its_pixel(tmp_path):
    """A 200x100 image, a 80x48 video (neither aspect the other's): a track at image pixel (x, y) (corner
    convention, as ATI's files) is drawn at (x * 80 / 200, y * 48 / 100) in the video, i.e. at OpenCV's pixel
    centre index that minus 0.5. The still marks the start; the video marks frame k's point on frame k."""
    frames, (image_w, image_h), (video_h, video_w) = 5, (200, 100), (48, 80)
    start, end = np.array([150.0, 25.0]), np.array([60.0, 75.0])
    path = start + np.linspace(0, 1, frames)[:, None] * (end - start)  # [F, 2]
    item = RunItem("t", tmp_path / "i.png", "w1", tmp_path / "t.pth")
    condition = torch.zeros(frames, 1, 4)
    entry = PreparedItem(item, np.zeros((image_h, image_w, 3), np.uint8), condition, path[:, None, :], np.ones((frames, 1), bool))
    pipe = StubPipe(video_h, video_w)
    written = generate_all(pipe, [entry], tmp_path / "out", GenerationOptions(frames=frames), progress=False)
    assert [p.name for p in written] == ["t.mp4", "t_tracks.png", "t_tracks.mp4"]
    assert len(pipe.calls) == 1 and pipe.calls[0][1] == "w1" and pipe.calls[0][2] is condition

    def in_video(point):
        return point * np.array([video_w / image_w, video_h / image_h]) - 0.5

    still = iio.imread(tmp_path / "out" / "t_tracks.png")
    assert still.shape == (video_h, video_w, 3)
    # The start dot is white; the drawn path is coloured (turbo), so the white centroid is the start point.
    np.testing.assert_allclose(white_centroid(still), in_video(start), atol=0.15)
    video = np.stack(iio.mimread(tmp_path / "out" / "t_tracks.mp4"))
    assert video.shape == (frames, video_h, video_w, 3)
    for k in range(frames):  # the codec blurs, but the dot's centre stays within a few hundredths of a pixel
        np.testing.assert_allclose(white_centroid(video[k]), in_video(path[k]), atol=0.25)
    assert math.dist(in_video(path[0]), in_video(path[-1])) > 20  # far enough apart that a time slip shows


# --------------------------------------------------------------------------- the video's size and the run list's paths


def test_a_landscape_image_is_generated_as_a_landscape_video(tiny_pipe):
    """Wan's bucket for a 200x100 image within 128 x 64 pixels, by hand: latent rows sqrt(8192 / 2) / 8 = 8, columns
    sqrt(8192 * 2) / 8 = 16, so 64 rows by 128 columns: the conditioning frame, the condition and the noise are that
    shape (5 frames: 2 latent frames of 8 x 16 cells), not the portrait 128 x 64."""
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 100:] = 255
    stages: dict[str, tuple] = {}
    tiny_pipe.prepare(image, "w1", torch.zeros(5, 1, 4), GenerationOptions(frames=5, max_area=128 * 64),
                      on_stage=lambda name, tensor: stages.__setitem__(name, tuple(tensor.shape)))
    assert stages["resized"] == (3, 64, 128)
    assert stages["y"] == (20, 2, 8, 16) and stages["noise"] == (16, 2, 8, 16)


def test_run_list_paths_open_beside_the_list_before_the_working_folder(tmp_path, monkeypatch):
    """A relative path is the file beside the run list when there is one (our lists, copied anywhere); only a name
    found nowhere else is taken from the working folder (ATI's own lists, opened from its repository root)."""
    lists, work = tmp_path / "lists", tmp_path / "work"
    lists.mkdir()
    work.mkdir()
    for folder in (lists, work):
        Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(folder / "i.png")
        write_track_file(folder / "t.pth", [(100.0, 50.0)])
    Image.fromarray(np.zeros((100, 200, 3), np.uint8)).save(work / "only_here.png")
    (lists / "run.yaml").write_text("- {image: i.png, text: w1, track: t.pth}\n- {image: only_here.png, text: w2, track: t.pth}\n")
    monkeypatch.chdir(work)
    first, second = read_run_list(lists / "run.yaml")
    assert first.image.resolve() == (lists / "i.png").resolve() and first.track.resolve() == (lists / "t.pth").resolve()
    assert second.image.resolve() == (work / "only_here.png").resolve()
