#!/usr/bin/env python3
"""Make ``examples/synthetic/``: the clip ``make demo`` traces, rendered by tracefield's data platform.

A held-out scene (its seed is above every training seed): 16 frames of 256x448 with moving
objects and camera motion, plus its ground truth. Deterministic; re-run to regenerate.
"""

from pathlib import Path

from tracefield.data.synthetic import EVAL_SEED_BASE, SceneConfig, render_scene, save_scene

SEED = EVAL_SEED_BASE + 900_001

if __name__ == "__main__":
    config = SceneConfig(frames=16, height=256, width=448)
    save_scene(render_scene(SEED, config, camera_motion="orbit"), Path(__file__).resolve().parent / "synthetic", config)
