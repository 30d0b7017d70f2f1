"""The running viewer without a browser: binding, scene nodes, picks, exports, recordings, bad input."""

from __future__ import annotations

import base64
import io
import logging
import re
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import free_port, wait_until
from scene import FOCAL, PLANE, make_scene
from tracefield.cli import main
from tracefield.errors import TracefieldError
from tracefield.export.formats.ati import read_ati
from viewer.app import Viewer, ViewerOptions, open_field, ssh_hint
from viewer.export import export_picks
from viewer.notices import guarded


@pytest.fixture()
def scene_dir(tmp_path) -> Path:
    folder = tmp_path / "card"
    folder.mkdir()
    make_scene(frames=5, num_ctrl=7, height=90, width=160).field.save(folder / "field.safetensors")
    return folder


@pytest.fixture()
def viewer(scene_dir):
    field, folder = open_field(scene_dir)
    running = Viewer(field, folder, ViewerOptions(port=free_port(), t_step=0.125))
    assert running.wait_idle(60)
    yield running
    running.stop()


def test_binds_loopback_and_tells_how_to_tunnel(scene_dir, caplog):
    port = free_port()
    with socket.socket() as busy:  # the asked port is taken: the viewer moves on and says so
        busy.bind(("127.0.0.1", port))
        busy.listen()
        field, folder = open_field(scene_dir)
        with caplog.at_level(logging.WARNING, logger="viewer"):
            running = Viewer(field, folder, ViewerOptions(port=port, frustums=False, trajectory_frames="none"))
    try:
        taken = running.server.get_port()
        assert taken != port and f"port {port} was busy" in caplog.text and str(taken) in caplog.text
        socket.create_connection(("127.0.0.1", taken), timeout=2).close()
        address = _outward_address()
        if address is not None:
            with pytest.raises(OSError):
                socket.create_connection((address, taken), timeout=2).close()
        assert running.url() == f"http://localhost:{taken}"
        assert re.fullmatch(rf"ssh -N -L {taken}:localhost:{taken} \S+@\S+", ssh_hint(taken))
    finally:
        running.stop()


def _outward_address():
    try:
        address = socket.gethostbyname(socket.gethostname())
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_time_moves_the_points_and_the_trails(viewer):
    scene = viewer.scene
    viewer.controls.set_time(0.8)
    assert viewer.wait_idle(30)
    expected = scene.foreground_at(0.8, viewer.state.fg_drop)
    assert viewer.display.points.shown_frame == expected.frame == scene.nearest_frame(0.8)
    assert np.array_equal(viewer.display.points.shown_foreground().points, expected.points)
    shown = [node.visible for node in viewer.display.trajectories.nodes]
    assert shown == [t <= 0.8 + 1e-9 for t in viewer.times[1:]]  # trails up to now
    assert "t = 0.800" in viewer.controls.outputs.status.content
    viewer.state.show_trajectories = False
    viewer.controls.set_time(0.9)
    assert viewer.wait_idle(30)
    assert not any(node.visible for node in viewer.display.trajectories.nodes) and not viewer.display.trajectories.head.visible


def test_frame_steps_reuse_each_frames_nodes_until_the_filter_changes(viewer):
    scene, points = viewer.scene, viewer.display.points
    for frame in (1, 2, 1):
        viewer.controls.set_time(float(scene.times[frame]))
        assert viewer.wait_idle(30)
    first = points.frames.node(1)
    assert points.shown_foreground() is first and not points.frames.node(2).visible  # one node per frame, one shown
    assert np.array_equal(first.points, scene.foreground_at(float(scene.times[1]), viewer.state.fg_drop).points)
    assert viewer.display.trajectories.head is None or not viewer.display.trajectories.head.visible  # on the grid: no head
    viewer.state.fg_drop = 60.0
    viewer.redraw("filter")
    viewer.controls.set_time(float(scene.times[2]))
    viewer.controls.set_time(float(scene.times[1]))
    assert viewer.wait_idle(30)
    again = points.shown_foreground()
    assert again is not first and np.array_equal(again.points, scene.foreground_at(float(scene.times[1]), 60.0).points)
    viewer.controls.set_time(float(scene.times[1] + scene.times[2]) / 2)  # between frames: the curves at that time
    assert viewer.wait_idle(30)
    assert points.shown_foreground() is points.between and not again.visible


def test_picks_add_trajectories_and_export_them(viewer):
    base = len(viewer.display.trajectories.trajectories)
    field = viewer.scene.field
    ys, xs = np.nonzero(field.masks[0].numpy())
    viewer.clicked_pixel(0, float(xs[0]), float(ys[0]))
    assert viewer.wait_idle(30)
    assert len(viewer.display.trajectories.trajectories) == base + 1
    viewer.state.click_mode = "whole object"
    viewer.clicked_pixel(0, float(xs[0]), float(ys[0]))
    assert viewer.wait_idle(30)
    assert len(viewer.state.picks) == 2 and len(viewer.state.picks[1].pixels) == int(field.masks[0].sum())
    with pytest.raises(TracefieldError, match="outside frame 0"):  # the frustum's click handler tells the browser
        viewer.clicked_pixel(0, 500.0, 3.0)
    assert len(viewer.state.picks) == 2
    name, archive = export_picks(field, viewer.folder, viewer.state.picks, 0, "ati", "a card slides")
    files = zipfile.ZipFile(io.BytesIO(archive)).namelist()
    assert name.endswith(".zip") and any(f.endswith(".pth") for f in files) and any(f.endswith("_tracks.mp4") for f in files)
    assert viewer.folder.exports.is_dir()
    stem = name[: -len(".zip")]
    xy, _ = read_ati(viewer.folder.exports / stem / f"{stem}.pth")
    assert xs[0] != ys[0] and len(xy) == 1 + 8 + 6  # the pixel, the picked object's tracks, the camera tracks
    np.testing.assert_allclose(xy[0, 0], field.transform.to_original([xs[0], ys[0]]) + 0.5, atol=1e-3)  # starts at the pick, x and y as picked
    viewer.state.clear_picks()
    viewer.redraw("picks")
    assert viewer.wait_idle(30)
    assert len(viewer.display.trajectories.trajectories) == base


def test_record_writes_a_recording_and_a_page_that_embeds_it(viewer):
    viser_path, html_path = viewer.record()
    recording = viser_path.read_bytes()
    html = html_path.read_text()
    embedded = re.search(r'window.__VISER_EMBED_DATA__="([A-Za-z0-9+/=]+)"', html).group(1)
    assert base64.b64decode(embedded) == recording and len(recording) > 1000
    assert viser_path.parent == viewer.folder.recordings


def test_frustums_come_from_the_field(scene_dir):
    field, folder = open_field(scene_dir)
    running = Viewer(field, folder, ViewerOptions(port=free_port(), trajectory_frames="none"))
    try:
        assert running.wait_idle(60)
        assert len(running.display.frustums.nodes) == field.num_frames
        centres = np.stack([running.display.frustums.geometry[i].centre for i in range(field.num_frames)])
        assert centres[-1][0] - centres[0][0] == pytest.approx(0.5, abs=0.05)  # the true camera slides 0.5 right
    finally:
        running.stop()


def test_gui_failures_become_notifications(caplog):
    class Event:
        client = None

    @guarded
    def broken(_):
        raise RuntimeError("boom")

    @guarded
    def refused(_):
        raise TracefieldError("not like that")

    broken(Event())
    refused(Event())
    assert "RuntimeError: boom" in caplog.text and "not like that" in caplog.text


def test_bad_inputs_get_clear_messages(tmp_path, scene_dir, capsys):
    assert main(["view", str(tmp_path / "nothing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["view", str(scene_dir), "--t-step", "0"]) == 2
    masks = scene_dir / "masks"
    masks.mkdir()
    for i in range(5):
        from PIL import Image

        Image.fromarray(np.zeros((10, 10), np.uint8)).save(masks / f"{i:03d}_user.png")
    with pytest.raises(TracefieldError, match="000_user.png: user mask is 10x10"):
        open_field(scene_dir)


def test_release_files_with_extra_keys_and_no_masks(tmp_path):
    field = make_scene(frames=3, num_ctrl=4).field
    data = field.release_output()
    for pred in data["preds"]:
        pred["track_pts3d"] = torch.zeros(3, 2, 2, 3)  # the release's evaluated tracks
        del pred["fg_mask"]  # and an older file without masks
    torch.save(data, tmp_path / "output.pt")
    loaded, folder = open_field(tmp_path / "output.pt")
    assert folder.root == tmp_path and loaded.fg_masks.shape == field.fg_masks.shape
    assert (loaded.fg_masks == field.fg_masks).float().mean() > 0.9  # the automatic masks find the moving card


@pytest.mark.parametrize("case", ["no moving pixels", "one frame"])
def test_degenerate_scenes_still_serve(tmp_path, case):
    field = make_scene(frames=3, num_ctrl=4).field
    if case == "no moving pixels":
        field.fg_masks[:] = False
    else:
        for name in ("ctrl_pts", "ctrl_conf", "images", "fg_masks"):
            setattr(field, name, getattr(field, name)[:1])
        field.times, field.time_steps = torch.zeros(1), torch.zeros(1)
    field.save(tmp_path / "field.safetensors")
    loaded, folder = open_field(tmp_path)
    running = Viewer(loaded, folder, ViewerOptions(port=free_port()))
    try:
        assert running.wait_idle(60)
        running.controls.set_time(0.7)
        running.state.click_mode = "whole object"
        running.clicked_pixel(0, 10.0, 10.0)  # no object there: the pixel alone
        assert running.wait_idle(30)
        assert len(running.state.picks) == 1 and len(running.state.picks[0].pixels) == 1
        moving = int(loaded.masks.sum())
        assert len(running.display.trajectories.trajectories) == 1 + min(moving, 1000 * loaded.num_frames)
        assert len(running.display.points.shown_foreground().points) == (0 if case == "no moving pixels" else len(running.scene.foreground_at(0.7, 10)))
    finally:
        running.stop()


def test_exposed_host_is_warned_about(scene_dir, caplog):
    field, folder = open_field(scene_dir)
    with caplog.at_level(logging.WARNING, logger="viewer"):
        running = Viewer(field, folder, ViewerOptions(host="0.0.0.0", port=free_port(), frustums=False, trajectory_frames="none"))
    running.stop()
    assert "no authentication" in caplog.text


def test_play_advances_time_and_stops_at_the_end_without_loop(viewer):
    viewer.controls.fps.value = 60
    viewer.controls.loop.value = False
    viewer.controls.time.value = 0.5
    viewer.state.playing = True
    assert wait_until(lambda: not viewer.state.playing) and viewer.state.t == pytest.approx(1.0)
    assert viewer.wait_idle(30)
    assert viewer.display.points.shown_frame == viewer.scene.num_frames - 1


def test_scene_scale_sets_sizes_camera_and_nodes(viewer):
    scale = viewer.scene.scale
    assert viewer.display.points.shown_foreground().point_size == pytest.approx(viewer.state.fg_size * scale.footprint)
    camera = viewer.server.initial_camera
    assert np.allclose(camera.look_at, scale.centre, atol=1e-6)
    assert 0.2 * scale.depth < np.linalg.norm(np.asarray(camera.position) - scale.centre) < 3 * scale.depth
    assert len(viewer.display.trajectories.nodes) == len(viewer.times) - 1  # one line-segment node per time step
    assert viewer.controls.outputs.legend.visible  # the colour bar of the time colouring


def test_a_pixel_stride_widens_the_points_to_close_the_gaps(scene_dir):
    """With --ds 2 the points sit two pixels apart, so both clouds start twice the default 1.5 pixels wide: 3 pixel
    footprints at the background plane's depth (depth / focal of the 90x160 scene), or holes open between them."""
    field, folder = open_field(scene_dir)
    running = Viewer(field, folder, ViewerOptions(port=free_port(), ds=2, frustums=False, trajectory_frames="none"))
    try:
        assert running.wait_idle(60)
        footprint = PLANE[0] / (FOCAL * 160 / 128)
        points = running.display.points
        assert points.background.point_size == pytest.approx(3.0 * footprint, rel=0.2)
        assert points.shown_foreground().point_size == pytest.approx(3.0 * footprint, rel=0.2)
    finally:
        running.stop()
