"""Preprocessing as the release does it, and the way back to original pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tracefield.errors import TracefieldError
from tracefield.io.preprocess import Preprocess, from_network_input, to_network_input


@pytest.mark.parametrize(
    "hw, rotated, resized, model",
    [
        ((288, 512), False, (288, 512), (288, 512)),
        ((1080, 1920), False, (288, 512), (288, 512)),
        ((480, 640), False, (384, 512), (384, 512)),
        ((1920, 1080), True, (288, 512), (288, 512)),  # portrait phone video
        ((500, 333), True, (340, 512), (336, 512)),
        ((100, 100), False, (512, 512), (512, 512)),  # small frames are upscaled, like the release
    ],
)
def test_plan_sizes(hw, rotated, resized, model):
    plan = Preprocess.plan(*hw)
    assert (plan.rotated, plan.resized_hw, plan.model_hw) == (rotated, resized, model)


def test_too_thin_frames_are_refused():
    with pytest.raises(TracefieldError, match="too thin"):
        Preprocess.plan(10, 2000, source="strip.png")


def marker_image(height: int, width: int, x: int, y: int) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3] = 255
    return image


def brightest(image: np.ndarray) -> np.ndarray:
    """Centre of mass of the bright blob, (x, y)."""
    weights = image[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    return np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()


@pytest.mark.parametrize("hw, xy", [((360, 640), (500, 70)), ((640, 360), (70, 500)), ((640, 360), (300, 40)), ((300, 700), (650, 250))])
def test_content_lands_where_to_model_says(hw, xy):
    """A bright dot in the original frame appears where to_model maps it (rotation, resize, crop)."""
    plan = Preprocess.plan(*hw)
    out = plan.apply(marker_image(*hw, *xy))
    assert out.shape[:2] == plan.model_hw
    np.testing.assert_allclose(brightest(out), plan.to_model(xy), atol=0.6)
    np.testing.assert_allclose(plan.to_original(brightest(out)), xy, atol=1.5)


@pytest.mark.parametrize("hw", [(720, 1280), (1280, 720), (333, 500), (512, 288)])
def test_points_round_trip(hw):
    plan = Preprocess.plan(*hw)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-5, max(hw) + 5, size=(50, 2))
    np.testing.assert_allclose(plan.to_original(plan.to_model(pts)), pts, atol=1e-9)
    np.testing.assert_allclose(plan.to_model(plan.to_original(pts)), pts, atol=1e-9)


def test_portrait_corners_follow_a_counter_clockwise_rotation():
    """PIL's ROTATE_90 is counter-clockwise: the original top-right corner becomes the top-left."""
    plan = Preprocess.plan(512, 288)  # portrait, no resize needed
    assert plan.rotated and plan.model_hw == (288, 512)
    np.testing.assert_allclose(plan.to_model([287, 0]), [0, 0])
    np.testing.assert_allclose(plan.to_model([0, 0]), [0, 287])
    img = np.zeros((512, 288, 3), np.uint8)
    img[0, 287] = 255
    assert plan.apply(img)[0, 0, 0] == 255
    np.testing.assert_array_equal(np.asarray(Image.fromarray(img).transpose(Image.Transpose.ROTATE_90)), np.rot90(img))


def test_dict_round_trip():
    plan = Preprocess.plan(1280, 720)
    assert Preprocess.from_dict(plan.to_dict()) == plan


def test_network_input_round_trip():
    frames = np.random.default_rng(1).integers(0, 256, size=(2, 16, 32, 3), dtype=np.uint8)
    x = to_network_input(frames)
    assert x.shape == (2, 3, 16, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(from_network_input(x), frames)
