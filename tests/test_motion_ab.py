"""benchmarks/motion_ab.py's arms: the same data and budget, each differing from motion0 by exactly its own change."""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import asdict

from conftest import REPO

from tracefield.model.config import load_config


def load_runner():
    spec = importlib.util.spec_from_file_location("motion_ab", REPO / "benchmarks" / "motion_ab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_arms_share_data_and_budget_and_differ_by_their_own_change(tmp_path):
    runner = load_runner()
    args = argparse.Namespace(output=tmp_path, steps=600, batch=4, eval_every=200, stage="square", set=[])
    configs = {arm: runner.arm_config(arm, args) for arm in runner.ARMS}
    nets = {arm: load_config(config.model).net for arm, config in configs.items()}
    for arm, config in configs.items():
        assert asdict(config.data) == asdict(configs["today"].data) and config.data.curriculum == "square"
        assert asdict(config.optim) == asdict(configs["today"].optim) and config.optim.steps == 600 and config.batch_size == 4
        assert config.init_checkpoint is None  # from scratch
        assert (config.loss.plain, config.loss.moving) == (1.0, 5.0)
        assert config.loss.motion_start_step == (300 if arm == "today" else 0)
        assert config.loss.displacement == (1.0 if arm in ("displacement", "combined") else 0.0)
        assert nets[arm].head_args.ctrl_offsets == (arm in ("offsets", "combined"))
        assert nets[arm].decoder_args.position_embedding == (arm in ("position", "combined"))
        assert nets[arm].encoder_args == nets["today"].encoder_args and nets[arm].head_dims == nets["today"].head_dims
