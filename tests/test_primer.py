"""The GPU set-up beside the loading (tracefield.primer): the pinned block it makes ready is the
one the scene's outputs take, and the host copies are the GPU's values."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
import torch

import tracefield.runner as runner
from tracefield import primer
from tracefield.scene_writer import _aligned, _to_host, copy_into, packed_bytes, pinned_bytes

from test_infer_runs import infer, make_clips


@pytest.mark.parametrize("extra", [(), ("--local-head", "--field-float32")], ids=["default", "local-float32"])
def test_the_primed_block_is_what_the_scene_pins(tmp_path, tiny_config_file, monkeypatch, extra):
    """Through the CLI: the bytes the runner primes from the first scene's plan are the bytes its
    outputs copy to the host (everything of the field file but the frames, which stay on the host)."""
    primed, copied = [], []
    monkeypatch.setattr(runner, "start_priming", lambda device, plan, pinned: primed.append((plan, pinned)))

    def spy(field, name, dtype=torch.float16, release=False):
        copied.append(packed_bytes({key: t for key, t in field.file_tensors(dtype).items() if key != "images"}))
        return real(field, name, dtype, release)

    real = runner.scene_output
    monkeypatch.setattr(runner, "scene_output", spy)
    clips = make_clips(tmp_path / "clips", {"walk": 3}, size=(40, 72))
    assert infer([clips / "walk"], tmp_path / "out", tiny_config_file, "-q", *extra) == 0
    (plan, pinned), = primed
    assert copied == [pinned(plan.result())]


def test_pinned_bytes_counts_each_tensor():
    """Points (3 coordinates) and log-confidences per control point, in the field's dtype; local
    ones twice; times and time steps as float32; one mask byte per pixel; each start aligned."""
    views, hw, k = 3, (5, 7), 4
    pixels = views * 35
    small = 2 * _aligned(views * 4) + _aligned(pixels)
    assert pinned_bytes(views, hw, k, torch.float16, False) == _aligned(pixels * k * 3 * 2) + _aligned(pixels * k * 2) + small
    assert pinned_bytes(views, hw, k, torch.float32, True) == 2 * (_aligned(pixels * k * 3 * 4) + _aligned(pixels * k * 4)) + small


def test_no_priming_on_the_cpu():
    assert primer.start_priming(torch.device("cpu"), Future(), lambda plan: 1) is None


def test_host_copies_of_cpu_tensors_are_themselves():
    tensors = {"a": torch.arange(6).view(2, 3).t(), "b": torch.ones(2, dtype=torch.bool)}
    host = _to_host(tensors)
    assert host["a"].is_contiguous() and torch.equal(host["a"], tensors["a"]) and torch.equal(host["b"], tensors["b"])


def test_copies_laid_out_in_one_block_keep_every_value():
    """The layout of the pinned block, on a plain one: tensors of every width and odd sizes (most
    over the alignment), one after another, none overwriting another, a strided one included."""
    g = torch.Generator().manual_seed(0)
    tensors = {
        "odd": torch.randint(0, 255, (3, 50, 7), generator=g, dtype=torch.uint8),
        "half": torch.randn(40, 3, 3, generator=g).half(),
        "mask": torch.rand(1301, generator=g) > 0.5,
        "float": torch.randn(60, 5, generator=g).t(),
        "double": torch.randn(3, generator=g, dtype=torch.float64),
    }
    block = torch.full((packed_bytes(tensors),), 7, dtype=torch.uint8)
    copies = copy_into(block, tensors)
    for key, t in tensors.items():
        assert copies[key].dtype == t.dtype and torch.equal(copies[key], t), key
        assert copies[key].untyped_storage().data_ptr() == block.untyped_storage().data_ptr(), key


@pytest.mark.gpu
def test_cuda_host_copies_share_the_primed_block():
    """On CUDA: each tensor's host copy holds its values (dtypes of every width, an odd-sized one
    first), and after priming with pinned_bytes' size no new pinned block is allocated."""
    views, hw, k = 3, (96, 160), 4  # a 2 MiB block: a size class other tests hardly use
    g = torch.Generator(device="cuda").manual_seed(0)
    tensors = {
        "ctrl_pts3d": torch.randn(views, k, *hw, 3, device="cuda", generator=g).half(),
        "ctrl_conf_log": torch.randn(views, k, *hw, device="cuda", generator=g).half(),
        "time": torch.rand(views, device="cuda", generator=g),
        "time_step": torch.rand(views, device="cuda", generator=g),
        "images": torch.zeros(views, *hw, 3, dtype=torch.uint8),
        "fg_mask": torch.rand(views, *hw, device="cuda", generator=g) > 0.5,
    }
    done = Future()
    done.set_result("plan")
    primer._prime(torch.device("cuda"), done, lambda plan: pinned_bytes(views, hw, k, torch.float16, False))
    stats = getattr(torch.cuda, "host_memory_stats", lambda: {})()
    before = stats.get("num_host_alloc")
    host = _to_host(tensors)
    for key, t in tensors.items():
        assert host[key].device.type == "cpu" and host[key].dtype == t.dtype and torch.equal(host[key], t.cpu()), key
    assert host["ctrl_pts3d"].is_pinned() and not host["images"].is_pinned()
    if before is None:
        pytest.skip("torch.cuda.host_memory_stats is missing in this PyTorch: the values were checked, the reuse is not")
    assert torch.cuda.host_memory_stats()["num_host_alloc"] == before
