"""Training: the loss falls on a tiny overfit run, checkpoints round-trip and resume exactly; evaluation runs."""

from __future__ import annotations

import csv

import torch
from omegaconf import OmegaConf

import tracefield
from tracefield.data.synthetic import SceneConfig
from tracefield.train.evaluate import evaluate, predict_scene, zero_motion
from tracefield.train.loop import load_train_config, train

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
    a = tracefield.load_model(None, whole / "run" / "model.safetensors")
    b = tracefield.load_model(None, split / "run" / "model.safetensors")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-3, msg=name)
    assert losses(whole)[25:] == losses(split)[25:]


def test_checkpoint_round_trip(tmp_path):
    model_file = train(tiny_config(tmp_path, 5), device="cpu", progress=False)
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == 5
    model = tracefield.load_model(None, model_file)  # config from the file's metadata
    assert not model.untrained and next(model.parameters()).dtype == torch.float32
    raw = tracefield.model.checkpoint.read_checkpoint(model_file)[0]
    assert all(v.dtype == torch.float16 for v in raw.values())


def test_evaluation_table_has_the_baselines():
    model = tracefield.load_model(TINY_NET)
    results = evaluate({"zero motion": zero_motion, "untrained": lambda s: predict_scene(model, s)}, 2,
                       SceneConfig(frames=4, height=32, width=48), progress=False)
    zero = results["zero motion"]
    assert 0 <= zero["delta_avg"] <= 1 and zero["epe2d"] >= 0 and zero["visibility_acc"] > 0.5
    assert results["untrained"]["epe3d"] > zero["epe3d"] * 0.5
