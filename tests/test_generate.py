"""The ATI generator: ATI's reference case stage by stage, the published weight layouts through the CLI,
the tracks that reach the transformer, and bad input."""

from __future__ import annotations

import io
import json
import shutil

import imageio.v2 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from tracefield.cli import main
from tracefield.export import ExportOptions, run_export
from tracefield.export.formats.ati import read_ati_array
from tracefield.export.selection import SelectionOptions
from tracefield.export.wan_sizes import aspect_bucket
from tracefield.generate.layouts import ati_config, original_transformer_shapes, write_layouts
from tracefield.generate.motion_patch import patch_motion
from tracefield.generate.pipeline import GenerationOptions, to_uint8
from tracefield.generate.run import prepare, read_run_list
from tracefield.generate.weights import ATI_DIR, WAN_DIR, load_pipeline

from ati_reference import CASE_FILE, read_case, stage_error
from conftest import SHARED, require_shared
from scene import make_scene

TOLERANCE = 1e-4  # the reference case's gate: max|ours - ref| / max|ref| per stage
TINY_AREA = 48 * 80


# --------------------------------------------------------------------------- ATI's motion patch and sizes


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
    assert aspect_bucket(100, 96, 2500) == (48, 48)  # the reference case's


# --------------------------------------------------------------------------- ATI's reference case


@pytest.fixture(scope="module")
def case():
    return read_case(require_shared(SHARED / CASE_FILE))


@pytest.fixture(scope="module")
def case_run(case, tmp_path_factory):
    """The reference case run once through our pipeline (weights from published-layout files), every stage kept."""
    pipe = case.pipeline(tmp_path_factory.mktemp("case"))
    stages: dict[str, torch.Tensor] = {}
    image, tracks = case.tensors["image"].numpy(), case.tensors["tracks"]
    pipe.generate(image, case.settings["prompt"], tracks, case.options(), on_stage=lambda n, t: stages.__setitem__(n, t.clone()), progress=False)
    return pipe, stages


def test_reference_case_inputs_are_exact(case, case_run):
    """Resize, CLIP input, noise, sigmas and timesteps: ATI's arithmetic, bit for bit."""
    _, stages = case_run
    for name in ("resized", "clip_pixels", "noise", "sigmas", "timesteps"):
        assert torch.equal(stages[name].cpu(), case.tensors[name]), name
    assert stage_error(stages["y_before_patch"], case.tensors["y_before_patch"]) <= TOLERANCE


def test_reference_case_every_stage_within_tolerance(case, case_run):
    """y (after the motion patch), the latents after every step with guidance, and the decoded video."""
    _, stages = case_run
    errors = {"y": stage_error(stages["y"], case.tensors["y"])}
    for i in range(case.settings["steps"]):
        errors[f"latents.{i}"] = stage_error(stages[f"latents.{i}"], case.tensors["latents"][i])
    errors["video"] = stage_error(stages["video"], case.tensors["video"])
    assert max(errors.values()) <= TOLERANCE, errors
    assert set(errors) == {"y", "video", *(f"latents.{i}" for i in range(5))}  # no step missing
    frames = to_uint8(stages["video"])  # ATI truncates; a rounding pipeline would be off by 1 in half the pixels
    off = np.abs(frames.astype(int) - case.tensors["video_uint8"].numpy().astype(int))
    assert off.max() <= 1 and off.mean() < 0.01, (off.max(), off.mean())


def test_defaults_are_atis(case):
    """ATI's generate.py defaults: its I2V negative prompt, 40 UniPC steps, shift 5.0 at every size, guidance 5.0, 81 frames, 480p."""
    options = GenerationOptions()
    assert options.negative_prompt == case.metadata["negative_prompt"]
    assert (options.steps, options.solver, options.shift, options.guidance_scale, options.frames) == (40, "unipc", 5.0, 5.0, 81)
    assert options.max_area == 480 * 832 and options.noise_device is None


def test_reference_case_guidance_branches_one_by_one(case, case_run):
    """The unbatched branches give ATI's step-0 predictions too (batching is only a speed choice)."""
    pipe, stages = case_run
    contexts = pipe.encode_text([case.settings["prompt"], case.metadata["negative_prompt"]])
    clip = pipe.encode_image(stages["clip_pixels"])
    t = stages["timesteps"][0]
    for batch in (False, True):
        cond, uncond = pipe._predict(case.tensors["noise"], case.tensors["y"], contexts, clip, t, batch)
        assert stage_error(cond, case.tensors["pred_cond_0"]) <= TOLERANCE
        assert stage_error(uncond, case.tensors["pred_uncond_0"]) <= TOLERANCE


def test_layout_writer_knows_atis_keys(case):
    """Our writer's original-layout keys and shapes are ATI's WanModel's, in its order."""
    spec = [(key, tuple(shape)) for key, shape in json.loads(case.metadata["transformer_spec"])]
    assert original_transformer_shapes(json.loads(case.metadata["transformer"])) == spec


# --------------------------------------------------------------------------- the published layouts, through the CLI


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """Tiny random weights in the layouts `tracefield download --generator` leaves (as files)."""
    root = tmp_path_factory.mktemp("generator")
    write_layouts(root, "tiny", seed=3)
    return root


@pytest.fixture(scope="module")
def ati_export(tmp_path_factory):
    """An ATI run list exported from the synthetic test scene (the real export -> generate path)."""
    out = tmp_path_factory.mktemp("ati")
    run_export(make_scene().field, ExportOptions(format="ati", output=out, name="card", prompt="w1 w2",
                                                 selection=SelectionOptions(per_object=4, background=2, min_object_area=20)))
    return out / "card.yaml"


def generate(run_list, out, layouts, *extra) -> int:
    return main(["generate", str(run_list), "-o", str(out), "--model-dir", str(layouts / WAN_DIR), "--transformer", str(layouts / ATI_DIR),
                 "--steps", "2", "--max-area", str(TINY_AREA), "--device", "cpu", "-q", *extra])


def test_published_layout_files(layouts):
    ati = layouts / ATI_DIR
    names = sorted(p.name for p in ati.iterdir())
    assert names == ["config.json", "diffusion_pytorch_model-00001-of-00002.safetensors",
                     "diffusion_pytorch_model-00002-of-00002.safetensors", "diffusion_pytorch_model.safetensors.index.json"]
    index = json.loads((ati / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert any(k.endswith(".self_attn.q.weight") for k in index["weight_map"])  # Wan's original names, as ATI ships them
    wan = layouts / WAN_DIR
    for sub in ("tokenizer", "text_encoder", "image_encoder", "vae", "scheduler", "transformer"):
        assert (wan / sub).is_dir(), sub
    assert not list((wan / "transformer").glob("*.safetensors"))  # download skips the base transformer's weights


def test_nothing_left_on_meta(layouts):
    pipe = load_pipeline(layouts / WAN_DIR, layouts / ATI_DIR, None, torch.device("cpu"))
    for name, module in (("transformer", pipe.transformer), ("vae", pipe.vae), ("text", pipe.text_encoder), ("image", pipe.image_encoder)):
        for key, tensor in [*module.named_parameters(), *module.named_buffers()]:
            assert tensor.device.type == "cpu", f"{name}.{key} on {tensor.device}"
    rope = pipe.transformer.rope.freqs_cos
    assert torch.isfinite(rope).all() and rope.abs().max() > 0.5  # computed, not left empty


def test_export_then_generate_on_published_layouts(ati_export, layouts, tmp_path):
    assert generate(ati_export, tmp_path / "videos", layouts) == 0
    height, width = aspect_bucket(128, 72, TINY_AREA)  # the scene's frames are 128x72
    video = iio.mimread(tmp_path / "videos" / "card.mp4")
    assert len(video) == 81 and video[0].shape == (height, width, 3)
    assert len(iio.mimread(tmp_path / "videos" / "card_tracks.mp4")) == 81
    assert iio.imread(tmp_path / "videos" / "card_tracks.png").shape == (height, width, 3)


def test_random_weights_flag_goes_through_the_same_loader(ati_export, tmp_path):
    assert main(["generate", str(ati_export), "-o", str(tmp_path), "--random-weights", "tiny", "--steps", "1", "--frames", "21",
                 "--solver", "dpm++", "--max-area", str(TINY_AREA), "--device", "cpu", "-q"]) == 0
    assert len(iio.mimread(tmp_path / "card.mp4")) == 21


def test_a_list_of_entries_loads_the_models_once(ati_export, layouts, tmp_path, monkeypatch):
    import tracefield.generate.weights as weights

    run_list = tmp_path / "two.yaml"
    entry = read_run_list(ati_export)[0]
    run_list.write_text(f"- {{image: {entry.image}, text: one, track: {entry.track}}}\n- {{image: {entry.image}, text: two, track: {entry.track}}}\n")
    loads = []
    original = weights.load_transformer
    monkeypatch.setattr(weights, "load_transformer", lambda *a, **k: loads.append(1) or original(*a, **k))
    assert generate(run_list, tmp_path / "out", layouts) == 0
    assert loads == [1] and {p.name for p in (tmp_path / "out").glob("*.mp4")} >= {"card.mp4", "card_1.mp4"}


def test_random_seed_is_logged_and_repeats(ati_export, layouts, tmp_path, capsys):
    assert generate(ati_export, tmp_path / "a", layouts, "--seed", "-1", "--steps", "1") == 0
    line = next(line for line in capsys.readouterr().err.splitlines() if "random seed" in line)
    seed = int(line.split("random seed ")[1].split()[0])
    assert generate(ati_export, tmp_path / "b", layouts, "--seed", str(seed), "--steps", "1") == 0
    assert generate(ati_export, tmp_path / "c", layouts, "--seed", str(seed + 1), "--steps", "1") == 0
    a, b, c = (np.stack(iio.mimread(tmp_path / d / "card.mp4")) for d in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# --------------------------------------------------------------------------- what reaches the transformer


def test_atis_example_tracks_reach_the_transformer_as_atis_reader_and_patch_make_them(layouts, tmp_path):
    """ATI's own track file: our run list reader gives exactly ATI's reader output for the image's size, and the
    transformer's condition channels are ATI's motion patch of it (a W/H swap or a lost frame fails here)."""
    expected = np.load(require_shared(SHARED / "vectors" / "ati" / "sea.expected.npz"))
    width, height = int(expected["width"]), int(expected["height"])  # 1600x900: not square, so a swap shows
    shutil.copy(SHARED / "vectors" / "ati" / "sea.pth", tmp_path / "sea.pth")
    Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(tmp_path / "sea.png")
    (tmp_path / "run.yaml").write_text("- {image: sea.png, text: w1, track: sea.pth}\n")
    entry = prepare(read_run_list(tmp_path / "run.yaml")[0])
    np.testing.assert_allclose(entry.condition.numpy(), expected["tracks"], atol=1e-6)

    pipe = load_pipeline(layouts / WAN_DIR, layouts / ATI_DIR, None, torch.device("cpu"))
    seen, stages = [], {}
    pipe.transformer.register_forward_pre_hook(lambda m, a, k: seen.append(k["hidden_states"][0, 16:].clone()), with_kwargs=True)
    options = GenerationOptions(steps=1, max_area=TINY_AREA * 4, batch_guidance=False)
    pipe.generate(entry.image, "w1", entry.condition, options, on_stage=lambda n, t: stages.__setitem__(n, t), progress=False)
    independent = patch_motion(torch.from_numpy(expected["tracks"])[None], stages["y_before_patch"])
    assert len(seen) == 2 and all(torch.allclose(s, independent, atol=1e-6) for s in seen)
    assert not torch.allclose(independent, stages["y_before_patch"])  # the tracks did change the condition


# --------------------------------------------------------------------------- bad input


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


@pytest.fixture
def broken_layouts(layouts, tmp_path):
    copy = tmp_path / "generator"
    shutil.copytree(layouts, copy)
    return copy


def test_missing_shard_names_the_file(ati_export, broken_layouts, tmp_path, capsys):
    (broken_layouts / ATI_DIR / "diffusion_pytorch_model-00002-of-00002.safetensors").unlink()
    assert generate(ati_export, tmp_path / "v", broken_layouts) == 2
    line = error_line(capsys)
    assert "diffusion_pytorch_model-00002-of-00002.safetensors: shard missing" in line and "download" in line
    assert not (tmp_path / "v").exists()


def test_index_that_does_not_match_its_shards(ati_export, broken_layouts, tmp_path, capsys):
    index = broken_layouts / ATI_DIR / "diffusion_pytorch_model.safetensors.index.json"
    data = json.loads(index.read_text())
    data["weight_map"] = {k: "diffusion_pytorch_model-00001-of-00002.safetensors" for k in data["weight_map"]}
    index.write_text(json.dumps(data))
    assert generate(ati_export, tmp_path / "v", broken_layouts) == 2
    line = error_line(capsys)
    assert "diffusion_pytorch_model-00001-of-00002.safetensors: the index lists" in line and "belongs to other weights" in line
    index.write_text("{not json")
    assert generate(ati_export, tmp_path / "v", broken_layouts) == 2
    assert "not a safetensors index" in error_line(capsys)


def test_transformer_of_another_size(ati_export, broken_layouts, tmp_path, capsys):
    config = ati_config("tiny") | {"num_layers": 3}
    (broken_layouts / ATI_DIR / "config.json").write_text(json.dumps(config))
    assert generate(ati_export, tmp_path / "v", broken_layouts) == 2
    line = error_line(capsys)
    assert str(broken_layouts / ATI_DIR) in line and "3 layers" in line and "missing [blocks.2." in line


def test_tracks_made_for_another_image_size(tmp_path, capsys, layouts):
    Image.fromarray(np.zeros((96, 160, 3), np.uint8)).save(tmp_path / "frame.png")
    array = np.zeros((3, 121, 1, 3))
    array[..., 0], array[..., 1], array[..., 2] = 1900 * 8, 30 * 8, 8
    buffer = io.BytesIO()
    np.savez_compressed(buffer, array=array.astype(np.float32))
    torch.save(buffer.getvalue(), tmp_path / "t.pth")
    (tmp_path / "run.yaml").write_text("- {image: frame.png, text: hello, track: t.pth}\n")
    assert generate(tmp_path / "run.yaml", tmp_path / "v", layouts) == 2
    line = error_line(capsys)
    assert "t.pth" in line and "160x96" in line and "another image size" in line


def test_empty_run_list(tmp_path, capsys, layouts):
    (tmp_path / "run.yaml").write_text("[]\n")
    assert generate(tmp_path / "run.yaml", tmp_path / "v", layouts) == 2
    assert "run.yaml: expected a non-empty list" in error_line(capsys)


def test_out_of_memory_is_one_line(ati_export, layouts, tmp_path, capsys, monkeypatch):
    from tracefield.generate.pipeline import ATIPipeline

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(ATIPipeline, "generate", oom)
    assert generate(ati_export, tmp_path / "v", layouts) == 2
    line = error_line(capsys)
    assert "card.pth: out of GPU memory" in line and "--offload" in line


def test_bad_frame_count(ati_export, layouts, tmp_path, capsys):
    assert generate(ati_export, tmp_path / "v", layouts, "--frames", "80") == 2
    assert "--frames 80: must be 4n + 1" in error_line(capsys)


def test_download_offline_says_where_files_go(tmp_path, offline_hub, capsys):
    assert main(["download", "--generator", "--dest", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers" in line and str(tmp_path / "generator" / "ati") in line


def test_track_file_reader_refuses_pickled_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    from tracefield.errors import TracefieldError

    with pytest.raises(TracefieldError, match="not an ATI track file"):
        read_ati_array(tmp_path / "evil.pth")


# --------------------------------------------------------------------------- on CUDA (make test-gpu)


def _latents(pipe, entry, options) -> torch.Tensor:
    conditions = pipe.prepare(entry.image, "w1 w2", entry.condition, options)
    return pipe.denoise(conditions, options, progress=False).cpu()


@pytest.mark.gpu
def test_cuda_ati_precisions_stay_close_to_float32(layouts, ati_export):
    """ATI's precisions (bf16 autocast, float32 residual stream, time embedding and head) against float32 on CUDA."""
    entry = prepare(read_run_list(ati_export)[0])
    options = GenerationOptions(steps=3, max_area=TINY_AREA * 4, noise_device="cpu")
    cuda = torch.device("cuda")
    exact = _latents(load_pipeline(layouts / WAN_DIR, layouts / ATI_DIR, None, cuda, "float32"), entry, options)
    pipe = load_pipeline(layouts / WAN_DIR, layouts / ATI_DIR, None, cuda, "auto")
    assert pipe.transformer.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16
    assert pipe.transformer.proj_out.weight.dtype == torch.float32 and pipe.vae.dtype == torch.float32
    fast = _latents(pipe, entry, options)
    error = float((fast - exact).abs().max() / exact.abs().max())
    assert 0 < error < 2e-2, error  # bf16 rounding, not a different function


@pytest.mark.gpu
def test_cuda_offload_modes_compute_the_same(layouts, ati_export):
    entry = prepare(read_run_list(ati_export)[0])
    options = GenerationOptions(steps=2, max_area=TINY_AREA * 4)
    cuda = torch.device("cuda")
    plain = _latents(load_pipeline(layouts / WAN_DIR, layouts / ATI_DIR, None, cuda), entry, options)
    for mode in ("model", "blocks"):
        pipe = load_pipeline(layouts / WAN_DIR, layouts / ATI_DIR, None, cuda, offload=mode)
        assert pipe.text_encoder.device.type == "cpu"  # waits on the CPU until used
        torch.testing.assert_close(_latents(pipe, entry, options), plain, rtol=0, atol=1e-6, msg=mode)


@pytest.mark.gpu
def test_cuda_noise_is_drawn_where_ati_draws_it(layouts, ati_export):
    """Same seed: the CUDA generator's noise (ATI's default on a GPU) differs from the CPU's; --noise-device cpu gives the CPU's."""
    entry = prepare(read_run_list(ati_export)[0])
    pipe = load_pipeline(layouts / WAN_DIR, layouts / ATI_DIR, None, torch.device("cuda"))
    noise = {}
    for where in (None, "cpu"):
        options = GenerationOptions(steps=1, max_area=TINY_AREA, seed=5, noise_device=where)
        noise[where] = pipe.prepare(entry.image, "w1", entry.condition, options).noise.cpu()
    expected_gpu = torch.randn(noise[None].shape, generator=torch.Generator("cuda").manual_seed(5), device="cuda").cpu()
    assert torch.equal(noise[None], expected_gpu) and not torch.equal(noise[None], noise["cpu"])
