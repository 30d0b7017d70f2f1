"""Joins of the tracing pipeline checked against values worked out by hand: the memory refusal's
advice and the run summary's rate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import TINY_NET
from tracefield.errors import TracefieldError
from tracefield.infer import Footprint, ScenePlan, check_memory, estimate_memory
from tracefield.io.frames import SceneSource
from tracefield.io.preprocess import Preprocess
from tracefield.model.config import load_config
from tracefield.runner import RunSummary, SceneResult


def test_the_suggested_max_frames_is_the_most_that_fit(monkeypatch):
    """A refused scene's advice is the largest --max-frames whose estimate fits in the free memory:
    rerunning with it must succeed, and one frame more must not (not merely "some number >= 2")."""
    footprint = Footprint.planned(load_config(TINY_NET), torch.device("cpu"), torch.float32)
    transform = Preprocess.plan(256, 512)
    hw = transform.model_hw
    free = estimate_memory(footprint, 37, hw) + 1  # 37 frames fit, 38 do not
    monkeypatch.setattr("tracefield.infer.available_memory", lambda device: free)
    scene = SceneSource("clip", "frames", [Path("clip") / f"{i:04d}.png" for i in range(1000)])
    plan = ScenePlan(scene=scene, indices=list(range(1000)), total=1000, transform=transform)
    with pytest.raises(TracefieldError) as refused:
        check_memory(footprint, plan)
    suggested = int(str(refused.value).split("--max-frames ")[1].split()[0])
    assert suggested == 37
    assert estimate_memory(footprint, suggested, hw) <= free < estimate_memory(footprint, suggested + 1, hw)


def test_the_summary_rate_is_scenes_per_minute():
    """Three scenes traced in 30 seconds of wall time are 6 scenes a minute, whatever each scene took on its own."""
    traced = [SceneResult(name, "traced", frames=10, seconds=20.0) for name in "abc"]
    line = next(line for line in RunSummary(traced, seconds=30.0).table().splitlines() if "traced (" in line)
    assert line.split()[:3] == ["3", "30", "30.0"]
    assert "(6.0 scenes/min" in line
