"""`tracefield infer` over many scenes: resuming, failures that do not stop the others, the
summary, lean default outputs, time ranges and resolution, and torchrun's processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import imageio.v2 as iio
import numpy as np
import pytest
import torch
from PIL import Image

from tracefield.cli import main
from tracefield.field import TraceField
from tracefield.model.network import TraceAnything
from tracefield.shards import deal

REPO = Path(__file__).resolve().parents[1]
FAST = ("--resolution", "128", "--random-weights", "--device", "cpu")


def infer(inputs, out: Path, config: Path, *extra: str) -> int:
    return main(["infer", *map(str, inputs), "-o", str(out), "--config", str(config), *FAST, *extra])


def make_clips(root: Path, frames: dict[str, int], size=(32, 48)) -> Path:
    """Folders of random frames, one per scene, ``frames[name]`` frames each."""
    rng = np.random.default_rng(0)
    for name, count in frames.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / name / f"{i:03d}.png")
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_default_outputs_are_lean_and_readable(tmp_path, tiny_config_file):
    """No output.pt unless asked; the field, frames, masks and preview are all there."""
    clips = make_clips(tmp_path / "clips", {"walk": 3})
    out = tmp_path / "out"
    assert infer([clips / "walk"], out, tiny_config_file, "-q", "--profile", str(tmp_path / "profile.json")) == 0
    profile = json.loads((tmp_path / "profile.json").read_text())
    assert set(profile["seconds"]) >= {"imports", "load", "plan", "decode", "network", "masks", "field", "writing"}
    assert 0 < sum(profile["seconds"].values()) and [what for what, _ in profile["events"]] == ["walk"]
    scene = out / "walk"
    assert sorted(p.name for p in scene.iterdir()) == ["field.safetensors", "images", "masks", "preview.png"]
    field = TraceField.load(scene)
    assert field.num_frames == 3 and max(field.hw) == 128  # --resolution: the long side
    assert len(list((scene / "images").glob("*.png"))) == 3 and len(list((scene / "masks").glob("*.png"))) == 3
    np.testing.assert_array_equal(np.asarray(Image.open(scene / "masks" / "001.png")) > 127, field.fg_masks[1].numpy())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_finished_scenes_are_skipped_and_the_rest_traced(tmp_path, tiny_config_file, capsys):
    """A run that stopped after two scenes: the next run leaves them untouched and traces the third."""
    clips = make_clips(tmp_path / "clips", {"a": 2, "b": 3, "c": 2})
    out = tmp_path / "out"
    assert infer([clips / "a", clips / "b"], out, tiny_config_file, "-q") == 0
    before = {name: snapshot(out / name) for name in ("a", "b")}
    stale = out / ".c.abcd1234.tmp"  # what a killed run leaves behind
    stale.mkdir()
    capsys.readouterr()
    assert infer([clips], out, tiny_config_file) == 0
    assert {name: snapshot(out / name) for name in ("a", "b")} == before
    assert TraceField.load(out / "c").num_frames == 2 and not stale.exists()
    err = capsys.readouterr().err
    assert "skipping 2 scene(s) already traced" in err and "--overwrite" in err
    table = err[err.index("scenes  frames"):]
    assert "      1       2" in table and "traced" in table and "      2       -        -  skipped" in table
    (out / "a" / "preview.png").write_bytes(b"an old preview")
    assert infer([clips], out, tiny_config_file, "-q", "--overwrite") == 0
    # traced again: the seeded random weights draw the same preview (the field's header order is not stable)
    assert (out / "a" / "preview.png").read_bytes() == before["a"]["preview.png"]


def test_a_failing_scene_does_not_stop_the_others(tmp_path, tiny_config_file, capsys):
    clips = make_clips(tmp_path / "clips", {"a": 2, "b": 2, "c": 2})
    (clips / "b" / "001.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    assert infer([clips], out, tiny_config_file) == 2
    assert sorted(p.name for p in out.iterdir()) == ["a", "c"]
    err = capsys.readouterr().err
    assert f"failed b: {clips / 'b' / '001.png'}: cannot decode image" in err
    assert err.strip().splitlines()[-1].startswith("error: 1 of 3 scenes failed")
    # the next run retries only the failed scene
    (clips / "b" / "001.png").write_bytes((clips / "b" / "000.png").read_bytes())
    assert infer([clips], out, tiny_config_file, "-q") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "c"]


def test_the_network_loads_while_the_first_video_decodes(tmp_path, tiny_config_file, monkeypatch):
    """Loading starts once the video's header reads, so it overlaps the decoding (the cold start's critical path)
    instead of following it; the scene is then traced from that one decoding pass."""
    import tracefield.infer
    import tracefield.model

    loading = threading.Event()
    load_model, read_whole_video = tracefield.model.load_model, tracefield.infer.read_whole_video

    def load(*args, **kwargs):
        loading.set()
        return load_model(*args, **kwargs)

    def read(scene, on_open=None, **kwargs):
        def opened():
            on_open()
            assert loading.wait(5), "the network did not start loading when the header read"
        return read_whole_video(scene, opened, **kwargs)

    monkeypatch.setattr(tracefield.model, "load_model", load)
    monkeypatch.setattr(tracefield.infer, "read_whole_video", read)
    video = tmp_path / "clip.mp4"
    iio.mimwrite(video, [np.full((32, 48, 3), 40 * i, np.uint8) for i in range(4)], fps=10)
    assert infer([video], tmp_path / "out", tiny_config_file, "-q") == 0
    assert TraceField.load(tmp_path / "out" / "clip").num_frames == 4


def test_interrupted_run_keeps_finished_scenes_and_resumes(tmp_path, tiny_config_file, monkeypatch):
    """Ctrl-C while the second scene is traced: the first is complete, the second absent, nothing half-written."""
    clips = make_clips(tmp_path / "clips", {"a": 2, "b": 2, "c": 2})
    out = tmp_path / "out"
    calls = []
    predict = TraceAnything.predict

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(TraceAnything, "predict", interrupted)
    assert infer([clips], out, tiny_config_file, "-q") == 130
    assert sorted(p.name for p in out.iterdir()) == ["a"]
    assert TraceField.load(out / "a").num_frames == 2
    monkeypatch.setattr(TraceAnything, "predict", predict)
    assert infer([clips], out, tiny_config_file, "-q") == 0
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "c"]


def test_video_time_range(tmp_path, tiny_config_file, capsys):
    """Seconds 1 to 2 of a 10 fps clip are its frames 10 to 20."""
    video = tmp_path / "clip.mp4"
    iio.mimwrite(video, [np.full((32, 48, 3), 8 * i, np.uint8) for i in range(30)], fps=10, macro_block_size=16)
    out = tmp_path / "out"
    assert infer([video], out, tiny_config_file, "-q", "--start", "1", "--end", "2", "--max-frames", "6") == 0
    field = TraceField.load(out / "clip")
    assert field.frames.indices == [10, 12, 14, 16, 18, 20]
    np.testing.assert_allclose(field.time_steps.numpy(), np.linspace(0, 1, 6), atol=1e-6)


@pytest.mark.parametrize(
    "args, words",
    [
        (("--start", "-1"), "--start -1: seconds from the start"),
        (("--start", "3", "--end", "2"), "--end 2 is not after --start 3"),
        (("--resolution", "8"), "--resolution 8: the long side needs at least 64"),
        (("--max-frames", "1"), "--max-frames is 1"),
    ],
)
def test_bad_option_values_are_one_line_before_anything(tmp_path, tiny_config_file, capsys, args, words):
    clips = make_clips(tmp_path / "clips", {"a": 2})
    assert infer([clips], tmp_path / "out", tiny_config_file, *args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and words in errors[0]
    assert not (tmp_path / "out").exists()


def test_deal_balances_frames():
    def loads(costs: list[int], size: int) -> list[int]:
        owners = deal(costs, size)
        assert owners == deal(costs, size)  # every process computes the same split
        return [sum(c for c, o in zip(costs, owners) if o == r) for r in range(size)]

    assert loads([40, 2, 40, 2], 2) == [42, 42]  # dealt in order, one process would get both long clips
    assert loads([6, 2, 2, 3, 3, 0], 2) == [8, 8]
    assert loads([40] * 7 + [10] * 4, 3) == [120, 100, 100] and deal([5], 3) == [0] and deal([], 2) == []


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")])])
def test_torchrun_processes_write_exactly_what_one_process_writes(tmp_path, tiny_config_file, device):
    """Two processes under torchrun (gloo on the CPU; NCCL on two GPUs, where the scene plans and summaries
    travel as GPU tensors): every scene once, as one process writes it, balanced by frames."""
    clips = make_clips(tmp_path / "clips", {"a": 6, "b": 2, "c": 2, "d": 3, "e": 3})
    (clips / "bad").mkdir()
    (clips / "bad" / "000.png").write_bytes(b"not a png")
    (clips / "bad" / "001.png").write_bytes(b"not a png")
    single = tmp_path / "single"
    on_device = ("--device", device, "--dtype", "float32")
    assert infer([clips], single, tiny_config_file, "-q", *on_device) == 2  # the bad scene fails, the others are written
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "tracefield",
               "infer", str(clips), "-o", str(tmp_path / "multi"), "--config", str(tiny_config_file), *FAST, *on_device]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    assert run.returncode != 0, run.stderr  # the bad scene fails there too
    assert sorted(p.name for p in (tmp_path / "multi").iterdir()) == sorted(p.name for p in single.iterdir()) == list("abcde")
    for name in "abcde":
        one, many = TraceField.load(single / name), TraceField.load(tmp_path / "multi" / name)
        assert one.frames == many.frames
        torch.testing.assert_close(many.ctrl_pts, one.ctrl_pts, rtol=1e-3, atol=1e-3)
    # dealt by frames, largest first to the least loaded: a(6) b(2) bad(0) | d(3) e(3) c(2)
    assert "process 0: 3 scenes, 8 frames traced" in run.stderr and "process 1: 3 scenes, 8 frames traced" in run.stderr, run.stderr
    assert "failed bad:" in run.stderr and "error: 1 of 6 scenes failed" in run.stderr


class _Joined(Exception):
    pass


def test_processes_wait_for_the_slowest_share_longer_than_nccls_ten_minutes(tmp_path, tiny_config_file, monkeypatch):
    """Processes meet only after their shares of scenes (up to a long scene apart): the group must not give up
    on the slowest after torch's 10 minutes on NCCL, as a process still tracing is no failure."""
    import tracefield.distributed as distributed

    joined = []

    def record(world, device, timeout=None):
        joined.append((world, timeout))
        raise _Joined

    monkeypatch.setattr(distributed, "join", record)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(_Joined):
        infer([make_clips(tmp_path / "clips", {"a": 2})], tmp_path / "out", tiny_config_file)
    (world, timeout), = joined
    assert (world.rank, world.size) == (1, 2) and timeout is not None and timeout.total_seconds() >= 3600


def test_the_demo_model_says_it_traces_motion_weakly(tmp_path, capsys):
    """`make demo`'s network: the run ends saying so with the command for the public weights, and the field knows it."""
    clips = make_clips(tmp_path / "clips", {"walk": 2})
    out = tmp_path / "out"
    assert main(["infer", str(clips / "walk"), "-o", str(out), "--config", "small", "--resolution", "64", "--device", "cpu", "-q"]) == 0
    warning = capsys.readouterr().err.strip().splitlines()[-1]
    assert warning.startswith("warning: these fields were made by the small network") and "traces motion weakly" in warning
    assert "`tracefield download`" in warning
    assert main(["infer", str(clips / "walk"), "-o", str(out), "--config", "small", "--resolution", "64", "--device", "cpu", "-q"]) == 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == warning  # said again when the demo runs again (scene skipped)
    field = TraceField.load(out / "walk")
    assert "traces motion weakly" in field.caveat and field.model["trained_on"] == "tracefield synthetic scenes"
    field.model = {"checkpoint": "checkpoints/trace_anything.safetensors", "untrained": False}
    assert field.caveat is None  # the public weights: nothing to say


def test_the_library_entry_points_trace_and_skip(tmp_path, tiny_config_file):
    """tracefield.plan_scenes + run_infer, as a script would call them: scene folders written, then skipped."""
    import tracefield

    clips = make_clips(tmp_path / "clips", {"a": 3, "b": 4})
    options = tracefield.InferOptions(long_side=64, progress=False)
    plans = tracefield.plan_scenes([clips], options)
    model = tracefield.load_model(tiny_config_file, None, device="cpu")
    summary = tracefield.run_infer(model, plans, tmp_path / "out", options)
    assert sorted(p.name for p in summary.written) == ["a", "b"]
    assert [TraceField.load(tmp_path / "out" / name).num_frames for name in ("a", "b")] == [3, 4]
    again = tracefield.run_infer(model, plans, tmp_path / "out", options)
    assert not again.written and sorted(r.status for r in again.results) == ["skipped", "skipped"]
