"""Where the export's parts join, against truth: the source video, the pictures, retiming, camera paths, the npz record.

Each test checks what a user gets (an image, a video frame, a camera, a number in a file)
against something independent of our writers and drawing code: the bundled clip's PNG
frames and ground truth (tests/truth_field.py), pinhole geometry worked out by hand,
matplotlib's colormap, or a value computed here from the documented rule.
"""

from __future__ import annotations

from dataclasses import replace

import cv2
import imageio.v2 as iio
import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from tracefield.export import ExportOptions, run_export
from tracefield.export.canvas import Placement
from tracefield.export.draw import background_frames, draw_tracks
from tracefield.export.formats.ati import read_ati
from tracefield.export.formats.npz import read_npz
from tracefield.export.formats.worldcanvas import read_worldcanvas
from tracefield.export.selection import SelectionOptions
from tracefield.export.timing import Timing, clip_times
from tracefield.export.tracks import CameraOptions, camera_function
from tracefield.field import FrameInfo
from tracefield.geometry import Intrinsics, estimate_intrinsics, estimate_poses, load_camera_path
from tracefield.io.preprocess import Preprocess

from scene import FOCAL, make_scene, true_camera
from test_export_consumers import clip_frame, file_pixels, seed_pixels
from truth_field import CLIP, SHRINK, bundled_truth

W0, H0 = 448, 256  # the bundled frames
VIDEO_W, VIDEO_H = 640, 368  # the 832x480 canvas shrunk to the videos' 640 columns (rows rounded down to even)


@pytest.fixture(scope="module")
def truth():
    return bundled_truth()


def clip_png(i: int) -> np.ndarray:
    return np.asarray(Image.open(CLIP / f"{i:03d}.png").convert("RGB"))


def on_canvas(image: np.ndarray, size=(832, 480)) -> np.ndarray:
    """A 448x256 clip frame as the 832x480 canvas shows it (cover: 840x480, 4 columns cut each side), then at ``size``."""
    wide = Image.fromarray(image).resize((840, 480), Image.BILINEAR).crop((4, 0, 836, 480))
    return np.asarray(wide if size == (832, 480) else wide.resize(size, Image.BILINEAR)).astype(np.float64)


# --------------------------------------------------------------------------- the source frame


@pytest.mark.parametrize("source", ["folder", "video", "gone"])
def test_first_image_is_the_frame_picked_on(truth, tmp_path, source):
    """Tracks picked on frame 5 start from frame 5's image: the clip's 005.png re-read from its folder, the video frame
    that frame was traced from (a field traced from every other frame of a video: index 10, not 5 nor 11), or, with
    the source gone, the network's frame 5 warped back to the clip's size."""
    field, limit = truth.field, 0.0
    if source == "video":
        video = tmp_path / "clip.mp4"
        frames = []
        for i in range(6):  # even frames: the clip; odd ones: its negative, so a neighbour is plainly wrong (the rest is not read)
            frames += [clip_png(i), 255 - clip_png(i)]
        iio.mimwrite(video, frames, format="FFMPEG", fps=32, codec="libx264", pixelformat="yuv444p",
                     ffmpeg_params=["-crf", "0", "-preset", "ultrafast"], macro_block_size=1)
        info = FrameInfo(source=str(video), names=[f"clip.mp4#{2 * i}" for i in range(16)], indices=[2 * i for i in range(16)], fps=32.0)
        field, limit = replace(field, frames=info), 1.5  # lossless but for the colour conversion
    if source == "gone":
        field, limit = replace(field, frames=replace(field.frames, source=str(tmp_path / "moved"))), 5.0  # rendered at half size
    run_export(field, ExportOptions(format="ati", output=tmp_path / "out", name="clip", pictures=False,
                                    selection=SelectionOptions(strategy="grid", region="all", grid_step=40, background=0, frame=5)))
    written = np.asarray(Image.open(tmp_path / "out" / "clip.png").convert("RGB")).astype(np.float64)
    assert written.shape == (H0, W0, 3)
    error = np.abs(written - clip_png(5)).mean()
    assert error <= limit, error
    neighbours = [np.abs(written - clip_png(i)).mean() for i in (0, 4, 6)]
    assert min(neighbours) > 1.8 * max(error, 1.0), neighbours


# --------------------------------------------------------------------------- pictures


@pytest.fixture(scope="module")
def pictures(truth, tmp_path_factory):
    """A WorldCanvas export (832x480 canvas, filmed camera: some tracks leave the canvas) with its pictures."""
    out = tmp_path_factory.mktemp("pictures")
    selection = SelectionOptions(strategy="grid", region="all", grid_step=12, background=0, max_tracks=1000)
    result = run_export(truth.field, ExportOptions(format="worldcanvas", output=out, name="clip", selection=selection,
                                                   camera=CameraOptions(mode="filmed"), captions={1: "a ball rolls"}))
    keep = result.conditions.visible[0]
    xs, ys = seed_pixels(truth, result, keep)
    true_xy = np.stack([file_pixels("worldcanvas", truth.project(truth.tracks[0, i, ys, xs], i)) for i in range(16)])  # [16, N, 2]
    true_visible = np.stack([truth.visible[0, i, ys, xs] for i in range(16)])
    return {"out": out, "true_xy": true_xy, "true_visible": true_visible,
            "plain": iio.imread(out / "clip.png").astype(int), "drawn": iio.imread(out / "clip_tracks.png").astype(int),
            "video": iio.mimread(out / "clip_tracks.mp4")}


def test_start_dots_sit_on_the_picked_pixels(pictures):
    """<name>_tracks.png marks each track's start, the picked pixel, with a white dot; its end gets an arrow head, not a dot."""
    drawn, true_xy = pictures["drawn"], pictures["true_xy"]
    start = np.round(true_xy[0] - 0.5).astype(int)  # file pixels -> the pixel whose centre it is
    assert (drawn[start[:, 1], start[:, 0]].min(axis=-1) > 230).all()
    end = true_xy[-1]
    travelled = np.linalg.norm(end - true_xy[0], axis=-1)
    apart = np.linalg.norm(end[:, None] - true_xy[0][None], axis=-1).min(axis=1) > 12  # no start dot near this end
    lone = (travelled > 12) & apart & pictures["true_visible"][-1] & (end >= 12).all(axis=1) & (end < [820, 468]).all(axis=1)
    assert lone.sum() >= 3
    at_end = np.round(end[lone] - 0.5).astype(int)
    assert (drawn[at_end[:, 1], at_end[:, 0]].min(axis=-1) < 200).all()


def test_pictures_draw_only_along_the_true_tracks(pictures):
    """Every pixel the still changes lies near a track's true path (its dots and arrow heads included): nothing is
    drawn toward where a track left the canvas (WorldCanvas' [-1, -1] markers, top left) or anywhere else."""
    true_xy = pictures["true_xy"] - 0.5  # file pixels -> the pixel centres drawn at
    near = np.zeros((480, 832), np.uint8)
    for n in range(true_xy.shape[1]):
        cv2.polylines(near, [np.round(true_xy[:, n] * 16).astype(np.int32)], False, 1, 1, cv2.LINE_8, 4)
    near = cv2.dilate(near, np.ones((33, 33), np.uint8)).astype(bool)  # arrow heads reach 11 pixels, dots 6
    changed = np.abs(pictures["drawn"] - pictures["plain"]).max(axis=-1) > 0
    assert changed.sum() > 5000  # the tracks were drawn
    assert not (changed & ~near).any(), np.argwhere(changed & ~near)[:5]
    stored = read_worldcanvas(pictures["out"] / "clip.json")
    marker = (stored.xy == -1).all(axis=-1)
    assert (stored.visible[:-1] & marker[1:]).any()  # (some tracks leave the canvas right after a visible frame)


def test_video_dots_follow_the_true_points(pictures):
    """<name>_tracks.mp4 is the canvas shrunk to 640 wide; each frame has a white dot on every visible point, at the
    true point in the video's pixels, at clip frames 0, 3, ..., 15 (output frames 0, 16, ..., 80)."""
    video, true_xy, true_visible = pictures["video"], pictures["true_xy"], pictures["true_visible"]
    assert len(video) == 81 and video[0].shape == (VIDEO_H, VIDEO_W, 3)
    scale = VIDEO_W / 832
    for k in (0, 16, 32, 48, 64, 80):
        i = clip_frame(k, 81, 0.0, 1.0)
        at = true_xy[i] * scale - 0.5
        shown = true_visible[i] & (at >= 2).all(axis=1) & (at < [VIDEO_W - 2, VIDEO_H - 2]).all(axis=1)
        assert shown.sum() >= 10
        frame = video[k].astype(int).min(axis=-1)
        x, y = np.round(at[shown]).astype(int).T
        brightest = np.max([frame[y + dy, x + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
        assert np.mean(brightest > 180) > 0.8, (k, brightest)  # (the occlusion test errs on the hidden side at edges)


def test_video_background_is_the_nearest_clip_frame(pictures):
    """Output frame k shows the clip frame nearest its time (k * 15 / 80), not the one before it."""
    video = pictures["video"]
    later = [k for k in range(81) if 0.55 < k * 15 / 80 % 1 < 0.95]  # between clip frames, nearer the later one
    for k in later[::3]:
        t = k * 15 / 80
        nearest, before = int(round(t)), int(np.floor(t))
        frame = video[k].astype(np.float64)
        error = {i: np.abs(frame - on_canvas(clip_png(i), (VIDEO_W, VIDEO_H))).mean() for i in (nearest, before)}
        assert error[nearest] < 0.8 * error[before], (k, error)


def test_video_background_is_the_frame_the_network_placed_nearest():
    """Frame j's pixels sit on their curves at the time the network placed frame j (``times``), and the trails are the
    curves at the clip times, so the picture behind them is the frame placed nearest, not the frame given nearest
    (``time_steps``; they differ by the network's timing error). Frames filled with 40 j tell which one is shown."""
    field = make_scene().field  # given at 0, .25, .5, .75, 1
    field = replace(field, times=torch.tensor([0.0, 0.1, 0.2, 0.3, 1.0]),
                    images=(40 * torch.arange(5, dtype=torch.uint8))[:, None, None, None].expand_as(field.images).contiguous())
    placement = Placement.identity(field.hw[1], field.hw[0])
    backgrounds = background_frames(field, placement, np.array([0.0, 0.12, 0.28, 0.45, 0.7, 1.0]), 1.0)
    shown = [round(float(backgrounds(k).mean()) / 40) for k in range(6)]
    assert shown == [0, 1, 3, 3, 4, 4]


def test_track_colours_are_matplotlibs_turbo_by_time():
    """Trails are coloured by time with matplotlib's turbo (blue early, red late), in RGB order."""
    frames = 81
    xy = np.stack([np.linspace(20, 780, frames), np.full(frames, 450.0)], axis=-1)[:, None]  # one track, left to right
    image = draw_tracks(np.zeros((900, 800, 3), np.uint8), xy, np.ones((frames, 1), bool))  # (lines 3 pixels wide)
    turbo = matplotlib.colormaps["turbo"]
    for k in (5, 20, 40, 60, 75):
        x = int(round(xy[k, 0, 0] + 4.75))  # the middle of segment k -> k + 1
        u = 0.05 + 0.9 * k / (frames - 1)  # turbo's 0.05..0.95 over the clip (in 32 steps: give or take 1/32)
        nearby = np.asarray(turbo(np.linspace(u - 0.03, u + 0.03, 13))[:, :3]) * 255
        assert np.abs(nearby - image[450, x]).max(axis=1).min() < 12, (k, image[450, x], nearby[6])


# --------------------------------------------------------------------------- retiming


def test_real_time_retiming_starts_at_the_first_image():
    """With --speed, output second s shows clip second speed * s after --start: hand-computed clip times."""
    field = make_scene().field  # 5 frames at 10 fps: 0.4 s
    times = clip_times(Timing(frames=24, fps=24, start=0.25, speed=2.0), field)
    assert times[0] == 0.25
    np.testing.assert_allclose(times[:4], 0.25 + np.arange(4) / 24 * 2 / 0.4)
    assert times[-1] == 1.0
    short = clip_times(Timing(frames=24, fps=24, start=0.25, end=0.5, speed=2.0), field)  # holds still at --end
    np.testing.assert_allclose(short[:2], times[:2])
    assert short.max() == short[-1] == 0.5
    strided = replace(field, frames=replace(field.frames, indices=[0, 3, 6, 9, 12], fps=30.0))  # every 3rd frame of a 30 fps video
    np.testing.assert_allclose(clip_times(Timing(frames=5, fps=10), strided), np.linspace(0, 1, 5))  # (fill ignores the rate)
    times = clip_times(Timing(frames=5, fps=10, speed=1.0), strided)  # the clip spans 12 / 30 = 0.4 s
    np.testing.assert_allclose(times, [0.0, 0.25, 0.5, 0.75, 1.0])
    times = clip_times(Timing(frames=5, fps=10, speed=1.0, source_fps=15.0), strided)  # --source-fps wins: 0.8 s
    np.testing.assert_allclose(times, [0.0, 0.125, 0.25, 0.375, 0.5])


def test_speed_from_a_later_frame_follows_the_truth(truth, tmp_path):
    """ATI at --speed 1 from frame 5: output frame k (24 fps) shows clip time 5/15 + k/24 s of a 15/16 s clip, i.e.
    clip frame 5 + 2k/3; the tracks are the true points through the true cameras there, then hold still at the end."""
    selection = SelectionOptions(strategy="grid", region="all", grid_step=16, background=0, frame=5)
    result = run_export(truth.field, ExportOptions(format="ati", output=tmp_path, name="clip", pictures=False, speed=1.0,
                                                   selection=selection, camera=CameraOptions(mode="filmed")))
    xs, ys = seed_pixels(truth, result, result.conditions.visible[0])
    xy, _ = read_ati(tmp_path / "clip.pth")
    xy = xy.transpose(1, 0, 2)
    for k in range(0, 16, 3):
        i = 5 + 2 * k // 3
        np.testing.assert_allclose(xy[k], truth.project(truth.tracks[5, i, ys, xs], i) + 0.5, atol=0.5)
    np.testing.assert_allclose(xy[15:], np.broadcast_to(xy[15], xy[15:].shape), atol=1e-3)


# --------------------------------------------------------------------------- camera paths


INTRINSICS = Intrinsics(100.0, 50.0, 40.0)
DEPTH = 4.0


def angle_of(rotation: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(rotation).magnitude()))


@pytest.mark.parametrize("move, expected", [("pan", (50.0 - 100 * np.tan(np.radians(10)), 40.0)),
                                            ("tilt", (50.0, 40.0 + 100 * np.tan(np.radians(10))))])
def test_pan_turns_sideways_and_tilt_up_in_place(move, expected):
    """'pan: 10' turns the camera 10 degrees right about the vertical axis (what was straight ahead moves left by
    f tan 10 on its row); 'tilt: 10' turns it up about the horizontal one (it moves down its column). In place."""
    camera = load_camera_path({move: {"degrees": 10}}, INTRINSICS, DEPTH).at(1.0)
    np.testing.assert_allclose(camera.centre, 0.0, atol=1e-12)
    pixel, depth = camera.project(np.array([0.0, 0.0, DEPTH]))
    np.testing.assert_allclose(pixel, expected, atol=1e-9)
    assert depth == pytest.approx(DEPTH * np.cos(np.radians(10)))


def test_dolly_after_an_orbit_moves_along_the_view():
    """Orbit 30 then dolly 0.25: the camera still faces the scene centre and is a quarter of the depth closer to it."""
    path = load_camera_path({"orbit": {"degrees": 30}, "dolly": {"amount": 0.25}}, INTRINSICS, DEPTH)
    for t, closer in ((0.5, 0.125), (1.0, 0.25)):
        camera = path.at(t)
        pixel, depth = camera.project(np.array([0.0, 0.0, DEPTH]))
        np.testing.assert_allclose(pixel, [50.0, 40.0], atol=1e-9)
        assert depth == pytest.approx(DEPTH * (1 - closer))
        assert np.linalg.norm(camera.centre - [0.0, 0.0, DEPTH]) == pytest.approx(DEPTH * (1 - closer))


@pytest.mark.parametrize("span", [(0.0, 0.5), (0.2, 0.6)])
def test_camera_path_runs_over_the_exported_span(tmp_path, span):
    """A path's moves ramp over the exported span: orbit 30 has turned 0 at --start, 15 halfway, 30 at --end."""
    path = tmp_path / "orbit.yaml"
    path.write_text("orbit: {degrees: 30}\n")
    camera_at, _, seed = camera_function(make_scene().field, CameraOptions(mode=str(path)), 0, span)
    start, end = span
    for t, degrees in ((start, 0.0), ((start + end) / 2, 15.0), (end, 30.0), (1.0, 30.0)):
        assert angle_of(camera_at(t).rotation @ seed.rotation.T) == pytest.approx(degrees, abs=1e-6)


def test_orbit_turns_around_the_scenes_median_depth(truth, tmp_path):
    """'orbit' pivots on the point straight ahead at the median depth of what frame 0 sees (the true depth map): it
    stays at the principal point while the camera moves right around it at that distance."""
    path = tmp_path / "orbit.yaml"
    path.write_text("orbit: {degrees: 30}\n")
    camera_at, intrinsics, _ = camera_function(truth.field, CameraOptions(mode=str(path)), 0, (0.0, 1.0))
    depth = float(np.median(truth.depth[0]))
    assert abs(np.mean(truth.depth[0]) - depth) > 0.05 * depth  # (the mean would be another pivot)
    for t in (0.5, 1.0):
        pixel, _ = camera_at(t).project(np.array([0.0, 0.0, depth]))
        np.testing.assert_allclose(pixel, [intrinsics.cx, intrinsics.cy], atol=0.05)
    turn = np.radians(30)
    np.testing.assert_allclose(camera_at(1.0).centre, [depth * np.sin(turn), 0.0, depth * (1 - np.cos(turn))], rtol=1e-3, atol=1e-3)


def test_camera_path_from_a_later_frame_starts_at_its_true_camera(truth, tmp_path):
    """From frame 6 a path starts at the true camera of frame 6 and pans in place there: the point frame 6 sees at
    its principal point moves left by f tan 10 after 'pan: 10', and the camera's centre does not move."""
    path = tmp_path / "pan.yaml"
    path.write_text("pan: {degrees: 10}\n")
    camera_at, intrinsics, _ = camera_function(truth.field, CameraOptions(mode=str(path)), 6, (0.4, 1.0))
    pose = truth.poses[6]
    true_centre = -pose[:3, :3].T @ pose[:3, 3]
    ahead = true_centre + pose[:3, :3].T @ np.array([0.0, 0.0, 2.0])  # straight ahead of the true camera 6
    f, cx, cy = intrinsics.focal, intrinsics.cx, intrinsics.cy
    np.testing.assert_allclose(camera_at(0.4).project(ahead)[0], [cx, cy], atol=0.05)
    np.testing.assert_allclose(camera_at(1.0).centre, true_centre, atol=2e-3)
    np.testing.assert_allclose(camera_at(1.0).project(ahead)[0], [cx - f * np.tan(np.radians(10)), cy], atol=0.1)


# --------------------------------------------------------------------------- the npz record and calibration


def test_npz_records_the_true_camera_in_original_pixels(truth, tmp_path):
    """The npz's focal and principal point are the clip's true ones in its 448x256 pixels (the field is at half size),
    and redoing the projection from them lands on the file's own frame-0 positions."""
    run_export(truth.field, ExportOptions(format="npz", output=tmp_path, name="clip", pictures=False,
                                          selection=SelectionOptions(strategy="grid", region="all", grid_step=16, background=0)))
    data = read_npz(tmp_path / "clip.npz")
    assert float(data["focal"]) == pytest.approx(truth.intrinsics[0, 0] * SHRINK, rel=5e-3)
    np.testing.assert_allclose(data["principal_point"], [(W0 - 1) / 2, (H0 - 1) / 2])
    points = data["points3d"][0].astype(np.float64)
    redone = float(data["focal"]) * points[:, :2] / points[:, 2:] + data["principal_point"] + 0.5
    np.testing.assert_allclose(redone, data["xy"][0], atol=0.5)


@pytest.mark.parametrize("transform", [Preprocess((144, 256), False, (72, 128), (72, 128)), Preprocess((256, 144), True, (72, 128), (72, 128))])
def test_focal_of_a_resized_or_portrait_clip_is_in_its_pixels(transform, tmp_path):
    """The scene's focal length is 110 of the network's 128x72 pixels; its clip is twice that size (a portrait one turned
    to landscape first), so the focal is 220 clip pixels: what the npz records, and what --focal takes (the true focal
    then puts the field's own projection exactly on the picks)."""
    field = make_scene(transform=transform).field
    selection = SelectionOptions(strategy="grid", region="background", grid_step=16, background=0)
    run_export(field, ExportOptions(format="npz", output=tmp_path / "a", name="clip", pictures=False, selection=selection))
    assert float(read_npz(tmp_path / "a" / "clip.npz")["focal"]) == pytest.approx(2 * FOCAL, rel=1e-3)
    given = run_export(field, ExportOptions(format="npz", output=tmp_path / "b", name="clip", pictures=False, selection=selection,
                                            camera=CameraOptions(focal=2 * FOCAL)))
    assert np.abs(given.tracks.residual).max() < 0.05


def test_filmed_camera_between_frames_follows_the_true_motion(tmp_path):
    """The scene's camera slides and turns uniformly; between its 5 frames the filmed camera is interpolated, so a still
    background point lands where the true camera of that moment puts it (output frame k of 9 is at clip time k/8)."""
    scene = make_scene()
    result = run_export(scene.field, ExportOptions(format="npz", output=tmp_path, name="clip", pictures=False, frames=9, fps=10,
                                                   selection=SelectionOptions(strategy="grid", region="background", grid_step=8, background=0),
                                                   camera=CameraOptions(mode="filmed", occlusion=False)))
    tracks = result.tracks
    truth = np.stack([true_camera(k, 9).project(tracks.points[k])[0] for k in range(9)])
    assert np.abs(tracks.xy - truth).max() < 0.3
    assert np.abs(truth[1::2] - truth[0:-1:2]).mean() > 1  # (between frames the view really differs from the frame before)


def test_calibration_trusts_the_confident_pixels():
    """Half the pixels unconfident and wrong (pushed sideways, flying points): the focal length and the filmed poses
    still come out true, from the confident half."""
    scene = make_scene()
    field = scene.field
    columns = (torch.arange(field.hw[1]) // 4) % 2 == 1  # every other 4-pixel column band (the calibration samples every 4th)
    ctrl = field.ctrl_pts.clone()
    ctrl[..., columns, 0] = ctrl[..., columns, 0] * 1.5 + 0.3
    conf = field.ctrl_conf.clone()
    conf[..., columns] = 1.2
    field = replace(field, ctrl_pts=ctrl, ctrl_conf=conf)
    intrinsics = estimate_intrinsics(field)
    assert intrinsics.focal == pytest.approx(FOCAL, rel=5e-3)
    for i, camera in enumerate(estimate_poses(field, intrinsics)):
        truth = true_camera(i, field.num_frames)
        np.testing.assert_allclose(camera.centre, truth.centre, atol=5e-3)
        np.testing.assert_allclose(camera.rotation, truth.rotation, atol=2e-3)
