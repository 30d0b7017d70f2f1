"""Training: the loss and its motion terms, a tiny overfit run whose loss falls, checkpoints round-trip and resume exactly; the evaluation's scores."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import tracefield
from tracefield.data.synthetic import SceneConfig, render_scene
from tracefield.distributed import launch
from tracefield.errors import TracefieldError
from tracefield.train.evaluate import Prediction, _queries, evaluate, motion_recall, object_translation, predict_scene, scene_metrics, zero_motion
from tracefield.train.losses import LossWeights, confidence_loss, displacement_loss, moving_pixels, to_camera_frames, trace_anything_loss, weights_at
from tracefield.train.loop import OptimArgs, learning_rate, load_train_config, train, training_batch

from conftest import TINY_NET


def tiny_config(tmp_path, steps: int, scenes=1):
    OmegaConf.save({"model": TINY_NET}, tmp_path / "net.yaml")
    OmegaConf.save({
        "model": str(tmp_path / "net.yaml"), "output": str(tmp_path / "run"), "log_every": 10, "checkpoint_every": 25,
        "data": {"min_frames": 3, "max_frames": 3, "height": 32, "width": 48, "scenes": scenes},
        "optim": {"lr": 3e-3, "warmup_steps": 5, "steps": steps},
    }, tmp_path / "train.yaml")
    return load_train_config(tmp_path / "train.yaml")


def losses(tmp_path) -> list[float]:
    with open(tmp_path / "run" / "log.csv") as handle:
        return [float(row["total"]) for row in csv.DictReader(handle)]


def test_overfit_loss_falls(tmp_path):
    train(tiny_config(tmp_path, 80), device="cpu", progress=False)
    history = losses(tmp_path)
    assert len(history) == 80
    assert sum(history[-10:]) / 10 < 0.6 * sum(history[:10]) / 10


def test_resume_continues_exactly(tmp_path):
    """50 steps in one go equal 25 + 25 with a restart in between."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    whole.mkdir(), split.mkdir()
    train(tiny_config(whole, 50, scenes=None), device="cpu", progress=False)
    config = tiny_config(split, 50, scenes=None)
    train(config, device="cpu", max_steps=25, progress=False)
    train(config, device="cpu", progress=False)
    a = tracefield.load_model(None, whole / "run" / "model.safetensors", device="cpu")
    b = tracefield.load_model(None, split / "run" / "model.safetensors", device="cpu")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-3, msg=name)
    assert losses(whole)[25:] == losses(split)[25:]


def test_checkpoint_round_trip(tmp_path):
    model_file = train(tiny_config(tmp_path, 5), device="cpu", progress=False)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == 5
    model = tracefield.load_model(None, model_file, device="cpu")  # config from the file's metadata
    assert not model.untrained and next(model.parameters()).dtype == torch.float32
    raw = tracefield.model.checkpoint.read_checkpoint(model_file)[0]
    assert all(v.dtype == torch.float16 for v in raw.values())


def test_evaluation_table_has_the_baselines():
    model = tracefield.load_model(TINY_NET, device="cpu")
    results = evaluate({"zero motion": zero_motion, "untrained": lambda s: predict_scene(model, s)}, 2,
                       SceneConfig(frames=4, height=32, width=48), progress=False)
    zero = results["zero motion"]
    assert 0 <= zero["delta_avg"] <= 1 and zero["epe2d"] >= 0 and zero["visibility_acc"] > 0.5
    assert results["untrained"]["epe3d"] > zero["epe3d"] * 0.5


def test_moving_pixels_are_the_objects_that_move():
    scene = render_scene(9, SceneConfig(frames=4, height=32, width=48, min_objects=2, max_objects=2), camera_motion="pan")
    moving = moving_pixels(scene.tracks[None].double())[0]
    assert moving.shape == scene.object_ids.shape
    assert not moving[scene.object_ids == 0].any()  # the room never moves, whatever the camera does
    assert moving[scene.object_ids > 0].float().mean() > 0.9


def test_motion_terms_weigh_moving_pixels():
    """``plain`` and ``moving`` add exactly the unweighted and the moving-pixel terms to the loss."""
    scene = render_scene(9, SceneConfig(frames=3, height=16, width=24, min_objects=2, max_objects=2))
    tracks, times = scene.tracks[None], scene.times
    ctrl = tracks[:, :, [0, 0, 1, 2]] * 1.1  # a wrong curve: K = 4 control points from the truth
    conf = torch.full(ctrl.shape[:-1], 2.0)
    base = confidence_loss(ctrl, conf, tracks, times, LossWeights())
    plain = confidence_loss(ctrl, conf, tracks, times, LossWeights(plain=1.0))
    moving = moving_pixels(tracks)
    weighted = confidence_loss(ctrl, conf, tracks, times, LossWeights(moving=3.0), moving)
    points = tracefield.curves.evaluate(ctrl, times, dim=2)
    error = (points / points.norm(dim=-1).mean() - tracks / tracks.norm(dim=-1).mean()).norm(dim=-1)
    per_point = 2.0 * error - 0.2 * torch.log(torch.tensor(2.0))
    torch.testing.assert_close(base, per_point.mean())
    torch.testing.assert_close(plain - base, error.mean())
    torch.testing.assert_close(weighted, (per_point * (1 + 3.0 * moving[:, :, None])).mean())
    assert moving.any() and not moving.all()


def test_displacement_term_scores_the_motion_of_moving_pixels_alone():
    """Two frames: curves through the truth score 0; standing still scores the mean squared (normalised) true displacement
    of the moving pixels, whatever the static pixels do; the weight adds exactly weight * term to the total."""
    scene = render_scene(9, SceneConfig(frames=2, height=16, width=24, min_objects=2, max_objects=2))
    tracks, times = scene.tracks[None].double(), scene.times.double()
    exact = tracks[:, :, [0, 0, 1, 1]]  # a clamped cubic through x(0) at t=0 and x(1) at t=1
    moving = moving_pixels(tracks)
    assert moving.any() and not moving.all()
    assert displacement_loss(exact, tracks, times, moving) == pytest.approx(0.0, abs=1e-12)
    own = tracks[:, [0, 1], [0, 1]]  # [1, N, H, W, 3]: each view at its own time
    still = own[:, :, None].expand(-1, -1, 4, -1, -1, -1)
    normalised = tracks / tracks.norm(dim=-1).mean()
    true_motion = ((normalised - normalised[:, [0, 1], [0, 1]][:, :, None]) ** 2).sum(-1)  # [1, N, T, H, W]
    expected = true_motion[moving[:, :, None].expand_as(true_motion)].mean()
    torch.testing.assert_close(displacement_loss(still, tracks, times, moving), expected)
    wild_elsewhere = still.clone()
    still_pixels = ~moving[:, :, None, :, :, None].expand_as(still)
    wild_elsewhere[still_pixels] += torch.randn(int(still_pixels.sum()), dtype=torch.float64)  # static pixels' curves thrown about
    torch.testing.assert_close(displacement_loss(wild_elsewhere, tracks, times, moving), expected)
    assert displacement_loss(torch.zeros_like(still), tracks, times, torch.zeros_like(moving)) == 0
    prediction = {"ctrl_pts3d": still.float(), "ctrl_conf": torch.full(still.shape[:-1], 2.0), "time": times[None].float()}
    base = trace_anything_loss(prediction, tracks.float(), scene.poses[None], times.float(), LossWeights(local=0.0))
    weighted = trace_anything_loss(prediction, tracks.float(), scene.poses[None], times.float(), LossWeights(local=0.0, displacement=3.0))
    torch.testing.assert_close(weighted["total"] - base["total"], 3.0 * weighted["displacement"])
    torch.testing.assert_close(weighted["displacement"].double(), expected, rtol=1e-4, atol=1e-6)


def test_motion_terms_start_at_motion_start_step(tmp_path):
    """Before loss.motion_start_step the geometry objective alone (today's recipe: a geometry stage first); from it on, every motion term."""
    weights = LossWeights(plain=1.0, moving=5.0, displacement=2.0, motion_start_step=3)
    assert weights_at(weights, 2) == LossWeights(motion_start_step=3) and weights_at(weights, 3) == weights
    config = tiny_config(tmp_path, 5)
    config.loss = weights
    train(config, device="cpu", progress=False)
    with open(tmp_path / "run" / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["displacement"]) for r in rows[:3]] == [0.0] * 3 and all(float(r["displacement"]) > 0 for r in rows[3:])


def test_scores_of_exact_and_offset_tracks():
    """The truth scores zero; a track off by a constant 2D offset is forgiven (it starts at its query) unless unanchored."""
    scene = render_scene(4, SceneConfig(frames=4, height=32, width=48))
    truth = zero_motion(scene)
    exact = Prediction(tracks=scene.tracks[0, :, 2::4, 2::4].permute(1, 2, 0, 3).reshape(-1, 4, 3).numpy() * 3.0, own_points=truth.own_points * 3.0)
    scores = scene_metrics(scene, exact)
    assert scores["epe2d"] < 1e-3 and scores["epe3d"] < 1e-3 and scores["delta_avg"] == 1.0
    still = scene_metrics(scene, truth)
    assert still["epe2d_moving"] > 1.0 and still["epe2d"] < still["epe2d_moving"]
    shifted = exact.tracks.copy()
    shifted[..., 0] += 0.05 * shifted[..., 2]  # every point 0.05 focal lengths to the right: a constant 2D shift
    offset = scene_metrics(scene, Prediction(tracks=shifted, own_points=exact.own_points))
    assert offset["epe2d"] < 1e-3 and offset["epe2d_unanchored"] > 1.0


def test_motion_recall_is_the_share_of_the_true_motion_carried():
    """1 for the truth, 0 for standing still or moving across, 0.5 for half the motion, -1 for the reverse; masked pairs do not count."""
    rng = np.random.default_rng(0)
    start = rng.uniform(0, 100, (20, 1, 2))
    true = start + np.cumsum(rng.normal(0, 5, (20, 6, 2)), axis=1) * (np.arange(6) > 0)[:, None]  # tracks starting at their query
    mask = np.ones((20, 6), bool)
    motion = true - start
    across = start + motion @ np.array([[0.0, 1.0], [-1.0, 0.0]])  # every displacement turned by 90 degrees
    cases = {1.0: true, 0.0: np.repeat(start, 6, axis=1), 0.5: start + 0.5 * motion, -1.0: start - motion}
    for expected, pred in cases.items():
        assert motion_recall(pred + 7.0, true, mask) == pytest.approx(expected)  # where the track starts does not matter
    assert motion_recall(across, true, mask) == pytest.approx(0.0, abs=1e-12)
    wild = true.copy()
    wild[:5] += rng.normal(0, 50, (5, 6, 2))
    mask[:5] = False  # e.g. static queries, or out of view
    assert motion_recall(wild, true, mask) == pytest.approx(1.0)
    assert np.isnan(motion_recall(true, true, np.zeros_like(mask)))


def test_motion_recall_is_not_swung_by_queries_that_barely_move():
    """The ratio of sums: one pair moving 0.01 px, predicted 1 px off, leaves it near 1 (a mean of per-pair ratios would be ~100)."""
    true = np.array([[[0, 0], [10, 0]], [[0, 0], [0.01, 0]]], dtype=float)
    pred = true + np.array([[[0, 0], [0, 0]], [[0, 0], [1.0, 0]]])
    assert motion_recall(pred, true, np.ones((2, 2), bool)) == pytest.approx(1.01, abs=0.01)


def test_motion_recall_of_scaled_motions_on_the_translating_square():
    """Through scene_metrics on the toy square (motion parallel to the image plane, so 2D motion is linear in 3D motion):
    the truth 1, zero motion 0, half the 3D displacement 0.5, the reverse -1, and the object-translation oracle is the truth."""
    scene = render_scene(1, SceneConfig(frames=4, height=64, width=112, stage="square"))
    truth = zero_motion(scene)
    tracks = scene.tracks[0, :, 2::4, 2::4].permute(1, 2, 0, 3).reshape(-1, 4, 3).double().numpy()
    start = tracks[:, :1]
    for gain in (1.0, 0.5, 0.0, -1.0):
        scores = scene_metrics(scene, Prediction(tracks=start + gain * (tracks - start), own_points=truth.own_points))
        assert scores["motion_recall"] == pytest.approx(gain, abs=1e-4), gain
    assert scene_metrics(scene, truth)["motion_recall"] == 0.0
    oracle = scene_metrics(scene, object_translation(scene))
    assert oracle["motion_recall"] == pytest.approx(1.0, abs=1e-4) and oracle["epe2d_moving"] < 1e-3


def test_object_translation_oracle_moves_each_point_with_its_object_centre():
    """For rigid objects the oracle's point and the true point keep the same distance to the true centre (only the turn differs); the room stays."""
    scene = render_scene(9, SceneConfig(frames=6, height=48, width=80, nonrigid_probability=0.0))
    oracle, still = object_translation(scene), zero_motion(scene)
    f, y, x = _queries(scene)
    ids = scene.object_ids.numpy()[f, y, x]
    truth = scene.tracks.numpy()[f, :, y, x]
    assert (ids > 0).any()
    np.testing.assert_array_equal(oracle.tracks[ids == 0], still.tracks[ids == 0])
    centre = scene.centres.numpy()[ids[ids > 0] - 1]  # [Q, T, 3]
    np.testing.assert_allclose(np.linalg.norm(oracle.tracks[ids > 0] - centre, axis=-1), np.linalg.norm(truth[ids > 0] - centre, axis=-1), atol=1e-4)
    assert scene_metrics(scene, oracle)["epe2d_moving"] < scene_metrics(scene, still)["epe2d_moving"]


def _train_as_worker(config_path: str) -> int:
    train(load_train_config(config_path), device="cpu", progress=False)
    return 0


def test_two_processes_train_like_one_with_their_batches_together(tmp_path):
    """Data-parallel training (gloo on CPU): 2 processes x batch 1 equal 1 process x batch 2, step for step."""
    together, parallel = tmp_path / "together", tmp_path / "parallel"
    together.mkdir(), parallel.mkdir()
    config = tiny_config(together, 6, scenes=None)
    config.batch_size = 2
    train(config, device="cpu", progress=False)
    tiny_config(parallel, 6, scenes=None)
    assert launch(_train_as_worker, str(parallel / "train.yaml"), 2) == 0  # placed as torchrun places them
    a = tracefield.load_model(None, together / "run" / "model.safetensors", device="cpu")
    b = tracefield.load_model(None, parallel / "run" / "model.safetensors", device="cpu")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-3, msg=name)
    assert len(losses(parallel)) == 6


def test_train_then_infer_with_the_checkpoint_alone_through_the_cli(tmp_path):
    """`tracefield train` writes a checkpoint that `tracefield infer --checkpoint FILE` runs without --config:
    the network (K = 4, not the default 10) and its runtime (frames resized to long side 64) come from the file."""
    from PIL import Image

    from tracefield.cli import main
    from tracefield.field import TraceField

    OmegaConf.save({"model": TINY_NET, "runtime": {"long_side": 64, "attention": "sdpa"}}, tmp_path / "net.yaml")
    OmegaConf.save({"model": str(tmp_path / "net.yaml"), "output": str(tmp_path / "run"), "log_every": 1,
                    "data": {"min_frames": 2, "max_frames": 2, "height": 32, "width": 48}, "optim": {"warmup_steps": 1, "steps": 100}},
                   tmp_path / "train.yaml")
    assert main(["train", "--config", str(tmp_path / "train.yaml"), "--steps", "3", "--device", "cpu", "-q"]) == 0
    model_file = tmp_path / "run" / "model.safetensors"
    assert len(losses(tmp_path)) == 3 and model_file.is_file()
    scene = render_scene(2, SceneConfig(frames=3, height=32, width=48))
    (tmp_path / "clip").mkdir()
    for i, image in enumerate(scene.images.numpy()):
        Image.fromarray(image).save(tmp_path / "clip" / f"{i:03d}.png")
    assert main(["infer", str(tmp_path / "clip"), "--checkpoint", str(model_file), "-o", str(tmp_path / "out"), "--device", "cpu", "-q"]) == 0
    field = TraceField.load(tmp_path / "out" / "clip")
    assert field.model["checkpoint"] == str(model_file) and not field.model["untrained"]
    assert field.num_frames == 3 and field.num_ctrl == 4
    assert field.transform.resized_hw == (42, 64) and field.hw == (32, 64)
    trained = tracefield.load_model(None, model_file, device="cpu")
    with torch.inference_mode():
        direct = trained.predict(torch.from_numpy(field.images.numpy()).permute(0, 3, 1, 2)[None].float() / 127.5 - 1, field.time_steps[None])
    torch.testing.assert_close(field.ctrl_pts.float(), direct["ctrl_pts3d"][0], rtol=2e-3, atol=2e-3)  # the trained weights ran


def test_training_batch_is_the_rendered_scene_with_frames_in_minus_one_to_one(tmp_path):
    """What the network trains on: the renderer's frames scaled as at inference (pixel / 127.5 - 1), with their exact tracks."""
    config = tiny_config(tmp_path, 5)
    config.data.min_frames = config.data.max_frames = 3
    batch = training_batch(0, config, torch.device("cpu"))
    scene = render_scene(0, SceneConfig(frames=3, height=32, width=48), visibility=False)  # step 0's seed
    expected = scene.images.permute(0, 3, 1, 2).double() / 127.5 - 1
    torch.testing.assert_close(batch["images"][0].double(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(batch["tracks"][0], scene.tracks)
    torch.testing.assert_close(batch["times"][0], scene.times)


def test_training_batch_follows_the_curriculum_by_step(tmp_path):
    """data.curriculum / data.stage_steps: step 0 trains on the square stage's scene of its seed, step 1 on the rotate stage's."""
    config = tiny_config(tmp_path, 5, scenes=None)
    config.data.curriculum, config.data.stage_steps = "square,rotate", [1]
    for step, stage in ((0, "square"), (1, "rotate")):
        batch = training_batch(step, config, torch.device("cpu"))
        scene = render_scene(step, SceneConfig(frames=3, height=32, width=48, stage=stage), visibility=False)
        torch.testing.assert_close(batch["tracks"][0], scene.tracks)
    with pytest.raises(TracefieldError, match="data.curriculum"):
        load_train_config(tmp_path / "train.yaml", ["data.curriculum=square,rotate"])  # two stages, no step where the second starts


def test_local_targets_are_what_each_camera_sees():
    """Each view's points at its own time, in its own camera (the local head's targets), project to their pixels at the rendered depth."""
    config = SceneConfig(frames=3, height=24, width=40)
    scene = render_scene(7, config, camera_motion="orbit")
    local = to_camera_frames(scene.tracks[None].double(), scene.poses[None].double())[0]  # [N, T, H, W, 3]
    own = local[torch.arange(3), torch.arange(3)]  # [N, H, W, 3]: view n at time n, in camera n
    k = scene.intrinsics.double()
    ys, xs = torch.meshgrid(torch.arange(24, dtype=torch.float64), torch.arange(40, dtype=torch.float64), indexing="ij")
    torch.testing.assert_close(own[..., 2], scene.depth.double(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(k[0, 0] * own[..., 0] / own[..., 2] + k[0, 2], xs.expand(3, -1, -1), rtol=0, atol=1e-3)
    torch.testing.assert_close(k[1, 1] * own[..., 1] / own[..., 2] + k[1, 2], ys.expand(3, -1, -1), rtol=0, atol=1e-3)


def test_learning_rate_warms_up_then_decays_to_one_percent():
    """Linear warm-up whose first step already learns and whose last reaches the peak, then a cosine to 1% at the end."""
    optim = OptimArgs(lr=1e-3, warmup_steps=10, steps=110)
    rates = [learning_rate(step, optim) for step in range(111)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a < b for a, b in zip(rates[:10], rates[1:10]))  # rising through the warm-up
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))  # then never rising
    assert rates[60] == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))  # half way through the cosine
    assert rates[110] == pytest.approx(1e-5)


def test_landscape_queries_right_of_the_image_height_are_scored():
    """2D scores count every query whose true projection is in the frame: on a 48-wide, 32-high frame the queries
    right of x = 32 are a third of them. Those alone are predicted 0.05 focal lengths off to the right after the
    query time; epe2d must be that offset times their share of the in-view pairs (pinhole projection by hand)."""
    scene = render_scene(4, SceneConfig(frames=4, height=32, width=48))
    truth = scene.tracks[0, :, 2::4, 2::4].permute(1, 2, 0, 3).reshape(-1, 4, 3).double().numpy()  # [Q, T, 3], query x = 2, 6, ..., 46
    columns = np.tile(np.arange(2, 48, 4), 8)
    right = columns >= 32
    shifted = truth.copy()
    shifted[right, 1:, 0] += 0.05 * shifted[right, 1:, 2]  # x / z grows by 0.05 at every time after the query time
    k = scene.intrinsics.double().numpy()
    assert np.allclose(scene.poses[0].numpy(), np.eye(4), atol=1e-6)  # the first camera is the world frame
    u = k[0, 0] * truth[..., 0] / truth[..., 2] + k[0, 2]
    v = k[1, 1] * truth[..., 1] / truth[..., 2] + k[1, 2]
    in_view = (truth[..., 2] > 0) & (u >= 0) & (u < 48) & (v >= 0) & (v < 32)
    off = np.zeros(in_view.shape, bool)
    off[right, 1:] = True
    expected = 0.05 * k[0, 0] * (in_view & off).sum() / in_view.sum()
    assert (in_view & off).sum() > 0.2 * in_view.sum()
    scores = scene_metrics(scene, Prediction(tracks=shifted, own_points=zero_motion(scene).own_points))
    assert scores["epe2d"] == pytest.approx(expected, rel=0.02)
    assert scores["epe2d_unanchored"] == pytest.approx(expected, rel=0.02)



def test_each_scene_of_a_batch_is_normalised_by_its_own_scale_and_times_score_their_l1_error():
    """The network predicts up to scale, scene by scene: two still scenes (no objects: every true trajectory is its
    point) predicted exactly but 0.5x and 4x too large score no trajectory error, only -alpha log(confidence); a scale
    shared by the batch would leave one. The time term is the mean absolute error of the predicted frame times."""
    config = SceneConfig(frames=3, height=16, width=24, min_objects=0, max_objects=0)
    tracks = torch.stack([render_scene(seed, config, visibility=False).tracks for seed in (9, 10)]).double()  # [2, N, T, H, W, 3]
    times = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    ctrl = tracks[:, :, :1].expand(-1, -1, 4, -1, -1, -1)  # K = 4 control points, all at the point
    torch.testing.assert_close(tracks, tracks[:, :, :1].expand_as(tracks))  # nothing moves
    conf = torch.full(ctrl.shape[:-1], 2.0, dtype=torch.float64)
    floor = -0.2 * torch.log(torch.tensor(2.0, dtype=torch.float64))
    scaled = ctrl * torch.tensor([0.5, 4.0], dtype=torch.float64)[:, None, None, None, None, None]
    torch.testing.assert_close(confidence_loss(scaled, conf, tracks, times, LossWeights()), floor)
    prediction = {"ctrl_pts3d": scaled, "ctrl_conf": conf, "time": torch.tensor([[0.1, 0.4, 1.0], [0.0, 0.8, 0.7]], dtype=torch.float64)}
    terms = trace_anything_loss(prediction, tracks, torch.eye(4, dtype=torch.float64).expand(2, 3, 4, 4), times, LossWeights(local=0.0))
    torch.testing.assert_close(terms["trajectory"], floor)
    torch.testing.assert_close(terms["time"], torch.tensor((0.1 + 0.1 + 0.0 + 0.0 + 0.3 + 0.3) / 6, dtype=torch.float64))
    torch.testing.assert_close(terms["total"], floor + terms["time"])


def test_visibility_of_exact_tracks_is_the_ground_truths_own_test():
    """Exact tracks and own points, predicted 3x too large, are scale-aligned before visibility is judged: their
    visibility is the renderer's test with the evaluation's 5% tolerance on the true depth maps, pair for pair."""
    from tracefield.data.synthetic import seen_by_cameras
    from tracefield.geometry.occlusion import RELATIVE_TOLERANCE

    scene = render_scene(4, SceneConfig(frames=4, height=32, width=48))
    f, y, x = _queries(scene)
    truth = scene.tracks[f, :, y, x].double()
    seen = seen_by_cameras(truth, scene.depth.double(), scene.intrinsics.double(), scene.poses.double(), RELATIVE_TOLERANCE).numpy()
    expected = float((seen == scene.visible[f, :, y, x].numpy()).mean())
    exact = Prediction(tracks=truth.numpy() * 3.0, own_points=zero_motion(scene).own_points * 3.0)
    assert scene_metrics(scene, exact)["visibility_acc"] == pytest.approx(expected, abs=1e-9)
    assert expected > 0.85


def test_scale_alignment_is_the_median_ratio_so_a_few_wild_queries_do_not_move_it():
    """Predictions are aligned to the truth by the median of |truth| / |prediction|: a tenth of the queries
    collapsed near the origin (ratio 1000x the others) must leave the rest exactly aligned, so the 3D error is
    those queries' alone, worked out from the truth by hand."""
    scene = render_scene(4, SceneConfig(frames=4, height=32, width=48))
    f, y, x = _queries(scene)
    truth = scene.tracks[f, :, y, x].double().numpy()  # [Q, T, 3]
    tracks = truth * 0.5  # the right shape at half the scale
    wild = np.arange(len(truth)) % 10 == 0
    tracks[wild] *= 1e-3
    scores = scene_metrics(scene, Prediction(tracks=tracks, own_points=zero_motion(scene).own_points * 0.5))
    expected = (np.linalg.norm(truth[wild], axis=-1) * (1 - 1e-3)).sum() / truth[..., 0].size
    assert scores["epe3d"] == pytest.approx(expected, rel=1e-6)


def test_tracks_are_scored_in_the_camera_of_the_query_frame():
    """Queries are frame 0's pixels, so 2D errors are measured in frame 0's camera (at the origin of the
    synthetic world): tracks right up to a depth along that camera's rays, a different one for every point
    and time, project exactly onto the true pixels there, in every other camera they would not."""
    scene = render_scene(4, SceneConfig(frames=4, height=32, width=48))
    assert torch.allclose(scene.poses[0].double(), torch.eye(4, dtype=torch.float64), atol=1e-12)
    f, y, x = _queries(scene)
    truth = scene.tracks[f, :, y, x].double().numpy()
    depth_error = np.random.default_rng(5).uniform(0.5, 3.0, truth.shape[:2] + (1,))
    scores = scene_metrics(scene, Prediction(tracks=truth * depth_error, own_points=zero_motion(scene).own_points))
    assert scores["epe2d_unanchored"] < 1e-6 and scores["epe2d"] < 1e-6 and scores["delta_avg"] == 1.0
    assert scores["epe3d"] > 0.1  # the depths are wrong: only the 3D error sees it
