"""Cameras against truth: the test scene's known cameras, the field's own estimates of them, and camera paths as documented."""

from __future__ import annotations

import numpy as np
import pytest

from scene import FOCAL, HEIGHT, WIDTH, make_scene, true_camera
from tracefield.geometry import Intrinsics, estimate_intrinsics, estimate_poses, load_camera_path, principal_point


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
