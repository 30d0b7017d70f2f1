"""`tracefield infer` end to end on real frames, and every bad input the issue lists."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v2 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from tracefield.cli import main
from tracefield.field import TraceField
from tracefield.model.network import TraceAnything

from conftest import SCENES, TINY_NET, require_shared


def infer(inputs, out: Path, config: Path, *extra: str) -> int:
    """The CPU path (deterministic on any machine); tests marked gpu run the CUDA one."""
    return main(["infer", *map(str, inputs), "-o", str(out), "--config", str(config), "--random-weights", "-q", "--device", "cpu", *extra])


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def write_frames(folder: Path, frames: list[np.ndarray], pattern: str = "{:03d}.png") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / pattern.format(i))
    return folder


def scene_frames(name: str, count: int) -> list[np.ndarray]:
    paths = sorted(require_shared(SCENES / name).glob("*.png"))[:count]
    return [np.asarray(Image.open(p).convert("RGB")) for p in paths]


def test_help_teaches():
    run = subprocess.run([sys.executable, "-m", "tracefield", "infer", "--help"], capture_output=True, text=True)
    assert run.returncode == 0
    for words in ("a folder of scene folders", "--max-frames", "field.safetensors", "output.pt", "--overwrite", "torchrun"):
        assert words in run.stdout


def test_help_and_argument_errors_load_no_heavy_library():
    """The parser of every command is built from constants: `--help` and a mistyped option answer in a
    blink instead of after torch's and OpenCV's imports (1.3 s here, 3-5 s on a GPU image)."""
    code = ("import sys; from tracefield.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'cv2', 'matplotlib', 'diffusers', 'viser') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


def test_train_help_example_is_one_line():
    """The example used to wrap, leaving `optim.lr=1e-4` alone on a stray line."""
    run = subprocess.run([sys.executable, "-m", "tracefield", "train", "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "80"})
    lines = run.stdout.splitlines()
    assert any(line.strip() == "tracefield train --config configs/train_small.yaml --steps 2000 optim.lr=1e-4" for line in lines), run.stdout


def test_folder_of_scenes_end_to_end(tmp_path, tiny_config_file):
    """The shared scenes (30, 11 and 2 frames) through the CLI with a tiny random network."""
    out = tmp_path / "out"
    assert infer([require_shared(SCENES)], out, tiny_config_file, "--max-frames", "4") == 0
    expected = {"cabinet": (4, (384, 512)), "corgi": (2, (256, 512)), "elephant": (4, (288, 512))}
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for name, (frames, hw) in expected.items():
        field = TraceField.load(out / name)
        assert (field.num_frames, field.num_ctrl, field.hw) == (frames, 4, hw)
        assert field.model["untrained"] is True
        assert field.time_steps[0] == 0 and field.time_steps[-1] == 1
        assert ((field.times > 0) & (field.times < 1)).all()
        assert len(list((out / name / "images").glob("*.png"))) == frames
        assert len(list((out / name / "masks").glob("*.png"))) == frames
    elephant = TraceField.load(out / "elephant" / "field.safetensors")
    assert elephant.frames.indices == [0, 10, 19, 29] and elephant.frames.names[-1] == "029.png"
    original = np.asarray(Image.open(SCENES / "elephant" / "019.png").convert("RGB"))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "elephant" / "images" / "002.png")), original)
    assert not elephant.transform.rotated and elephant.transform.model_hw == (288, 512)


def test_release_output_layout(tmp_path, tiny_config_file):
    out = tmp_path / "out"
    assert infer([require_shared(SCENES / "corgi")], out, tiny_config_file, "--output-pt") == 0
    data = torch.load(out / "corgi" / "output.pt", weights_only=True)
    assert set(data) == {"preds", "views"} and len(data["preds"]) == 2
    pred, view = data["preds"][1], data["views"][1]
    assert set(pred) == {"time", "ctrl_pts3d", "ctrl_conf", "fg_mask"}  # no evaluated tracks
    assert pred["ctrl_pts3d"].shape == (4, 256, 512, 3) and pred["ctrl_conf"].shape == (4, 256, 512)
    assert pred["fg_mask"].dtype == torch.bool and pred["time"].shape == (1,)
    assert view["img"].shape == (1, 3, 256, 512) and view["time_step"] == 1.0
    field = TraceField.load(out / "corgi")
    assert field.ctrl_pts.dtype == torch.float16  # the field file stays lean
    torch.testing.assert_close(field.ctrl_pts.float(), torch.stack([p["ctrl_pts3d"] for p in data["preds"]]), rtol=2e-3, atol=1e-3)
    torch.testing.assert_close(field.ctrl_conf, torch.stack([p["ctrl_conf"] for p in data["preds"]]), rtol=1e-2, atol=0)
    mask_png = np.asarray(Image.open(out / "corgi" / "masks" / "001.png")) > 127
    np.testing.assert_array_equal(mask_png, pred["fg_mask"].numpy())
    from_release = TraceField.load(out / "corgi" / "output.pt", release_points=torch.float32)
    torch.testing.assert_close(from_release.ctrl_pts, torch.stack([p["ctrl_pts3d"] for p in data["preds"]]))
    np.testing.assert_array_equal(from_release.images.numpy(), field.images.numpy())
    # The release's file holds the network's float32 points, not the field file's float16 copy of them.
    points = pred["ctrl_pts3d"]
    assert (points.half().float() != points).float().mean() > 0.9


def test_portrait_video_maps_back_to_original_pixels(tmp_path, tiny_config_file):
    frames = [np.ascontiguousarray(np.rot90(f, k=-1)) for f in scene_frames("elephant", 6)]  # 288x512 -> portrait 512x288
    video = tmp_path / "portrait.mp4"
    iio.mimwrite(video, frames, fps=12, macro_block_size=16)
    out = tmp_path / "out"
    assert infer([video], out, tiny_config_file) == 0
    field = TraceField.load(out / "portrait")
    assert field.transform.rotated and field.transform.original_hw == (512, 288) and field.hw == (288, 512)
    assert field.frames.fps == pytest.approx(12) and field.frames.indices == list(range(6))
    # The network frame's top-left pixel is the original's top-right one.
    np.testing.assert_allclose(field.transform.to_original([0, 0]), [287, 0])
    assert np.abs(field.images[0, 0, 0].numpy().astype(int) - frames[0][0, 287].astype(int)).max() < 40


def test_image_files_and_name(tmp_path, tiny_config_file):
    shots = write_frames(tmp_path / "shots", scene_frames("cabinet", 3))
    out = tmp_path / "out"
    assert infer(sorted(shots.glob("*.png")), out, tiny_config_file, "--name", "kitchen") == 0
    assert (out / "kitchen" / "field.safetensors").is_file() and not (out / "kitchen" / "output.pt").exists()  # only with --output-pt


def test_local_head_kept_on_request(tmp_path, tiny_config_file):
    out = tmp_path / "out"
    assert infer([require_shared(SCENES / "corgi")], out, tiny_config_file, "--local-head", "--field-float32", "--output-pt") == 0
    field = TraceField.load(out / "corgi" / "field.safetensors")
    assert field.ctrl_pts.dtype == torch.float32 and field.ctrl_pts_local.shape == field.ctrl_pts.shape
    pred = torch.load(out / "corgi" / "output.pt", weights_only=True)["preds"][0]
    torch.testing.assert_close(pred["ctrl_pts3d_local"], field.ctrl_pts_local[0])
    assert not torch.equal(field.ctrl_pts_local, field.ctrl_pts)


def test_thousand_frames_are_subsampled(tmp_path, tiny_config_file):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, size=(16, 32, 3), dtype=np.uint8) for _ in range(1000)]
    folder = write_frames(tmp_path / "long", frames, "frame_{}.png")  # natural order, not 0,1,10,100
    out = tmp_path / "out"
    assert infer([folder], out, tiny_config_file, "--max-frames", "12") == 0
    field = TraceField.load(out / "long")
    assert field.num_frames == 12 and field.frames.indices[0] == 0 and field.frames.indices[-1] == 999
    assert field.frames.names[-1] == "frame_999.png"
    np.testing.assert_allclose(field.time_steps.numpy(), np.asarray(field.frames.indices) / 999, atol=1e-6)


def test_rerun_keeps_user_masks(tmp_path, tiny_config_file):
    out = tmp_path / "out"
    corgi = require_shared(SCENES / "corgi")
    assert infer([corgi], out, tiny_config_file) == 0
    user = np.zeros((256, 512), np.uint8)
    user[100:150, 200:300] = 255
    for i in range(2):
        Image.fromarray(user).save(out / "corgi" / "masks" / f"{i:03d}_user.png")
    assert infer([corgi], out, tiny_config_file, "--overwrite") == 0
    field = TraceField.load(out / "corgi")
    assert field.user_masks is not None and field.masks[1, 120, 250] and not field.masks[1, 10, 10]


# --------------------------------------------------------------------------- bad input


def corrupt_png(folder: Path) -> Path:
    write_frames(folder, scene_frames("corgi", 2))
    (folder / "002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return folder / "002.png"


def mixed_sizes(folder: Path) -> Path:
    frames = scene_frames("corgi", 2)
    write_frames(folder, [frames[0], frames[1][:200]])
    return folder / "001.png"


def one_frame(folder: Path) -> Path:
    write_frames(folder, scene_frames("corgi", 1))
    return folder / "000.png"


def only_text(folder: Path) -> Path:
    folder.mkdir()
    (folder / "notes.txt").write_text("frames went missing")
    return folder


def empty(folder: Path) -> Path:
    folder.mkdir()
    return folder


def bad_video(folder: Path) -> Path:
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    return folder / "clip.mp4"


@pytest.mark.parametrize(
    "make, words",
    [
        (empty, "empty folder"),
        (only_text, "notes.txt"),
        (corrupt_png, "cannot decode image"),
        (mixed_sizes, "all frames of a scene must have one size"),
        (one_frame, "at least 2 frames"),
        (bad_video, "cannot decode video"),
    ],
)
def test_bad_inputs_fail_in_one_line_without_outputs(tmp_path, tiny_config_file, capsys, monkeypatch, make, words):
    def never(*args, **kwargs):
        raise AssertionError("the model must not load before the inputs are checked")

    monkeypatch.setattr("tracefield.model.load_model", never)
    culprit = make(tmp_path / "scene")
    out = tmp_path / "out"
    target = culprit.parent if culprit.suffix == ".mp4" else tmp_path / "scene"
    code = infer([target], out, tiny_config_file)
    assert code == 2
    line = error_line(capsys)
    assert str(culprit) in line and words in line
    assert not out.exists() or not any(out.iterdir())


def test_checkpoint_of_another_architecture(tmp_path, tiny_config_file, capsys):
    other = {**TINY_NET, "poly_degree": 10}
    ckpt = tmp_path / "k10.pt"
    torch.save(TraceAnything(__import__("tracefield").model.load_config(other).net).state_dict(), ckpt)
    code = main(["infer", str(require_shared(SCENES / "corgi")), "-o", str(tmp_path / "out"), "--config", str(tiny_config_file), "--checkpoint", str(ckpt)])
    assert code == 2
    line = error_line(capsys)
    assert str(ckpt) in line and "shape mismatches" in line and "--config" in line
    assert not (tmp_path / "out").exists()


def test_missing_default_checkpoint_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["infer", str(require_shared(SCENES / "corgi")), "-o", str(tmp_path / "out")])
    assert code == 2
    assert "tracefield download" in error_line(capsys)


def test_out_of_memory_is_one_line_and_keeps_previous_result(tmp_path, tiny_config_file, capsys, monkeypatch):
    out = tmp_path / "out"
    corgi = require_shared(SCENES / "corgi")
    assert infer([corgi], out, tiny_config_file) == 0
    before = (out / "corgi" / "field.safetensors").read_bytes()

    def no_memory(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(TraceAnything, "predict", no_memory)
    assert infer([corgi], out, tiny_config_file, "--overwrite") == 2
    line = error_line(capsys)
    assert "out of" in line and "--max-frames" in line and "corgi" in line
    assert (out / "corgi" / "field.safetensors").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["corgi"]  # no temporary folders left


def test_too_many_frames_for_memory_fail_before_decoding(tmp_path, tiny_config_file, capsys, monkeypatch):
    """1,000 frames asked for at once: refused from an estimate, with a --max-frames that fits."""
    frames = [np.full((16, 32, 3), i % 255, np.uint8) for i in range(1000)]
    folder = write_frames(tmp_path / "long", frames)
    monkeypatch.setattr("tracefield.infer.available_memory", lambda device: 2 * 2**30)
    monkeypatch.setattr("tracefield.infer.read_frames", lambda *a, **k: pytest.fail("decoded before the memory check"))
    assert infer([folder], tmp_path / "out", tiny_config_file, "--max-frames", "1000") == 2
    line = error_line(capsys)
    assert str(folder) in line and "1000 frames at 512x256 need about" in line
    suggested = int(line.split("--max-frames ")[1].split()[0])
    assert 2 <= suggested < 1000
    assert not (tmp_path / "out").exists()


def test_scene_folders_gone_after_writing_do_not_fail_the_finished_run(tmp_path, tiny_config_file, monkeypatch, capsys):
    """The end-of-run note on what the network can do reads the written folders back; one moved or removed
    meanwhile (a user's clean-up, a sweeper on a small disk) tells nothing, and the run still succeeds."""
    from tracefield import runner

    write = runner.write_scene

    def write_then_remove(output, scene_dir, pngs=None):
        folder = write(output, scene_dir, pngs)
        if output.name == "a":
            shutil.rmtree(folder)
        return folder

    monkeypatch.setattr(runner, "write_scene", write_then_remove)
    inputs = [write_frames(tmp_path / name, scene_frames("corgi", 2)) for name in ("a", "b")]
    assert infer(inputs, tmp_path / "out", tiny_config_file) == 0
    assert not (tmp_path / "out" / "a").exists() and (tmp_path / "out" / "b" / "field.safetensors").is_file()
    assert "warning: these fields were made with UNTRAINED random weights" in capsys.readouterr().err  # b's note is still given


def test_failed_rerun_keeps_previous_result(tmp_path, tiny_config_file):
    scene = write_frames(tmp_path / "scene", scene_frames("corgi", 2))
    out = tmp_path / "out"
    assert infer([scene], out, tiny_config_file) == 0
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    shutil.copy(scene / "000.png", scene / "002.png")
    (scene / "001.png").write_bytes(b"garbage")
    assert infer([scene], out, tiny_config_file, "--overwrite") == 2
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_memory_estimate_counts_the_local_head_only_when_kept():
    from tracefield import load_model
    from tracefield.infer import estimate_memory

    model = load_model(TINY_NET, device="cpu")
    k = model.num_ctrl_pts
    extra = estimate_memory(model, 4, (64, 96), local_head=True) - estimate_memory(model, 4, (64, 96))
    assert extra == 4 * k * 64 * 96 * 4 * 4  # fp32 points and confidences of one more head


def test_eval_prints_the_model_against_every_baseline_rendering_where_the_network_runs(tmp_path, capsys, monkeypatch):
    import tracefield
    import tracefield.train.evaluate as evaluation
    from tracefield.model.checkpoint import save_checkpoint
    from tracefield.model.config import load_config

    checkpoint = save_checkpoint(tracefield.load_model(TINY_NET, device="cpu").state_dict(), tmp_path / "tiny.safetensors", load_config(TINY_NET).net.to_json())
    devices = []
    run = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: devices.append(k.get("device")) or run(*a, **k))
    assert main(["eval", "--checkpoint", str(checkpoint), "--scenes", "2", "--frames", "3", "--size", "32x48", "--device", "cpu", "-q"]) == 0
    table = read_table(capsys.readouterr().out)
    assert list(table) == ["model", "zero motion", "object translation", "untrained network"]
    assert all(len(values) == 7 and all(np.isfinite(v) for v in values.values()) for values in table.values())
    assert table["object translation"]["epe2d_moving"] <= table["zero motion"]["epe2d_moving"]  # knowing the centres helps
    assert table["zero motion"]["motion_recall"] == 0 and 0 < table["object translation"]["motion_recall"] < 1.5
    assert devices == ["cpu"]  # scenes render on the network's device, passed explicitly (with CUDA, on the GPU)
    # the toy family's translating square: the object-translation oracle is the truth there, so it recalls all the motion
    assert main(["eval", "--checkpoint", str(checkpoint), "--scenes", "2", "--frames", "3", "--size", "32x48", "--stage", "square", "--device", "cpu", "-q"]) == 0
    table = read_table(capsys.readouterr().out)
    assert table["object translation"]["motion_recall"] == pytest.approx(1, abs=1e-4) and table["object translation"]["epe2d_moving"] < 1e-3
    assert table["zero motion"]["motion_recall"] == 0 and table["zero motion"]["epe2d_moving"] > 1
    assert main(["eval", "--checkpoint", str(checkpoint), "--stage", "squares", "-q"]) == 2  # a typo: one line naming the stages


def read_table(printed: str) -> dict[str, dict[str, float]]:
    """``tracefield eval``'s table: {method: {column: value}}."""
    header, *lines = printed.splitlines()
    columns = header.split()[1:]
    return {line[:18].strip(): dict(zip(columns, map(float, line[18:].split()))) for line in lines}


def test_the_network_sees_the_chosen_frames_in_minus_one_to_one(tmp_path, tiny_config_file, monkeypatch):
    """What reaches the network: the picked frames read back from disk, scaled to [-1, 1] as the release does, with their clip times."""
    seen = []
    predict = TraceAnything.predict

    def spy(self, images, times, **kwargs):
        seen.append((images.detach().cpu().double(), times.detach().cpu().double()))
        return predict(self, images, times, **kwargs)

    monkeypatch.setattr(TraceAnything, "predict", spy)
    rng = np.random.default_rng(3)
    folder = write_frames(tmp_path / "clip", [rng.integers(0, 256, size=(64, 512, 3), dtype=np.uint8) for _ in range(5)])  # network size already
    assert infer([folder], tmp_path / "out", tiny_config_file, "--max-frames", "3") == 0
    (images, times), = seen
    on_disk = np.stack([np.asarray(Image.open(folder / f"{i:03d}.png")) for i in (0, 2, 4)]).astype(np.float64)
    expected = torch.from_numpy(on_disk).permute(0, 3, 1, 2)[None] / 127.5 - 1.0
    assert images.shape == expected.shape == (1, 3, 3, 64, 512)
    torch.testing.assert_close(images, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(times, torch.tensor([[0.0, 0.5, 1.0]], dtype=torch.float64))


def test_a_config_that_disagrees_with_the_checkpoint_names_both(tmp_path, tiny_config_file, capsys):
    """The checkpoint carries its network; --config describing another one is refused before anything runs."""
    from tracefield.model.checkpoint import save_checkpoint
    from tracefield.model.config import load_config

    k10 = tmp_path / "k10.safetensors"
    save_checkpoint(TraceAnything(load_config({**TINY_NET, "poly_degree": 10}).net).state_dict(), k10, load_config({**TINY_NET, "poly_degree": 10}).net.to_json())
    scene = write_frames(tmp_path / "scene", [np.zeros((32, 64, 3), np.uint8)] * 2)
    code = main(["infer", str(scene), "-o", str(tmp_path / "out"), "--config", str(tiny_config_file), "--checkpoint", str(k10), "--device", "cpu"])
    assert code == 2
    line = error_line(capsys)
    assert str(tiny_config_file) in line and str(k10) in line and "poly_degree: 4 != 10" in line
    assert not (tmp_path / "out").exists()
    assert main(["infer", str(scene), "-o", str(tmp_path / "out"), "--checkpoint", str(k10), "--device", "cpu", "-q"]) == 0  # alone: its own config
    assert TraceField.load(tmp_path / "out" / "scene").num_ctrl == 10
