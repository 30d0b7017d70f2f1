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


# ---------------------------------------------------------------------------- joins against truth
GIVEN = [0.0, 0.25, 0.5, 0.75, 1.0]
PLACED = [0.1, 0.2, 0.55, 0.7, 0.9]  # where a network put the frames: never the time each was given


def retimed_scene():
    """The synthetic scene (known cameras, card and background both moving linearly), with each frame placed by the
    network at PLACED instead of its given time: every curve moves as in the scene and passes, at its frame's placed
    time, through the 3D point that frame's pixel shows. Confidences rise linearly, 1 + 10 t, on every curve."""
    from scene import make_scene

    scene = make_scene(frames=len(GIVEN), num_ctrl=4, background_drift=0.4)
    field = scene.field
    given, placed = torch.tensor(GIVEN), torch.tensor(PLACED)
    velocity = 3 * (field.ctrl_pts[:, 1] - field.ctrl_pts[:, 0])  # K = 4: control points at t = 0, 1/3, 2/3, 1
    field.ctrl_pts = field.ctrl_pts - (velocity * (placed - given).view(-1, 1, 1, 1))[:, None]
    field.ctrl_conf = (1 + 10 * torch.arange(4.0) / 3).view(1, 4, 1, 1).expand_as(field.ctrl_conf).clone()
    field.times, field.time_steps = placed, given
    return scene


def project(camera, points: np.ndarray) -> np.ndarray:
    """Pinhole projection of world points ``[..., 3]`` through a known camera -> pixels ``[..., 2]``."""
    cam = points @ camera.rotation.T + camera.translation
    k = camera.intrinsics
    return np.stack([k.focal * cam[..., 0] / cam[..., 2] + k.cx, k.focal * cam[..., 1] / cam[..., 2] + k.cy], axis=-1)


def test_each_frame_sees_its_points_at_the_time_the_network_placed_it(tmp_path):
    """points_at_own_time (cameras, depth, occlusion and the viewer start from it) is each curve at its frame's predicted
    time: projected through that frame's true camera, every pixel lands on itself. At the given time instead, the card
    is off by pixels. Also after a round trip through field.safetensors, and for the confidences (1 + 10 t)."""
    scene = retimed_scene()
    loaded = TraceField.load(scene.field.save(tmp_path / "field.safetensors", dtype=torch.float32))
    h, w = scene.field.hw
    ys, xs = np.mgrid[0:h, 0:w]
    for field in (scene.field, loaded):
        seen = field.points_at_own_time().numpy().astype(np.float64)
        for i, camera in enumerate(scene.cameras):
            uv = project(camera, seen[i])
            assert np.abs(uv[..., 0] - xs).max() < 0.02 and np.abs(uv[..., 1] - ys).max() < 0.02, i
        torch.testing.assert_close(field.points_at_own_time(frames=[3])[0], field.points_at_own_time()[3])
        expected_conf = (1 + 10 * torch.tensor(PLACED)).view(-1, 1, 1).expand(len(PLACED), h, w)
        torch.testing.assert_close(field.conf_at_own_time(), expected_conf, rtol=1e-5, atol=1e-4)


def release_file_by_hand(path, n=3, k=4, hw=(6, 10), seed=1):
    """An output.pt in the release's layout (MODEL.md), written without our writer: per view a predicted ``time`` [1],
    ``ctrl_pts3d`` [K, H, W, 3], ``ctrl_conf`` [K, H, W], ``fg_mask``; ``img`` [1, 3, H, W] in [-1, 1] and the given
    ``time_step``. Each curve is linear, P + V (t - placed), so it shows P at its frame's predicted time."""
    g = torch.Generator().manual_seed(seed)
    placed, given = [0.1, 0.45, 0.8][:n], [i / max(n - 1, 1) for i in range(n)]
    pixels = torch.randint(0, 256, (n, *hw, 3), dtype=torch.uint8, generator=g)
    seen, velocity = torch.randn(n, *hw, 3, generator=g), torch.randn(n, *hw, 3, generator=g)
    xi = torch.arange(k, dtype=torch.float32) / (k - 1)  # K = 4: one Bezier segment, control points at t = k / 3
    preds, views = [], []
    for i in range(n):
        ctrl = seen[i] + velocity[i] * (xi - placed[i]).view(k, 1, 1, 1)
        preds.append({"time": torch.tensor([placed[i]]), "ctrl_pts3d": ctrl, "ctrl_conf": torch.full((k, *hw), 3.0),
                      "fg_mask": torch.zeros(hw, dtype=torch.bool)})
        views.append({"img": pixels[i].permute(2, 0, 1)[None].float() / 127.5 - 1, "time_step": given[i]})
    torch.save({"preds": preds, "views": views}, path)
    return placed, given, pixels, seen


def test_a_release_file_keeps_the_predicted_and_the_given_times_apart(tmp_path):
    """The release's ``time`` is where the network placed a view, ``time_step`` the time it was given: read back as such,
    the points each frame saw (P, by construction) are the curves at the predicted times, and the frames are the pixels."""
    placed, given, pixels, seen = release_file_by_hand(tmp_path / "output.pt")
    loaded = TraceField.load(tmp_path / "output.pt", release_points=torch.float32)
    torch.testing.assert_close(loaded.times, torch.tensor(placed))
    torch.testing.assert_close(loaded.time_steps, torch.tensor(given))
    assert torch.equal(loaded.images, pixels) and loaded.hw == (6, 10)
    torch.testing.assert_close(loaded.points_at_own_time(), seen, rtol=1e-5, atol=1e-5)


def test_the_release_file_we_write_says_where_the_network_placed_each_view(tmp_path):
    """Read with plain torch.load, as the release's own tools would: preds[i]["time"] is the predicted time (not the
    given one), views[i] the given time_step and the frame in [-1, 1]."""
    field = random_field(n=3)
    data = torch.load(field.save_release_output(tmp_path / "output.pt"), weights_only=True)
    for i, (pred, view) in enumerate(zip(data["preds"], data["views"])):
        assert pred["time"].shape == (1,) and pred["time"].item() == pytest.approx(field.times[i].item())
        assert view["time_step"] == pytest.approx(field.time_steps[i].item())
        torch.testing.assert_close(view["img"][0], field.images[i].permute(2, 0, 1).float() / 127.5 - 1)


def test_a_scene_folder_with_both_files_opens_ours(tmp_path):
    """`infer --output-pt` leaves field.safetensors and output.pt side by side. Only ours knows the way back to the video
    (720x1280 frames at 30 fps, their names) and which network made it: a folder, and user masks beside a file, open it."""
    field = random_field(n=2)
    field.model = {"config": "configs/eval.yaml", "untrained": True}
    field.save(tmp_path / "field.safetensors")
    field.save_release_output(tmp_path / "output.pt")
    opened = TraceField.load(tmp_path)
    assert opened.transform.original_hw == (720, 1280) and opened.frames.fps == 30.0
    assert opened.frames.names == ["clip.mp4#0", "clip.mp4#1"]
    assert TraceField.caveat_of(tmp_path) is not None  # random weights: said from the header of ours
    assert TraceField.load(tmp_path / "output.pt").transform == Preprocess.identity(32, 48)  # the file asked for
    (tmp_path / "masks").mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 48), 255, np.uint8)).save(tmp_path / "masks" / f"{i:03d}_user.png")
    assert TraceField.load(tmp_path / "field.safetensors").masks.all()  # the user's masks beside the file, not inside it
