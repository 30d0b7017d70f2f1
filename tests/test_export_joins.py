"""Where the export's parts join, against truth: the source video, the pictures, retiming, camera paths, the npz record.

Each test checks what a user gets (an image, a video frame, a camera, a number in a file)
against something independent of our writers and drawing code: the bundled clip's PNG
frames and ground truth (tests/truth_field.py), pinhole geometry worked out by hand,
matplotlib's colormap, or a value computed here from the documented rule.
"""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import imageio.v2 as iio
import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from tracefield import curves
from tracefield.export import ExportOptions, run_export
from tracefield.export.canvas import Placement
from tracefield.export.conditions import HIDDEN_AT_START, OUTSIDE_AT_START, Conditions, keep_startable
from tracefield.export.draw import background_frames, draw_tracks
from tracefield.export.formats.ati import read_ati
from tracefield.export.formats.npz import read_npz
from tracefield.export.formats.worldcanvas import decode_mask, read_worldcanvas, write_worldcanvas
from tracefield.export.selection import SelectionOptions
from tracefield.export.timing import Timing, clip_times
from tracefield.export.tracks import CameraOptions, camera_function
from tracefield.field import FrameInfo
from tracefield.io.preprocess import Preprocess
from tracefield.scene_folder import SceneFolder

from scene import CARD_END, CARD_START, CARD_Z, FOCAL, make_scene, true_camera
from test_export_consumers import clip_frame, file_pixels, seed_pixels, truth  # noqa: F401 (a fixture)
from truth_field import CLIP, SHRINK

W0, H0 = 448, 256  # the bundled frames
VIDEO_W, VIDEO_H = 640, 368  # the 832x480 canvas shrunk to the videos' 640 columns (rows rounded down to even)


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




def angle_of(rotation: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(rotation).magnitude()))


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


# --------------------------------------------------------------------------- hand-computed motion, confidence and anchoring


SCENE_SCALE = 8  # make_scene's 128x72 network frame standing for a 1024x576 clip
BIG = Preprocess((72 * SCENE_SCALE, 128 * SCENE_SCALE), False, (72, 128), (72, 128))
CARD_PICKS = np.array([[25.0, 30.0], [40.0, 45.0], [30.0, 50.0]])  # network pixels on the card at frame 0 (card spans x 11..49, y 16..54)


def card_motion(t: np.ndarray) -> np.ndarray:
    """How far a card point moves by clip time ``t`` in the 1024x576 clip's pixels, through the static first camera:
    the card slides (1.0, 0.1) world units per unit of time at depth 2, seen with focal 110 network pixels."""
    velocity = (CARD_END - CARD_START) * FOCAL / CARD_Z  # network pixels per unit of time
    return np.asarray(t, dtype=np.float64)[:, None, None] * velocity * SCENE_SCALE


@pytest.mark.parametrize("fmt, frames, canvas", [("ati", 121, None), ("comfyui", 121, "1024x576"), ("wanmove", 81, "1024x576"), ("npz", 5, None)])
def test_card_tracks_follow_the_hand_computed_motion(tmp_path, fmt, frames, canvas):
    """Card pixels picked on frame 0 of a 1024x576 clip, filmed by the still first camera of known focal: each file holds
    the pick (pixel centre + 0.5, corner convention) plus the card's projected slide at every output time, to 1/50 pixel
    (a writer's rounding, float16 or whole pixels, is far coarser); the npz records the picks themselves in those pixels."""
    field = make_scene(transform=BIG).field
    picks = (CARD_PICKS + 0.5) * SCENE_SCALE - 0.5  # the card pixels' centres in the clip's pixels
    selection = SelectionOptions(strategy="pixels", pixels=[tuple(p) for p in picks], background=0)
    result = run_export(field, ExportOptions(format=fmt, output=tmp_path, name="clip", pictures=False, canvas=canvas, selection=selection,
                                             camera=CameraOptions(focal=FOCAL * SCENE_SCALE)))
    expected = picks + 0.5 + card_motion(np.linspace(0, 1, frames))  # [T, N, 2]
    if fmt == "ati":
        xy, _ = read_ati(tmp_path / "clip.pth")
        xy = xy.transpose(1, 0, 2)
    elif fmt == "comfyui":
        xy = np.array([[[p["x"], p["y"]] for p in track] for track in json.loads((tmp_path / "clip.json").read_text())]).transpose(1, 0, 2)
    elif fmt == "wanmove":
        xy = np.load(tmp_path / "clip" / "tracks.npy")
        assert xy.dtype == np.float32 and np.load(tmp_path / "clip" / "visibility.npy").dtype == bool  # as Wan-Move's example files
    else:
        data = read_npz(tmp_path / "clip.npz")
        xy = data["xy"]
        np.testing.assert_allclose(data["picks"], picks + 0.5, atol=1e-3)
    assert result.written.num_tracks == len(picks) and xy.shape == expected.shape
    np.testing.assert_allclose(xy, expected, atol=0.02)


def test_a_track_is_hidden_while_its_confidence_is_below_the_threshold(tmp_path):
    """A small patch of the background has confidence 3 - 2t (linear in time: control values at the Greville abscissae);
    everything else 2, so the 10th percentile is 2 and the patch's track is seen exactly while 3 - 2t >= 2, t <= 1/2:
    output frames 0-4 of 9 (clip times k/8), hidden from frame 5 on."""
    field = make_scene().field
    knots = curves.knot_vector(4)
    greville = torch.tensor([float(knots[k + 1 : k + 4].mean()) for k in range(4)])
    conf = field.ctrl_conf.clone()
    conf[:, :, 7:14, 97:104] = (3 - 2 * greville)[None, :, None, None]
    field = replace(field, ctrl_conf=conf)
    run_export(field, ExportOptions(format="npz", output=tmp_path, name="clip", pictures=False, frames=9, fps=10,
                                    selection=SelectionOptions(strategy="pixels", pixels=[(100.0, 10.0)], background=0),
                                    camera=CameraOptions(occlusion=False)))
    visible = read_npz(tmp_path / "clip.npz")["visible"][:, 0]
    assert visible.tolist() == [True] * 5 + [False] * 4


def test_tracks_pass_through_their_picks_at_the_time_the_network_placed_the_frame(tmp_path):
    """The network placed frame 1 at clip time 0.3 though it was given 0.25: its pixels sit on their curves at 0.3, so the
    export from frame 1 starts there (its first output frame) with every track exactly at its pick, moving card or not."""
    field = make_scene().field
    field = replace(field, times=torch.tensor([0.0, 0.3, 0.5, 0.75, 1.0]))
    picks = [(30.0, 35.0), (45.0, 40.0), (100.0, 12.0)]  # two on the card, one on the background
    result = run_export(field, ExportOptions(format="npz", output=tmp_path, name="clip", pictures=False, frames=9, fps=10,
                                             selection=SelectionOptions(strategy="pixels", pixels=picks, frame=1, background=0)))
    data = read_npz(tmp_path / "clip.npz")
    assert data["clip_times"][0] == pytest.approx(0.3) and float(data["anchor_time"]) == pytest.approx(0.3)
    np.testing.assert_allclose(data["xy"][0], np.asarray(picks) + 0.5, atol=1e-3)
    assert data["visible"][0].all() and result.written.num_tracks == 3


# --------------------------------------------------------------------------- what is left out, and WorldCanvas' masks and sentinels


def test_tracks_left_out_are_counted_by_the_right_reason():
    """On the first frame: two tracks outside the image (left of it, below it), one inside but hidden, two usable."""
    xy = np.array([[[-3.0, 10.0], [20.0, 50.0], [12.0, 12.0], [5.0, 5.0], [39.0, 29.0]]])  # one frame, a 40x30 image
    visible = np.array([[False, False, False, True, True]])
    conditions = Conditions(xy=xy, visible=visible, object_ids=np.zeros(5, np.int64), camera_tracks=np.ones(5, bool), masks={},
                            size=(40, 30), picks=xy[0])
    kept, dropped = keep_startable(conditions)
    assert dropped == {OUTSIDE_AT_START: 2, HIDDEN_AT_START: 1}
    np.testing.assert_array_equal(kept.xy[0], [[5.0, 5.0], [39.0, 29.0]])


def test_worldcanvas_disks_of_background_tracks_surround_their_starts(tmp_path):
    """Background tracks have no object mask: each gets a disk of radius 20 canvas pixels around its start. The start is
    the pick through the 832x480 cover fit of the 128x72 frame (853x480, 10 columns cut on the left), by hand."""
    field = make_scene().field
    background = [(100.0, 10.0), (110.0, 60.0), (70.0, 5.0)]  # network (= original) pixels, clear of the card
    selection = SelectionOptions(strategy="objects", per_object=2, background=0, min_object_area=20, pixels=background)
    run_export(field, ExportOptions(format="worldcanvas", output=tmp_path, name="clip", pictures=False, selection=selection,
                                    captions={1: "the card slides right"}))
    tracks = [t for t in json.loads((tmp_path / "clip.json").read_text()) if "tracking" in t]
    disks = [t for t in tracks if t["text"] == "None"]
    assert len(disks) == len(background)
    rows, cols = np.mgrid[0:480, 0:832]
    for (x, y), track in zip(background, disks):
        start = ((x + 0.5) * 853 / 128 - 10, (y + 0.5) * 480 / 72)
        np.testing.assert_allclose(track["tracking"][0], start, atol=1e-3)
        mask = decode_mask(track["mask_cluster"])
        distance = np.hypot(cols + 0.5 - start[0], rows + 0.5 - start[1])
        assert mask.sum() > 0.9 * np.pi * 20**2 and distance[mask].max() < 22, (start, mask.sum(), distance[mask].max())


def test_worldcanvas_sentinels_stay_out_of_every_used_latent_frame(tmp_path):
    """WorldCanvas reads latent frame j (pixel frames 4j-3..4j) as their mean position, used when frame 4j is visible. A
    track on the canvas on frames 0-3, off it on 4-7, back on from 8: no [-1, -1] may enter latent frames 1 and 2 (both used)."""
    frames = 81
    xy = np.tile([[400.0, 240.0], [300.0, 200.0]], (frames, 1, 1))
    xy[4:8, 1] = [900.0, 200.0]  # off the canvas's right edge
    visible = np.ones((frames, 2), bool)
    visible[4:8, 1] = False
    mask = np.zeros((480, 832), bool)
    mask[200:280, 360:440] = True
    conditions = Conditions(xy=xy, visible=visible, object_ids=np.array([1, 0]), camera_tracks=np.array([False, True]), masks={1: mask},
                            size=(832, 480), picks=xy[0])
    write_worldcanvas(conditions, tmp_path / "clip.json", {1: "a box"})
    track = [t for t in json.loads((tmp_path / "clip.json").read_text()) if "tracking" in t][1]
    points, used = np.array(track["tracking"]), np.array(track["tracking_vis_value"]) > 0
    for j in range(1, 21):
        if used[4 * j]:
            group = points[4 * j - 3 : 4 * j + 1]
            assert not (group == -1).all(axis=1).any(), (j, group)


def test_arrow_heads_take_the_late_end_of_turbo():
    """A track ends in a filled arrow head pointing its way, in turbo's late colour (0.95: dark red), as its last segments:
    beside the line near the tip, inside the head but clear of the 3-pixel line, the picture is that colour."""
    frames = 41
    xy = np.stack([np.linspace(100, 600, frames), np.full(frames, 450.0)], axis=-1)[:, None]  # one track, left to right
    image = draw_tracks(np.zeros((900, 800, 3), np.uint8), xy, np.ones((frames, 1), bool))
    late = np.asarray(matplotlib.colormaps["turbo"](0.95)[:3]) * 255
    for dy in (-4, 4):
        pixel = image[450 + dy, 590]  # 10 pixels behind the tip, where the head is 12 pixels wide
        assert np.abs(pixel - late).max() < 20, (dy, pixel, late)
    assert image[450 + 4, 560].max() == 0  # behind the head, beside the line: nothing


# --------------------------------------------------------------------------- the viewer's Export panel


def test_viewer_export_of_a_later_frame_starts_from_that_frame(truth, tmp_path):
    """The Export panel with a pixel picked on frame 5: the zip's first image is the clip's 005.png, the track starts at
    the picked pixel (network pixel (x, y) of the half-size field is original (2x + 0.5, 2y + 0.5), + 0.5 in the file) and ends where the true
    point of frame 5 is at the clip's end, seen through frame 5's true camera (the static camera)."""
    from viewer.export import export_picks
    from viewer.state import Pick

    field = truth.field
    width = field.hw[1]
    ys, xs = np.nonzero(truth.object_ids[5] > 0)
    x, y = int(np.median(xs)), int(np.median(ys))
    (tmp_path / "scene").mkdir()
    folder = SceneFolder.of(tmp_path / "scene")
    name, _ = export_picks(field, folder, [Pick(5, np.array([y * width + x]), "pixel")], 5, "ati", "a ball rolls")
    stem = name[: -len(".zip")]
    written = np.asarray(Image.open(folder.exports / stem / f"{stem}.png").convert("RGB")).astype(np.float64)
    assert np.abs(written - clip_png(5)).mean() < 1.0 < np.abs(written - clip_png(0)).mean()
    xy, _ = read_ati(folder.exports / stem / f"{stem}.pth")
    np.testing.assert_allclose(xy[0, 0], [2 * x + 1.0, 2 * y + 1.0], atol=1e-3)
    np.testing.assert_allclose(xy[0, -1], truth.project(truth.tracks[5, 15, y, x], 5) + 0.5, atol=0.5)
