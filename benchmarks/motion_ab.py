#!/usr/bin/env python3
"""Issue 18's A/B table: which change lets a small network trace motion, each arm from scratch on the toy family.

    python benchmarks/motion_ab.py --output runs/motion_ab                                    # one H200: every arm, 3000 steps
    python benchmarks/motion_ab.py --device cpu --steps 300 --eval-every 100 --scenes 8 --batch 2   # a CPU pilot

Every arm trains ``configs/toy.yaml`` (2.9 M parameters) from random weights with
``configs/train_toy.yaml`` plus its own overrides, on the same training scenes (the same
seeds, step for step), for the same number of steps and batch. After every
``--eval-every`` steps it is scored on ``--scenes`` held-out scenes of the same stage
(seeds training never renders) with ``tracefield eval``'s metrics; motion recall is the
one to read (1: the tracks carry all the true 2D motion of moving points, 0: static).

Arms (all but ``today`` switch the motion terms on from step 0, so each of the others
adds one change to ``motion0`` and gets the whole budget for it):

* ``today``: the recipe of the shipped checkpoint: the geometry objective alone for the
  first half, then plain + moving-pixel weighting;
* ``motion0``: the same motion terms from step 0 (no geometry-only stage);
* ``displacement``: + the squared displacement term on moving pixels (``loss.displacement``);
* ``offsets``: + control points as the pixel's own-time point plus offsets (``head_args.ctrl_offsets``);
* ``position``: + a 2D position embedding in the decoder's token values (``decoder_args.position_embedding``);
* ``combined``: all of the above together.

Each arm keeps its run in ``<output>/<arm>`` (``last.pt``, ``log.csv``) and its scores in
``scores.json``, so a run cut short (the device taken away) resumes where it stopped when
started again with the same arguments. The table goes to ``<output>/table.md`` and is
printed last.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from omegaconf import OmegaConf

from tracefield.data.synthetic import SceneConfig
from tracefield.model import load_model, resolve_device
from tracefield.paths import REPO_ROOT
from tracefield.train.evaluate import evaluate, object_translation, predict_scene, zero_motion
from tracefield.train.loop import load_train_config, train

MOTION0 = ["loss.motion_start_step=0"]
ARMS: dict[str, tuple[list[str], list[str]]] = {  # arm -> (training overrides, network overrides)
    "today": ([], []),
    "motion0": (MOTION0, []),
    "displacement": (MOTION0 + ["loss.displacement=1.0"], []),
    "offsets": (MOTION0, ["head_args.ctrl_offsets=true"]),
    "position": (MOTION0, ["decoder_args.position_embedding=true"]),
    "combined": (MOTION0 + ["loss.displacement=1.0"], ["head_args.ctrl_offsets=true", "decoder_args.position_embedding=true"]),
}
COLUMNS = ("epe2d_moving", "epe3d", "delta_avg")

log = logging.getLogger("motion_ab")


def arm_config(arm: str, args: argparse.Namespace):
    """The training config of ``arm``: configs/train_toy.yaml, the budget and stage of this run, then the arm's own keys."""
    folder = args.output / arm
    folder.mkdir(parents=True, exist_ok=True)
    training, network = ARMS[arm]
    net = OmegaConf.merge(OmegaConf.load(REPO_ROOT / "configs" / "toy.yaml"), OmegaConf.from_dotlist([f"model.{key}" for key in network]))
    OmegaConf.save(net, folder / "net.yaml")
    budget = [f"output={folder}", f"model={folder / 'net.yaml'}", f"optim.steps={args.steps}", f"batch_size={args.batch}",
              f"checkpoint_every={args.eval_every}", f"log_every={min(50, args.eval_every)}", f"data.curriculum={args.stage}",
              f"optim.warmup_steps={min(100, args.steps // 10)}", f"loss.motion_start_step={args.steps // 2}"]
    return load_train_config(REPO_ROOT / "configs" / "train_toy.yaml", budget + list(args.set) + training)


def run_arm(arm: str, args: argparse.Namespace, scenes: SceneConfig, device: str) -> dict:
    """Train ``arm`` in chunks of ``--eval-every`` steps, scoring after each; returns {step: metrics} and seconds per step."""
    config = arm_config(arm, args)
    record_file = args.output / arm / "scores.json"
    record = json.loads(record_file.read_text()) if record_file.exists() else {"scores": {}, "seconds": 0.0, "steps": 0}
    for step in range(args.eval_every, args.steps + 1, args.eval_every):
        if str(step) in record["scores"]:
            continue
        started = time.perf_counter()
        model_file = train(config, device=device, max_steps=step - record["steps"], progress=False)
        record["seconds"] += time.perf_counter() - started
        record["steps"] = step
        model = load_model(None, model_file, device=device, dtype="float32")
        record["scores"][str(step)] = evaluate({"model": lambda s: predict_scene(model, s)}, args.scenes, scenes, device=device, progress=False)["model"]
        record_file.write_text(json.dumps(record, indent=1))
        log.info("%s step %d: motion recall %.3f, moving EPE %.2f px", arm, step, record["scores"][str(step)]["motion_recall"], record["scores"][str(step)]["epe2d_moving"])
    return record


def table(records: dict[str, dict], baselines: dict[str, dict], steps: list[int]) -> str:
    """Markdown: motion recall at every scored step, then the last step's other metrics and seconds per step."""
    head = ["arm", *[f"recall @{s}" for s in steps], *[f"{c} @{steps[-1]}" for c in COLUMNS], "s/step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, record in records.items():
        scores = [record["scores"][str(s)] for s in steps]
        cells = [f"{s['motion_recall']:.3f}" for s in scores] + [f"{scores[-1][c]:.3f}" for c in COLUMNS]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {record['seconds'] / max(record['steps'], 1):.3f} |")
    for name, scores in baselines.items():
        lines.append(f"| {name} | " + " | ".join([f"{scores['motion_recall']:.3f}"] * len(steps) + [f"{scores[c]:.3f}" for c in COLUMNS]) + " | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="arms to run (default: all)")
    parser.add_argument("--steps", type=int, default=3000, help="training steps per arm (default: 3000)")
    parser.add_argument("--batch", type=int, default=8, help="scenes per step (default: 8)")
    parser.add_argument("--eval-every", type=int, default=500, help="score every this many steps (default: 500)")
    parser.add_argument("--scenes", type=int, default=50, help="held-out scenes per score (default: 50)")
    parser.add_argument("--stage", default="square", help="toy stage(s) trained and scored: square, rotate, camera or full (default: square)")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    parser.add_argument("--output", type=Path, default=Path("runs/motion_ab"), help="runs, scores and table.md (default: runs/motion_ab)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="training overrides for every arm, e.g. optim.lr=1e-3")
    args = parser.parse_args()
    if args.steps % args.eval_every:
        parser.error("--steps must be a multiple of --eval-every")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = str(resolve_device(args.device))
    scenes = SceneConfig(frames=4, height=64, width=112, stage=args.stage.split(",")[-1])  # scored on the last stage trained
    records = {arm: run_arm(arm, args, scenes, device) for arm in args.arms}
    baselines = {name: evaluate({name: method}, args.scenes, scenes, device=device, progress=False)[name]
                 for name, method in (("zero motion", zero_motion), ("object translation", object_translation))}
    text = table(records, baselines, list(range(args.eval_every, args.steps + 1, args.eval_every)))
    text = f"{args.stage}, {args.steps} steps of batch {args.batch}, {args.scenes} held-out scenes, {device}\n\n{text}"
    (args.output / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
