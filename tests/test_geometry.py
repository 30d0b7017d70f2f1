"""Cameras against truth: the test scene's known cameras, the field's own estimates of them, and camera paths as documented."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scene import FOCAL, HEIGHT, WIDTH, make_scene, true_camera
from tracefield.geometry import Camera, Intrinsics, estimate_intrinsics, estimate_poses, load_camera_path, principal_point


@pytest.fixture(scope="module")
def scene():
    return make_scene(frames=5, num_ctrl=4)


def pixel_grid() -> np.ndarray:
    ys, xs = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float64)
    return np.stack([xs, ys], axis=-1)


def test_each_frame_sees_its_points_at_their_pixels(scene):
    """The scene was built by casting a ray through every pixel centre of camera i: projecting back lands on that pixel."""
    own = scene.field.points_at_own_time().numpy().astype(np.float64)
    for i, camera in enumerate(scene.cameras):
        pixels, depth = camera.project(own[i])
        np.testing.assert_allclose(pixels, pixel_grid(), atol=2e-3)
        assert (depth > 1.0).all()


def test_estimated_cameras_are_the_true_ones(scene):
    """The field's points are exact, so the focal length, principal point and poses estimated from it are the true ones."""
    intrinsics = estimate_intrinsics(scene.field)
    assert principal_point(scene.field) == pytest.approx(((WIDTH - 1) / 2, (HEIGHT - 1) / 2))
    assert intrinsics.focal == pytest.approx(FOCAL, rel=1e-3)
    for i, camera in enumerate(estimate_poses(scene.field, intrinsics)):
        truth = true_camera(i, scene.field.num_frames)
        np.testing.assert_allclose(camera.rotation, truth.rotation, atol=1e-3)
        np.testing.assert_allclose(camera.centre, truth.centre, atol=2e-3)


def test_principal_point_is_the_original_frames_centre():
    """After a top-left crop the principal point is not the network frame's centre: it maps from the original's."""
    from tracefield.io.preprocess import Preprocess

    transform = Preprocess.plan(300, 520, long_side=512)  # resized to 295x512, cropped to 288x512
    field = make_scene(frames=2, transform=transform, height=288, width=512).field
    x, y = principal_point(field)
    np.testing.assert_allclose(transform.to_original([x, y]), [(520 - 1) / 2, (300 - 1) / 2], atol=1e-9)
    assert y > (288 - 1) / 2  # the crop took rows from the bottom


INTRINSICS = Intrinsics(100.0, 50.0, 40.0)
DEPTH = 4.0


def test_orbit_moves_right_around_the_scene_centre():
    """'Positive orbit degrees move the camera to the right around the centre', keeping it in view, ramping with time."""
    path = load_camera_path({"orbit": {"degrees": 30}}, INTRINSICS, DEPTH)
    start, middle, end = path.at(0.0), path.at(0.5), path.at(1.0)
    np.testing.assert_allclose(start.centre, 0.0, atol=1e-12)
    np.testing.assert_allclose(start.rotation, np.eye(3), atol=1e-12)
    turn = np.radians(30)
    np.testing.assert_allclose(end.centre, [DEPTH * np.sin(turn), 0.0, DEPTH * (1 - np.cos(turn))], atol=1e-9)  # x is right
    half = np.radians(15)
    np.testing.assert_allclose(middle.centre, [DEPTH * np.sin(half), 0.0, DEPTH * (1 - np.cos(half))], atol=1e-9)
    for camera in (start, middle, end):
        pixel, depth = camera.project(np.array([0.0, 0.0, DEPTH]))  # the pivot stays at the principal point
        np.testing.assert_allclose(pixel, [50.0, 40.0], atol=1e-9)
        assert depth == pytest.approx(DEPTH)


def test_dolly_zoom_and_easing():
    """Dolly moves forward by amount x scene depth, zoom multiplies the focal length, smooth easing is 3s^2 - 2s^3."""
    dolly = load_camera_path({"dolly": {"amount": 0.25}}, INTRINSICS, DEPTH).at(1.0)
    np.testing.assert_allclose(dolly.centre, [0.0, 0.0, 1.0], atol=1e-12)
    zoom = load_camera_path({"zoom": {"factor": 1.5}}, INTRINSICS, DEPTH)
    assert zoom.at(1.0).intrinsics.focal == pytest.approx(150.0) and zoom.at(0.5).intrinsics.focal == pytest.approx(125.0)
    eased = load_camera_path({"zoom": {"factor": 2.0}, "ease": "smooth"}, INTRINSICS, DEPTH)
    assert eased.at(0.25).intrinsics.focal == pytest.approx(100.0 * (1 + (3 * 0.25**2 - 2 * 0.25**3)))


def test_dolly_after_an_orbit_moves_along_the_turned_view():
    """Moves compose: after an orbit the camera looks at the scene centre, so a dolly forward takes it straight towards
    that centre (the centre stays at the principal point, amount x scene depth nearer), not along the world's z."""
    path = load_camera_path({"orbit": {"degrees": 30}, "dolly": {"amount": 0.25}}, INTRINSICS, DEPTH)
    pivot = np.array([0.0, 0.0, DEPTH])
    for t in (0.5, 1.0):
        camera = path.at(t)
        pixel, depth = camera.project(pivot)
        np.testing.assert_allclose(pixel, [INTRINSICS.cx, INTRINSICS.cy], atol=1e-9)
        assert depth == pytest.approx(DEPTH * (1 - 0.25 * t))
        assert np.linalg.norm(camera.centre - pivot) == pytest.approx(DEPTH * (1 - 0.25 * t))


@pytest.mark.parametrize("move, axis, sign", [("pan", 0, -1), ("tilt", 1, 1)])
def test_pan_turns_sideways_and_tilt_up_in_place(move, axis, sign):
    """'pan: 10' turns the camera right about the vertical axis: what was straight ahead moves left along its row by
    f tan(angle); 'tilt: 10' turns it up about the horizontal one: it moves down its column. The camera stays in
    place, and halfway it has turned half."""
    path = load_camera_path({move: {"degrees": 10}}, INTRINSICS, DEPTH)
    for t in (0.5, 1.0):
        camera = path.at(t)
        np.testing.assert_allclose(camera.centre, 0.0, atol=1e-12)
        pixel, depth = camera.project(np.array([0.0, 0.0, DEPTH]))
        expected = np.array([INTRINSICS.cx, INTRINSICS.cy])
        expected[axis] += sign * INTRINSICS.focal * np.tan(np.radians(10 * t))
        np.testing.assert_allclose(pixel, expected, atol=1e-9, err_msg=f"{move} at t={t}")
        assert depth == pytest.approx(DEPTH * np.cos(np.radians(10 * t)))


def test_filmed_cameras_between_frames_follow_the_true_path_whatever_the_order_of_the_frames():
    """The test scene's camera slides linearly and turns at a constant rate, so slerp + linear position between any two
    frames is the true camera at that time. Frames handed over out of time order (predicted times need not be sorted)
    must still give each time its own camera."""
    from tracefield.geometry import FilmedCameras

    frames = 5
    order = [3, 0, 4, 1, 2]
    filmed = FilmedCameras([true_camera(i, frames) for i in order], [i / (frames - 1) for i in order])
    for t in (0.0, 0.1, 0.25, 0.4, 0.5, 0.9, 1.0):
        camera, truth = filmed.at(t), true_camera(t * (frames - 1), frames)
        np.testing.assert_allclose(camera.rotation, truth.rotation, atol=1e-6)
        np.testing.assert_allclose(camera.centre, truth.centre, atol=1e-6)
        point = np.array([0.3, -0.2, 3.0])
        np.testing.assert_allclose(camera.project(point)[0], truth.project(point)[0], atol=1e-4)
    np.testing.assert_allclose(filmed.at(1.5).centre, true_camera(frames - 1, frames).centre, atol=1e-6)  # held past the end


def test_occlusion_against_walls_at_each_frame_time():
    """A frontal wall at depth 2 at time 0 and at depth 3 at time 1, handed over latest first, in a 40x24 frame
    (10x6 depth cells): a point at depth 2.5 is hidden at times near 0 and seen near 1, anywhere in the frame,
    the bottom-right corner included; in front of the wall or outside the frame it is never hidden."""
    from tracefield.geometry import build_depth_maps

    height, width = 24, 40
    camera = Camera(Intrinsics(20.0, (width - 1) / 2, (height - 1) / 2))
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    rays = np.stack([(xs - camera.intrinsics.cx) / 20.0, (ys - camera.intrinsics.cy) / 20.0, np.ones_like(xs)], axis=-1)
    walls = np.stack([rays * 3.0, rays * 2.0])  # frame 0 at time 1, frame 1 at time 0
    maps = build_depth_maps(walls, [1.0, 0.0], lambda t: camera, (height, width))
    pixels = np.array([[2.0, 2.0], [38.0, 22.0], [38.0, 3.0], [3.0, 21.0], [20.0, 12.0]])
    for t, hidden in ((0.0, True), (0.3, True), (0.7, False), (1.0, False)):
        np.testing.assert_array_equal(maps.occluded(t, pixels, np.full(len(pixels), 2.5)), hidden, err_msg=f"t={t}")
        assert not maps.occluded(t, pixels, np.full(len(pixels), 1.5)).any()
    assert maps.occluded(1.0, pixels, np.full(len(pixels), 3.5)).all()
    outside = np.array([[-5.0, 10.0], [45.0, 10.0], [20.0, -5.0], [20.0, 30.0]])
    assert not maps.occluded(0.0, outside, np.full(len(outside), 10.0)).any()


def test_cameras_come_from_the_confident_points_alone():
    """Points the network is unsure of are often wrong. A field whose least confident pixels (45%, confidence 1-1.5)
    hold random points and whose confident ones (2.5-3) hold the truth must still give the true focal length and poses."""
    scene = make_scene(frames=3, num_ctrl=4)
    field = scene.field
    rng = np.random.default_rng(0)
    unsure = rng.random((3, HEIGHT, WIDTH)) < 0.45
    conf = np.where(unsure, rng.uniform(1.0, 1.5, unsure.shape), rng.uniform(2.5, 3.0, unsure.shape))
    junk = np.stack([rng.uniform(-3, 3, unsure.shape), rng.uniform(-3, 3, unsure.shape), rng.uniform(1, 8, unsure.shape)], axis=-1)
    ctrl = field.ctrl_pts.numpy()
    ctrl[:] = np.where(unsure[:, None, ..., None], junk[:, None], ctrl)  # every control point: a still, wrong point
    field.ctrl_conf[:] = torch.from_numpy(conf[:, None]).float()
    intrinsics = estimate_intrinsics(field)
    assert intrinsics.focal == pytest.approx(FOCAL, rel=1e-3)
    for i, camera in enumerate(estimate_poses(field, intrinsics)):
        truth = true_camera(i, 3)
        np.testing.assert_allclose(camera.rotation, truth.rotation, atol=1e-3)
        np.testing.assert_allclose(camera.centre, truth.centre, atol=2e-3)
