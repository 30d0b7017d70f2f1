"""TraceField files: ours (compact, safe) and the release's output.pt."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from tracefield import curves
from tracefield.errors import TracefieldError, short_reason
from tracefield.field import FrameInfo, TraceField
from tracefield.io.preprocess import Preprocess


def random_field(n=3, k=7, hw=(32, 48), seed=0) -> TraceField:
    g = torch.Generator().manual_seed(seed)
    return TraceField(
        ctrl_pts=torch.randn(n, k, *hw, 3, generator=g) * 3,
        ctrl_conf=1 + torch.rand(n, k, *hw, generator=g).mul(12).exp(),  # up to e^12: beyond float16
        times=torch.linspace(0.05, 0.95, n),
        time_steps=torch.linspace(0, 1, n),
        images=torch.randint(0, 256, (n, *hw, 3), dtype=torch.uint8, generator=g),
        fg_masks=torch.rand(n, *hw, generator=g) > 0.7,
        transform=Preprocess.plan(720, 1280),
        frames=FrameInfo(source="clip.mp4", names=[f"clip.mp4#{i}" for i in range(n)], indices=list(range(0, 2 * n, 2)), fps=30.0),
        model={"config": "configs/eval.yaml", "untrained": False},
    )


def test_round_trip_float16(tmp_path):
    field = random_field()
    path = field.save(tmp_path / "field.safetensors")
    loaded = TraceField.load(path)
    assert loaded.ctrl_pts.dtype == torch.float16
    torch.testing.assert_close(loaded.ctrl_pts.float(), field.ctrl_pts, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(loaded.ctrl_conf, field.ctrl_conf, rtol=1e-2, atol=0)  # log-stored: no overflow
    assert torch.isfinite(loaded.ctrl_conf).all()
    for name in ("times", "time_steps", "images", "fg_masks"):
        assert torch.equal(getattr(loaded, name), getattr(field, name)), name
    assert loaded.transform == field.transform and loaded.frames == field.frames and loaded.model == field.model
    with safe_open(str(path), framework="pt") as handle:
        assert json.loads(handle.metadata()["transform"])["original_hw"] == [720, 1280]


def test_round_trip_float32_is_exact_for_points(tmp_path):
    field = random_field()
    loaded = TraceField.load(field.save(tmp_path / "f.safetensors", dtype=torch.float32))
    assert torch.equal(loaded.ctrl_pts, field.ctrl_pts)


def test_points_at_uses_the_curves(tmp_path):
    field = random_field()
    t = torch.tensor([0.0, 0.4, 1.0])
    pts = field.points_at(t, frames=[2])
    assert pts.shape == (1, 3, 32, 48, 3)
    torch.testing.assert_close(pts[0], curves.evaluate(field.ctrl_pts[2], t))
    torch.testing.assert_close(field.conf_at(1.0)[:, 0], field.ctrl_conf[:, -1])


def test_release_file_with_evaluated_tracks_and_user_masks(tmp_path):
    """Files the release wrote (tracks left in, fg_mask_user from its mask tool) still load."""
    field = random_field(n=2)
    data = field.release_output()
    for pred in data["preds"]:
        pred["track_pts3d"] = [torch.zeros(1, 32, 48, 3)] * 2
        pred["fg_mask_user"] = torch.ones(32, 48, dtype=torch.bool)
    torch.save(data, tmp_path / "output.pt")
    loaded = TraceField.load(tmp_path)
    assert loaded.ctrl_pts.dtype == torch.float16  # the compact file's precision: half the memory
    torch.testing.assert_close(loaded.ctrl_pts.float(), field.ctrl_pts, rtol=1e-3, atol=1e-3)
    assert torch.equal(TraceField.load(tmp_path, release_points=torch.float32).ctrl_pts, field.ctrl_pts)
    torch.testing.assert_close(loaded.ctrl_conf, field.ctrl_conf)
    assert loaded.user_masks is not None and loaded.masks.all()
    assert torch.equal(loaded.images, field.images)
    assert loaded.transform == Preprocess.identity(32, 48)


def test_user_mask_pngs_win(tmp_path):
    random_field(n=2).save(tmp_path / "field.safetensors")
    (tmp_path / "masks").mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 48), 255, np.uint8)).save(tmp_path / "masks" / f"{i:03d}_user.png")
    assert TraceField.load(tmp_path).masks.all()
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / "001_user.png")
    with pytest.raises(TracefieldError, match="001_user.png: user mask is 10x10"):
        TraceField.load(tmp_path)


def test_unreadable_or_foreign_files(tmp_path):
    with pytest.raises(TracefieldError, match="not a scene folder .expected field.safetensors or output.pt inside.; make one with `tracefield infer"):
        TraceField.load(tmp_path)
    (tmp_path / "x.safetensors").write_bytes(b"nonsense")
    with pytest.raises(TracefieldError, match="not a readable field file"):
        TraceField.load(tmp_path / "x.safetensors")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "w.safetensors"), metadata={"format": "other"})
    with pytest.raises(TracefieldError, match="not a tracefield field"):
        TraceField.load(tmp_path / "w.safetensors")
    torch.save({"preds": [{"evil": Preprocess}]}, tmp_path / "output.pt")
    with pytest.raises(TracefieldError, match="not a readable Trace Anything output.pt"):
        TraceField.load(tmp_path / "output.pt")
    torch.save({"views": []}, tmp_path / "output.pt")  # no "preds": the reason names the missing key and its type
    with pytest.raises(TracefieldError, match=r"output.pt \(KeyError: 'preds'\); re-run inference"):
        TraceField.load(tmp_path / "output.pt")


def test_short_reason_never_repeats_the_type_name():
    assert short_reason(TypeError(), typed=True) == "TypeError"
    assert short_reason(KeyError("preds"), typed=True) == "KeyError: 'preds'"
    assert short_reason(ValueError("first line.\nsecond"), sentence=True) == "first line"
    assert short_reason(ValueError("x" * 50), limit=10) == "xxxxxxx..."


def test_compact_file_is_much_smaller_than_release(tmp_path):
    field = random_field(n=4, k=10, hw=(64, 96))
    ours = field.save(tmp_path / "field.safetensors").stat().st_size
    release = field.save_release_output(tmp_path / "output.pt").stat().st_size
    assert ours < 0.55 * release


def test_release_file_with_frames_of_different_sizes(tmp_path):
    data = random_field(n=2).release_output()
    data["preds"][1]["ctrl_pts3d"] = data["preds"][1]["ctrl_pts3d"][:, :16]
    torch.save(data, tmp_path / "output.pt")
    with pytest.raises(TracefieldError, match="output.pt: not a consistent Trace Anything output.pt"):
        TraceField.load(tmp_path / "output.pt")


MEASURE_READ = """
import re, sys
from pathlib import Path
import torch
from tracefield.field import TraceField

def mb(key):
    return int(re.search(key + r":\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024

Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts here
start = mb("VmRSS")
field = TraceField.load(sys.argv[1])
print(mb("VmRSS") - start, mb("VmHWM") - start)
"""


def test_reading_a_release_file_never_holds_it_twice(tmp_path):
    """Frames are copied out of the mapped file one by one and their pages handed back: the peak
    while reading stays near the field's own size (the release's file is twice that).
    Measured in a fresh process, whose memory holds nothing freed earlier to be reused."""
    import subprocess
    import sys

    field = random_field(n=24, k=10, hw=(128, 192))
    field.save_release_output(tmp_path / "output.pt")  # 102 MB; the field read from it: 57 MB
    run = subprocess.run([sys.executable, "-c", MEASURE_READ, str(tmp_path / "output.pt")], capture_output=True, text=True, check=True)
    held, peak = (float(v) for v in run.stdout.split())
    assert 40 < held < 80, run.stdout
    assert peak < held + 25, run.stdout  # without handing pages back: held + 100
