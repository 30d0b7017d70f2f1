"""The shipped small checkpoint is trained: it recovers the bundled example's depth (random weights do not), and
`tracefield infer` with it recovers the example's geometry and motion within the model card's figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tracefield
from tracefield.data.synthetic import load_ground_truth
from tracefield.io.frames import discover_scenes, read_frames
from tracefield.io.preprocess import to_network_input
from tracefield.paths import config_path

from truth import CHECKPOINT, EXAMPLE, assert_within_model_card, score, trace_example


def first_frame_depth(checkpoint) -> np.ndarray:
    model = tracefield.load_model(config_path("small"), checkpoint, device="cpu")
    scene = discover_scenes([EXAMPLE])[0]
    images = np.stack(read_frames(scene, [0, 5, 10, 15], progress=False).images)
    with torch.inference_mode():
        out = model.predict(to_network_input(images)[None], torch.tensor([[0.0, 1 / 3, 2 / 3, 1.0]]))
    return out["ctrl_pts3d"][0, 0, 0, ..., 2].numpy()  # frame 0, first control point (t = 0)


def depth_scores(depth: np.ndarray) -> tuple[float, float]:
    """Median relative error after median scaling, and correlation, against the true depth."""
    true_depth = load_ground_truth(EXAMPLE)[0]["depth"].float().numpy()
    scale = np.median(true_depth / depth)
    return float(np.median(np.abs(depth * scale / true_depth - 1))), float(np.corrcoef(depth.ravel(), true_depth.ravel())[0, 1])


@pytest.mark.skipif(not CHECKPOINT.is_file(), reason=f"{CHECKPOINT} is absent")
def test_depth_of_the_first_frame():
    error, correlation = depth_scores(first_frame_depth(CHECKPOINT))
    assert error < 0.15 and correlation > 0.8
    random_error, random_correlation = depth_scores(first_frame_depth(None))
    assert random_error > 2 * error and random_correlation < 0.8


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """The example traced as a user runs it: the CLI, the checkpoint alone (its config from the file), the CPU."""
    if not CHECKPOINT.is_file():
        pytest.skip(f"{CHECKPOINT} is absent")
    return trace_example(tmp_path_factory.mktemp("example"), "--device", "cpu")


def test_infer_through_the_cli_recovers_the_clip(traced):
    """Depth, 3D trajectories, how far each pixel travels, the frame times and the motion masks against the clip's truth."""
    truth, _ = load_ground_truth(EXAMPLE)
    assert traced.model["checkpoint"] == str(CHECKPOINT) and not traced.model["untrained"]
    assert traced.transform.model_hw == (256, 448)  # the stored runtime.long_side (448): the clip is traced at its own size
    np.testing.assert_allclose(traced.time_steps.numpy(), truth["times"].numpy(), atol=1e-6)
    assert_within_model_card(score(traced))
