#!/usr/bin/env python3
"""Conformance report: our network vs the reference outputs in ../shared/vectors.

For every ta_*.safetensors: load its state dict into our network (fp32, CPU), run its
inputs through the release's interface, and print the worst relative error
||ours - ref|| / ||ref|| over views for each output (tracks via tracefield.curves).
The bar is 1e-4.

    python benchmarks/conformance.py [--attention math|sdpa]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import safe_open

import tracefield
from tracefield.curves import evaluate_points_and_conf

VECTORS = Path(__file__).resolve().parents[2] / "shared" / "vectors"
KEYS = ("time", "ctrl_pts3d", "ctrl_conf", "ctrl_pts3d_local", "ctrl_conf_local", "track_pts3d", "track_conf")


def report(path: Path, attention: str) -> dict[str, float]:
    with safe_open(str(path), framework="pt") as handle:
        config = json.loads(handle.metadata()["config"])
        t = {key: handle.get_tensor(key) for key in handle.keys()}
    state = {k[3:]: v for k, v in t.items() if k.startswith("sd.")}
    views = [{"img": t[f"in.img.{i}"], "time_step": t[f"in.time.{i}"]} for i in range(sum(k.startswith("in.img.") for k in t))]
    model = tracefield.load_model(config, state, device="cpu", dtype="float32", attention=attention)
    outputs = model(views)
    times = torch.cat([out["time"] for out in outputs])
    worst = dict.fromkeys(KEYS, 0.0)
    for i, out in enumerate(outputs):
        out["track_pts3d"], out["track_conf"] = evaluate_points_and_conf(out["ctrl_pts3d"], out["ctrl_conf"], times)
        for key in KEYS:
            ref = t[f"out.{i}.{key}"].double()
            worst[key] = max(worst[key], ((out[key].double() - ref).norm() / ref.norm()).item())
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description="Relative errors of our network against the conformance vectors.")
    parser.add_argument("--attention", default="math", choices=["math", "sdpa"])
    args = parser.parse_args()
    print(f"{'vector':24}" + "".join(f"{k:>17}" for k in KEYS))
    for path in sorted(VECTORS.glob("ta_*.safetensors")):
        worst = report(path, args.attention)
        print(f"{path.stem:24}" + "".join(f"{worst[k]:17.2e}" for k in KEYS))


if __name__ == "__main__":
    main()
