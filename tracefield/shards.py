"""A run of ``tracefield infer`` over its scenes, alone or as one of ``torchrun``'s processes.

Scenes already traced in the output folder are skipped (:func:`trace_all`); the rest are
dealt out among the processes (:func:`deal_scenes`) and each traces its own with
:class:`~tracefield.runner.InferRun`.

Every process finds the same scenes and the same finished ones. Each plans a strided share
of the rest (counting a video's frames means reading it), the plans are exchanged (small
Python objects, :func:`tracefield.distributed.exchange`, over the group the CLI joined:
NCCL between GPUs, gloo on the CPU), and scenes are dealt by frame count, largest first,
each to the least loaded process: a deterministic split every process computes alike. Each
process then traces its scenes on its own GPU (``cuda:LOCAL_RANK``) into the one output
folder, and process 0 prints the summary of all.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

from tracefield.distributed import World, exchange
from tracefield.errors import TracefieldError, short_reason
from tracefield.infer import Footprint, InferOptions, ScenePlan, plan_scene
from tracefield.io.frames import SceneSource
from tracefield.model.network import TraceAnything
from tracefield.runner import InferRun, Pending, PlanFailure, RunSummary, SceneResult, is_finished, scene_of
from tracefield.scene_folder import SceneFolder
from tracefield.stages import Stages

log = logging.getLogger(__name__)


def trace_all(
    scenes: Sequence[Pending],
    output_dir: str | Path,
    options: InferOptions,
    footprint: Footprint,
    load: Callable[[], TraceAnything],
    world: World = World(),
    stages: Optional[Stages] = None,
) -> RunSummary:
    """Trace this process's share of ``scenes`` (all of them, alone); returns every process's results,
    the scenes skipped as already traced included. Several processes must have joined their
    group (:func:`tracefield.distributed.join`) and leave it after."""
    output_dir = Path(output_dir)
    done, todo = [], []
    for s in scenes:  # one pass: a resumed run of thousands of scenes compares no lists
        (done if not options.overwrite and is_finished(SceneFolder(output_dir / scene_of(s).name), options) else todo).append(s)
    if done:
        log.info("skipping %d scene(s) already traced in %s (--overwrite traces them again)", len(done), output_dir)
    mine = deal_scenes(todo, options, world)
    with InferRun(mine, output_dir, options, footprint, stages, keep_going=len(scenes) > 1, rank=world.rank) as run:
        summary = run.trace(load)
    summary = gather(summary, world)
    summary.results += [SceneResult(scene_of(s).name, "skipped", folder=output_dir / scene_of(s).name) for s in done]
    return summary


def run_infer(model: TraceAnything, scenes: Sequence[ScenePlan | SceneSource], output_dir: str | Path, options: Optional[InferOptions] = None) -> RunSummary:
    """Trace every scene into ``output_dir/<scene>`` with one loaded network, in this process (those
    already traced are skipped unless ``options.overwrite``); returns the run's summary (its
    ``written`` lists the scene folders). The library's entry point; the CLI adds processes."""
    return trace_all(scenes, output_dir, options or InferOptions(), Footprint.of(model), lambda: model)


def deal(costs: Sequence[int], size: int) -> list[int]:
    """The process of each item: largest cost first, each to the least loaded process (ties: the lower rank).

    For items whose costs differ a lot (scenes of 2 and of 400 frames); items of about equal
    cost are shared out contiguously by :func:`tracefield.distributed.share`.
    """
    loads = [0] * size
    owners = [0] * len(costs)
    for item in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        owner = min(range(size), key=lambda r: (loads[r], r))
        owners[item] = owner
        loads[owner] += costs[item]
    return owners


def deal_scenes(scenes: Sequence[Pending], options: InferOptions, world: World) -> list[Pending]:
    """This process's scenes, planned (or failed to plan), balanced by frames over all processes."""
    if world.size == 1:
        return list(scenes)
    mine = {i: _try_plan(scenes[i], options) for i in range(world.rank, len(scenes), world.size)}  # planned once, by one process
    planned: dict[int, Pending] = {i: item for part in exchange(mine, world) for i, item in part.items()}
    items = [planned[i] for i in range(len(scenes))]
    owners = deal([len(item.indices) if isinstance(item, ScenePlan) else 0 for item in items], world.size)
    share = [item for item, owner in zip(items, owners) if owner == world.rank]
    log.debug("process %d of %d: %d of %d scenes", world.rank, world.size, len(share), len(items))
    return share


def _try_plan(item: Pending, options: InferOptions) -> Pending:
    if not isinstance(item, SceneSource):
        return item
    scene = item
    try:
        return plan_scene(scene, options)
    except TracefieldError as exc:
        return PlanFailure(scene, str(exc))
    except Exception as exc:  # the owner reports it like any failure
        return PlanFailure(scene, f"{scene.location}: {short_reason(exc, typed=True)}")


def gather(summary: RunSummary, world: World) -> RunSummary:
    """Every process's results, on every process (the wall time is the longest): each exits non-zero when any scene failed."""
    if world.size == 1:
        return summary
    parts = exchange(summary, world)
    return RunSummary([r for part in parts for r in part.results], max(part.seconds for part in parts))
