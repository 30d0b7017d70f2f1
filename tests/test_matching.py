"""The correspondence term: its targets are the true patches, its loss rewards true matches, training with it resumes exactly."""

from __future__ import annotations

import csv
import math

import torch
import torch.nn.functional as F

import tracefield
from tracefield.data.synthetic import SceneConfig, render_scene
from tracefield.train.loop import train
from tracefield.train.matching import matching_loss, patch_targets

from test_train import tiny_config

PATCH = 16


def patch_centres(frames: torch.Tensor, config: SceneConfig) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(config.height // PATCH) * PATCH + PATCH // 2
    xs = torch.arange(config.width // PATCH) * PATCH + PATCH // 2
    return ys, xs


def test_targets_land_on_the_same_object():
    """Independent check through the renderer's object ids: a target patch shows what the query patch showed."""
    config = SceneConfig(frames=6, height=64, width=112)
    scene = render_scene(3, config, visibility=False)
    query = torch.tensor([0, 3, 5])
    targets, valid = patch_targets(scene.tracks, scene.depth, scene.intrinsics, scene.poses, query, PATCH)
    cols = config.width // PATCH
    ys, xs = patch_centres(query, config)
    query_ids = scene.object_ids[query][:, ys][:, :, xs].flatten(1)  # [Q, P]
    frames = torch.arange(config.frames).expand_as(targets)
    target_ids = scene.object_ids[frames, (targets // cols) * PATCH + PATCH // 2, (targets % cols) * PATCH + PATCH // 2]
    assert valid.float().mean() > 0.5
    assert not valid[torch.arange(3), :, query].any()  # never a frame against itself
    assert (target_ids == query_ids[..., None])[valid].float().mean() > 0.9
    assert scene.moving.any()


def test_targets_of_a_still_scene_are_the_query_patches():
    config = SceneConfig(frames=4, height=48, width=80, min_objects=0, max_objects=0)
    scene = render_scene(5, config, camera_motion="static", visibility=False)
    targets, valid = patch_targets(scene.tracks, scene.depth, scene.intrinsics, scene.poses, torch.tensor([1]), PATCH)
    patches = (config.height // PATCH) * (config.width // PATCH)
    expected = torch.arange(patches)[None, :, None].expand_as(targets)
    others = torch.tensor([0, 2, 3])
    assert valid[0][:, others].all()
    assert torch.equal(targets[0][:, others], expected[0][:, others])


def test_loss_rewards_true_correspondences():
    config = SceneConfig(frames=4, height=48, width=80, min_objects=0, max_objects=0)
    scene = render_scene(5, config, camera_motion="static", visibility=False)
    patches = (config.height // PATCH) * (config.width // PATCH)
    batch = [t[None] for t in (scene.tracks, scene.depth, scene.intrinsics, scene.poses)]
    identity = torch.eye(patches)[None, None].expand(1, config.frames, patches, patches)  # each patch its own descriptor
    random = F.normalize(torch.randn(1, config.frames, patches, 8, generator=torch.Generator().manual_seed(0)), dim=-1)
    perfect = matching_loss([identity], *batch, PATCH, torch.Generator().manual_seed(0))
    chance = matching_loss([random], *batch, PATCH, torch.Generator().manual_seed(0))
    assert perfect.item() < 0.01
    assert chance.item() > 0.5 * math.log(patches)


def test_training_with_the_matching_term_logs_it_and_resumes_exactly(tmp_path):
    whole, split = tmp_path / "whole", tmp_path / "split"
    whole.mkdir(), split.mkdir()
    for folder in (whole, split):
        config = tiny_config(folder, 12, scenes=None)
        config.loss.match = 1.0
        if folder is split:
            train(config, device="cpu", max_steps=6, progress=False)
        train(config, device="cpu", progress=False)
    with open(whole / "run" / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 12 and all(float(row["match"]) > 0 for row in rows)
    with open(split / "run" / "log.csv") as handle:
        assert [row["match"] for row in csv.DictReader(handle)][6:] == [row["match"] for row in rows][6:]
    a = tracefield.load_model(None, whole / "run" / "model.safetensors", device="cpu")
    b = tracefield.load_model(None, split / "run" / "model.safetensors", device="cpu")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-3, msg=name)
    assert not any("match" in key for key in a.state_dict())  # the training-only head stays out of the model file
