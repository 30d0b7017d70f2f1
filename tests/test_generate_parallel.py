"""`tracefield generate` across processes: torchrun's places, the launch, the run list shared out, one video
split over processes (diffusers' context parallelism), and the errors said before any weights load.

Several processes run on the CPU here, talking through gloo, started by fork from the test
process (an instant: the libraries are already imported). One process and two compute the
same function in different orders of work; with the same number of threads each, the CPU
gives the same float32 results, so the tests pin one thread everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import imageio.v2 as iio
import numpy as np
import pytest
import torch

from tracefield.cli import build_parser, main, run
from tracefield.distributed import World, check_gpus, join, launch, leave, share
from tracefield.errors import TracefieldError
from tracefield.export.wan_sizes import aspect_bucket, latent_tokens
from tracefield.generate.parallel import DATA, GUIDANCE, SEQUENCE, check_options, choose_mode, plan_sequence, spread
from tracefield.generate.pipeline import GenerationOptions
from tracefield.generate.run import prepare, read_run_list
from tracefield.generate.weights import ATI_DIR, WAN_DIR, load_pipeline

from test_generate import TINY_AREA, ati_export, error_line, generate, layouts  # noqa: F401 (fixtures)

FRAMES = 17  # 5 latent frames
CUDA = torch.device("cuda")  # what the split plans are for (nothing runs on it in the unit tests)
UNEVEN_AREA = 5000  # the test scene's 128x72 frames -> 48x80: 3 x 5 patches a latent frame, 75 tokens: odd


def fork(target, payload, processes: int = 2) -> int:
    """:func:`launch` by fork, from a test process that has not started CUDA: PyTorch does not support forking one
    that has (its threads and driver state are not fork-safe), and under `make test` on a GPU machine the CUDA tests
    before these have (a forked run once hung there). CI, with no GPU, and `pytest tests/test_generate_parallel.py`
    run them."""
    if torch.cuda.is_initialized():
        pytest.skip("this process has started CUDA, which PyTorch cannot fork; run this file alone to test it")
    return launch(target, payload, processes, start_method="fork")


@pytest.fixture
def one_thread(monkeypatch):
    """One thread in this process and in the processes it forks, so that float32 sums add up in the same order."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- places, shares, launch


def test_world_from_torchrun_environment():
    assert World.from_env({}) == World(0, 1, 0, 1)
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}  # two machines of four
    world = World.from_env(env)
    assert (world.rank, world.size, world.local_rank, world.local_size, world.leader) == (5, 8, 1, 4, False)
    assert World.from_env({"RANK": "0", "WORLD_SIZE": "2"}) == World(0, 2, 0, 2)  # one machine: local = global
    for bad, named in (({"RANK": "0", "WORLD_SIZE": "two"}, "WORLD_SIZE='two'"), ({"WORLD_SIZE": "2"}, "RANK=''"),
                       ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2"), ({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "3"}, "LOCAL_RANK=3")):
        with pytest.raises(TracefieldError, match=named) as info:
            World.from_env(bad)
        assert "torchrun" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 8])
def test_share_gives_every_entry_to_exactly_one_process_evenly(size):
    for count in range(0, 20):
        parts = [share(count, World(rank, size, rank, size)) for rank in range(size)]
        assert [i for part in parts for i in part] == list(range(count))  # each once, in order
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def _report_place(folder: str) -> int:
    names = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    Path(folder, os.environ["RANK"]).write_text(json.dumps({name: os.environ[name] for name in names}))
    return 0


def _second_fails_first_waits(folder: str) -> int:
    if os.environ["RANK"] == "1":
        return 2
    time.sleep(120)  # as a process waiting forever on the failed one would
    return 0


def test_launch_places_processes_as_torchrun_does(tmp_path):
    assert fork(_report_place, str(tmp_path), 3) == 0
    places = [json.loads((tmp_path / str(rank)).read_text()) for rank in range(3)]
    assert [(p["RANK"], p["LOCAL_RANK"], p["WORLD_SIZE"], p["LOCAL_WORLD_SIZE"]) for p in places] == [(str(r), str(r), "3", "3") for r in range(3)]
    assert len({(p["MASTER_ADDR"], p["MASTER_PORT"]) for p in places}) == 1 and places[0]["MASTER_ADDR"] == "127.0.0.1"
    assert World.from_env(places[2]) == World(2, 3, 2, 3)


def test_launch_returns_the_failed_status_and_stops_the_others(tmp_path):
    started = time.perf_counter()
    assert fork(_second_fails_first_waits, str(tmp_path), 2) == 2
    assert time.perf_counter() - started < 60  # the waiting process was stopped, not waited for


def _second_fails_then_first_raises(folder: str) -> int:
    """Process 1 fails; process 0 then finds its collective broken, in gloo's words."""
    failed = Path(folder, "failed")
    if os.environ["RANK"] == "1":
        failed.touch()
        return 2
    while not failed.exists():
        time.sleep(0.01)
    time.sleep(0.2)  # process 1 has exited by now
    raise RuntimeError("[gloo] Connection closed by peer [127.0.0.1]:29500")


def _first_raises(folder: str) -> int:
    if os.environ["RANK"] == "0":
        raise ValueError("a bug nobody caught")
    time.sleep(120)
    return 0


def test_a_raise_after_another_failure_keeps_that_failures_status(tmp_path, monkeypatch):
    """The launcher looks late and finds both ended: the raise comes first in rank order, yet the run's status is the
    one process 1 returned, not a traceback out of `launch` (it happened when the launcher was slow on a loaded CI)."""
    import multiprocessing.connection

    wait = multiprocessing.connection.wait

    def late(*args, **kwargs):
        time.sleep(1.0)
        return wait(*args, **kwargs)

    monkeypatch.setattr(multiprocessing.connection, "wait", late)
    assert fork(_second_fails_then_first_raises, str(tmp_path), 2) == 2


def test_a_process_that_raises_fails_the_run_in_one_line(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="tracefield.distributed"):
        assert fork(_first_raises, str(tmp_path), 2) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == ["process 0 failed: ValueError: a bug nobody caught"]
    assert "Traceback" in caplog.text  # the whole of it at debug level


# --------------------------------------------------------------------------- modes and splits


def test_default_mode_is_a_video_per_process_only_with_enough_videos():
    assert choose_mode(None, 1, 8) == SEQUENCE and choose_mode(None, 7, 8) == SEQUENCE
    assert choose_mode(None, 8, 8) == DATA and choose_mode(None, 20, 2) == DATA
    assert choose_mode(GUIDANCE, 20, 2) == GUIDANCE and choose_mode(None, 5, 1) == SEQUENCE


def test_sequence_split_follows_what_diffusers_needs():
    portrait = {"a": latent_tokens(832, 480, 81)}  # 32,760 tokens: a multiple of 8
    assert portrait["a"] == 32760
    plan = plan_sequence(SEQUENCE, 8, 1, 40, portrait, CUDA)
    assert (plan.guidance, plan.ring, plan.ulysses, plan.anything) == (1, 1, 8, False)
    plan = plan_sequence(GUIDANCE, 8, 2, 40, portrait, CUDA)
    assert (plan.guidance, plan.ring, plan.ulysses, plan.anything) == (2, 2, 2, False)
    plan = plan_sequence(GUIDANCE, 2, 1, 40, portrait, CUDA)
    assert (plan.guidance, plan.degree) == (2, 1)
    # ATI's own 832x480 landscape bucket (464x832) has 31,668 tokens: not a multiple of 8 -> diffusers' uneven split
    landscape = {"b": latent_tokens(*aspect_bucket(832, 480, 480 * 832), 81)}
    assert landscape["b"] == 31668
    assert plan_sequence(SEQUENCE, 4, 1, 40, landscape, CUDA).anything is False
    assert plan_sequence(SEQUENCE, 8, 1, 40, landscape, CUDA).anything is True
    assert plan_sequence(SEQUENCE, 8, 8, 40, landscape, CUDA).anything is True  # ring alone
    assert plan_sequence(SEQUENCE, 3, 1, 40, portrait, CUDA).anything is True  # 40 heads over 3: diffusers pads them
    with pytest.raises(TracefieldError, match="b: 31668 tokens are not a multiple of 8.*--ring 1 or --ring 8"):
        plan_sequence(SEQUENCE, 8, 2, 40, landscape, CUDA)  # ring x Ulysses cannot split unevenly
    with pytest.raises(TracefieldError, match="2 heads cannot be shared by 3 processes"):
        plan_sequence(SEQUENCE, 3, 1, 2, {"c": 300}, CUDA)
    with pytest.raises(TracefieldError, match="b: 31668 tokens are not a multiple of 8: .* gloo \\(CPU\\) cannot"):
        plan_sequence(SEQUENCE, 8, 1, 40, landscape, torch.device("cpu"))
    with pytest.raises(TracefieldError, match="c: 5 tokens cannot be split over 8"):
        plan_sequence(SEQUENCE, 8, 1, 40, {"c": 5}, CUDA)


@pytest.mark.parametrize("mode, processes, ring, offload, shard, attention, device, message", [
    (GUIDANCE, 3, 1, None, False, None, "cpu", "needs an even number of processes"),
    (SEQUENCE, 6, 4, None, False, None, "cuda", "--ring 4: must divide the 6 processes"),
    (GUIDANCE, 8, 3, None, False, None, "cuda", "--ring 3: must divide the 4 processes"),
    (SEQUENCE, 2, 2, None, False, None, "cpu", "ring attention needs a GPU backend"),
    (SEQUENCE, 4, 2, None, False, "native", "cuda", "use --attention _native_cudnn"),
    (SEQUENCE, 2, 1, "model", False, None, "cuda", "--offload with --parallel sequence: not supported"),
    (DATA, 2, 1, None, True, None, "cuda", "--shard-weights splits one video"),
    (DATA, 2, 2, None, False, None, "cuda", "--ring splits one video"),
    (SEQUENCE, 2, 0, None, False, None, "cuda", "--ring 0: must be at least 1"),
])
def test_options_that_cannot_work_are_refused(mode, processes, ring, offload, shard, attention, device, message):
    with pytest.raises(TracefieldError, match=message):
        check_options(mode, processes, ring, offload, shard, attention, torch.device(device))


# --------------------------------------------------------------------------- errors before anything starts


def test_gpus_on_a_machine_without_cuda(ati_export, layouts, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert generate(ati_export, tmp_path / "v", layouts, "--gpus", "2") == 2
    assert "--gpus 2 with --device cpu: one GPU per process" in error_line(capsys)
    assert main(["generate", str(ati_export), "-o", str(tmp_path / "v"), "--gpus", "2", "--random-weights", "tiny", "-q"]) == 2
    assert "--gpus 2: no CUDA GPU on this machine" in error_line(capsys)
    assert not (tmp_path / "v").exists()


def test_gpus_starts_that_many_processes_of_the_same_command(ati_export, tmp_path, monkeypatch, capsys):
    import tracefield.distributed as distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    started = []
    monkeypatch.setattr(distributed, "launch", lambda target, args, count, start_method="spawn": started.append((target, args, count, start_method)) or 0)
    assert main(["generate", str(ati_export), "-o", str(tmp_path), "--gpus", "4", "--steps", "3", "--seed", "7"]) == 0
    (target, args, count, start_method), = started
    assert (target, count, start_method) == (run, 4, "spawn")  # CUDA needs clean interpreters
    assert args.gpus is None and (args.run_list, args.output, args.steps, args.seed) == (ati_export, tmp_path, 3, 7)
    assert "starting 4 processes, one per GPU (--parallel sequence)" in capsys.readouterr().err
    assert main(["generate", str(ati_export), "-o", str(tmp_path), "--gpus", "8"]) == 2
    assert "--gpus 8: 8 processes on this machine but it has 4 CUDA GPU(s); start at most 4" in error_line(capsys)


def test_more_processes_than_gpus_and_no_nccl(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(TracefieldError, match="--gpus 4: 4 processes on this machine but it has 2 CUDA GPU"):
        check_gpus(4, "--gpus 4")
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: False)
    with pytest.raises(TracefieldError, match="built without NCCL"):
        check_gpus(2, "--gpus 2")
    monkeypatch.setattr(torch.distributed, "is_nccl_available", lambda: True)
    with pytest.raises(TracefieldError, match="torchrun --nproc_per_node 4: 4 processes on this machine but it has 2"):
        join(World(0, 4, 0, 4), torch.device("cuda"))  # torchrun started 4 on this 2-GPU machine


def test_options_for_several_processes_with_one(ati_export, layouts, tmp_path, capsys, monkeypatch):
    assert generate(ati_export, tmp_path / "v", layouts, "--ring", "2") == 2
    assert "--ring splits a video over processes; start several with --gpus G" in error_line(capsys)
    assert generate(ati_export, tmp_path / "v", layouts, "--gpus", "0") == 2
    assert "--gpus 0: must be at least 1" in error_line(capsys)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert generate(ati_export, tmp_path / "v", layouts, "--gpus", "2") == 2
    assert "under torchrun leave it out" in error_line(capsys)


# --------------------------------------------------------------------------- one video over two processes


def _spread_latents(payload: dict) -> int:
    """Each of ``payload['runs']`` (name -> mode, shard, batch, max_area) with this process's share; process 0 saves the latents
    and the token count the second block saw."""
    world = World.from_env()
    device = join(world, torch.device(payload["device"]))
    entry = prepare(read_run_list(Path(payload["run_list"]))[0], FRAMES)
    for name, (mode, shard, batch, area) in payload["runs"].items():
        pipe = load_pipeline(Path(payload["layouts"]) / WAN_DIR, Path(payload["layouts"]) / ATI_DIR, None, device)
        options = GenerationOptions(steps=2, frames=FRAMES, max_area=area, batch_guidance=batch)
        tokens = {name: latent_tokens(*aspect_bucket(entry.image.shape[1], entry.image.shape[0], area), FRAMES)}
        spread(pipe, plan_sequence(mode, world.size, 1, pipe.transformer.config.num_attention_heads, tokens, device), world, shard)
        seen = []
        pipe.transformer.blocks[1].register_forward_pre_hook(lambda m, a: seen.append(tuple(a[0].shape[:2])))
        conditions = pipe.parallel.same_conditions(pipe.prepare(entry.image, "w1 w2", entry.condition, options))
        latent = pipe.denoise(conditions, options, progress=False)
        if world.leader:
            torch.save({"latent": latent.cpu(), "seen": seen[0], "tokens": tokens[name]}, Path(payload["out"]) / f"{name}.pt")
    video = pipe.generate(entry.image, "w1", entry.condition, dataclasses.replace(options, steps=1), progress=False)
    Path(payload["out"], f"video.{world.rank}").write_text(str(None if video is None else tuple(video.shape)))  # who decodes
    leave(world)
    return 0


RUNS = {  # name: mode, shard weights, batch guidance, max area
    "ulysses": (SEQUENCE, False, True, TINY_AREA * 4),
    "ulysses, one branch at a time": (SEQUENCE, False, False, TINY_AREA * 4),
    "guidance halves": (GUIDANCE, False, True, TINY_AREA * 4),
    "ulysses, sharded weights": (SEQUENCE, True, True, TINY_AREA * 4),
}
# diffusers' uneven split gathers unequal shards (all_gather of a list of different sizes): NCCL does it, gloo refuses
# ("ProcessGroupGloo::allgather: invalid tensor size"), so it runs on GPUs only.
GPU_RUNS = {**RUNS, "uneven tokens": (SEQUENCE, False, True, UNEVEN_AREA)}


def test_two_processes_denoise_as_one(layouts, ati_export, tmp_path, one_thread):
    """Sequence split (Ulysses, also uneven), guidance halves and sharded weights: the latents of one process, each process
    having run half the tokens (or one guidance branch)."""
    payload = {"device": "cpu", "run_list": str(ati_export), "layouts": str(layouts), "out": str(tmp_path), "runs": RUNS}
    assert fork(_spread_latents, payload, 2) == 0
    pipe = load_pipeline(layouts / WAN_DIR, layouts / ATI_DIR, None, torch.device("cpu"))
    entry = prepare(read_run_list(ati_export)[0], FRAMES)
    for name, (mode, _, batch, area) in RUNS.items():
        options = GenerationOptions(steps=2, frames=FRAMES, max_area=area, batch_guidance=batch and mode != GUIDANCE)  # halves: ATI's order
        alone = pipe.denoise(pipe.prepare(entry.image, "w1 w2", entry.condition, options), options, progress=False)
        spread_run = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        error = float((spread_run["latent"] - alone).abs().max() / alone.abs().max())
        assert error <= 1e-5, (name, error)
        tokens = spread_run["tokens"]
        batch_seen = 1 if mode == GUIDANCE or not batch else 2
        assert spread_run["seen"] == (batch_seen, tokens if mode == GUIDANCE else tokens // 2), name
    assert (tmp_path / "video.0").read_text().startswith("(3, 17,") and (tmp_path / "video.1").read_text() == "None"


# --------------------------------------------------------------------------- through the CLI


def _run_list(ati_export, folder: Path, texts: list[str]) -> Path:
    entry = read_run_list(ati_export)[0]
    path = folder / "many.yaml"
    path.write_text("".join(f"- {{image: {entry.image}, text: {text}, track: {entry.track}}}\n" for text in texts))
    return path


def _cli(run_list: Path, out: Path, layouts: Path, *extra: str) -> list[str]:
    return ["generate", str(run_list), "-o", str(out), "--model-dir", str(layouts / WAN_DIR), "--transformer", str(layouts / ATI_DIR),
            "--steps", "2", "--frames", str(FRAMES), "--max-area", str(TINY_AREA), "--device", "cpu", *extra]


class _Joined(Exception):
    pass


@pytest.mark.parametrize("mode", [DATA, SEQUENCE])
def test_data_parallel_processes_wait_for_the_slowest_video(mode, ati_export, layouts, tmp_path, monkeypatch):
    """--parallel data: the processes meet only after their videos (one video apart at most, which can take longer than
    torch's 10 minutes on NCCL); a sequence split meets every step and keeps torch's timeout, to find a hang soon."""
    import tracefield.distributed as distributed

    joined = []

    def record(world, device, timeout=None):
        joined.append(timeout)
        raise _Joined

    monkeypatch.setattr(distributed, "join", record)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(_Joined):
        main(_cli(_run_list(ati_export, tmp_path, ["w1", "w2"]), tmp_path / "v", layouts, "-q", "--parallel", mode))
    timeout, = joined
    assert (timeout is not None and timeout.total_seconds() >= 3600) if mode == DATA else timeout is None


def test_data_parallel_writes_the_files_one_process_writes(ati_export, layouts, tmp_path, one_thread, capfd):
    run_list = _run_list(ati_export, tmp_path, ["w1", "w2 w3", "w4"])
    assert main(_cli(run_list, tmp_path / "one", layouts, "-q")) == 0
    capfd.readouterr()
    assert fork(run, build_parser().parse_args(_cli(run_list, tmp_path / "two", layouts)), 2) == 0
    one, two = (sorted(p.name for p in (tmp_path / d).iterdir()) for d in ("one", "two"))
    assert one == two and len(one) == 9  # 3 entries x (video, tracks picture, tracks video), no temporary left
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    err = capfd.readouterr().err.splitlines()
    wrote = [line for line in err if line.startswith("wrote ")]
    assert sorted(Path(line.split()[1]).name for line in wrote) == one  # process 0 lists every file, once
    assert sum("generating card" in line for line in err) == 1  # its own entry's progress; the others' is not shown
    assert not [line for line in err if "rank 1: " in line]  # the others say nothing unless something goes wrong


def test_a_failure_in_one_process_is_said_by_it_and_ends_the_run(ati_export, layouts, tmp_path, capfd, monkeypatch):
    from tracefield.generate.pipeline import ATIPipeline

    def fails_in_the_second(pipe, *args, **kwargs):
        if os.environ["RANK"] == "1":
            raise TracefieldError("card.pth: out of GPU memory (planted)")
        return None  # the first has nothing to write and waits for the second

    monkeypatch.setattr(ATIPipeline, "generate", fails_in_the_second)
    run_list = _run_list(ati_export, tmp_path, ["w1", "w2"])
    assert fork(run, build_parser().parse_args(_cli(run_list, tmp_path / "v", layouts, "-q")), 2) == 2
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error: ")]
    assert errors == ["error: rank 1: card.pth: out of GPU memory (planted)"]


def test_sequence_parallel_through_the_cli(ati_export, layouts, tmp_path, one_thread, capfd):
    """One entry: split by default. A random seed: each process draws its own, and all take process 0's noise (the one it
    logs), so the video is the one process makes with that seed; process 0 alone logs and writes."""
    assert fork(run, build_parser().parse_args(_cli(ati_export, tmp_path / "two", layouts, "--seed", "-1")), 2) == 0
    err = capfd.readouterr().err
    assert "one video over 2 processes: Ulysses over 2" in err and "rank 1" not in err
    assert err.count("generating card") == 1 and err.count("wrote ") == 3 and err.count("random seed") == 1
    seed = err.split("random seed ")[1].split()[0]
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["card.mp4", "card_tracks.mp4", "card_tracks.png"]
    assert main(_cli(ati_export, tmp_path / "one", layouts, "-q", "--seed", seed)) == 0
    a, b = (np.stack(iio.mimread(tmp_path / d / "card.mp4")).astype(int) for d in ("one", "two"))
    assert a.shape == b.shape and np.abs(a - b).mean() < 0.5  # the same latents (see above), through lossy mp4


# --------------------------------------------------------------------------- on two GPUs (make test-gpu)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_cuda_two_gpus_denoise_as_one(layouts, ati_export, tmp_path):
    """NCCL, ATI's precisions (bf16 under autocast): each split within bf16 rounding of one GPU."""
    payload = {"device": "cuda", "run_list": str(ati_export), "layouts": str(layouts), "out": str(tmp_path), "runs": GPU_RUNS}
    assert launch(_spread_latents, payload, 2) == 0
    pipe = load_pipeline(layouts / WAN_DIR, layouts / ATI_DIR, None, torch.device("cuda"))
    entry = prepare(read_run_list(ati_export)[0], FRAMES)
    assert torch.load(tmp_path / "uneven tokens.pt", weights_only=True)["tokens"] % 2 == 1
    for name, (mode, _, batch, area) in GPU_RUNS.items():
        options = GenerationOptions(steps=2, frames=FRAMES, max_area=area, batch_guidance=batch and mode != GUIDANCE)
        alone = pipe.denoise(pipe.prepare(entry.image, "w1 w2", entry.condition, options), options, progress=False).cpu()
        spread_run = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        error = float((spread_run["latent"] - alone).abs().max() / alone.abs().max())
        assert error < 2e-2, (name, error)


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
@pytest.mark.parametrize("mode", [SEQUENCE, GUIDANCE, DATA])
def test_cuda_gpus_flag_writes_what_one_gpu_writes(mode, ati_export, layouts, tmp_path):
    run_list = _run_list(ati_export, tmp_path, ["w1", "w2"])
    cuda = [arg if arg != "cpu" else "cuda" for arg in _cli(run_list, tmp_path / "one", layouts, "-q")]
    assert main(cuda + (["--no-batch-guidance"] if mode == GUIDANCE else [])) == 0  # the halves run ATI's order
    assert main([arg if arg != str(tmp_path / "one") else str(tmp_path / "two") for arg in cuda] + ["--gpus", "2", "--parallel", mode]) == 0
    one, two = (sorted(p.name for p in (tmp_path / d).iterdir()) for d in ("one", "two"))
    assert one == two
    for name in ("card.mp4", "card_1.mp4"):
        a, b = (np.stack(iio.mimread(tmp_path / d / name)).astype(int) for d in ("one", "two"))
        assert np.abs(a - b).mean() < 2, name
