"""A run of ``tracefield infer`` over its scenes, alone or as one of ``torchrun``'s processes.

Scenes already traced in the output folder are skipped (:func:`trace_all`); the rest are
shared out among the processes (:func:`share`) and each traces its share with
:class:`~tracefield.runner.InferRun`.

Every process finds the same scenes and the same finished ones. Each plans a strided share
of the rest (counting a video's frames means reading it), the plans are exchanged over a
gloo group (small Python objects; any device, any number of nodes through torchrun's
rendezvous), and scenes are dealt by frame count, largest first, each to the least loaded
process: a deterministic split every process computes alike. Each process then traces its
scenes on its own GPU (``cuda:LOCAL_RANK``) into the one output folder, and process 0
prints the summary of all.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch.distributed as dist

from tracefield.errors import TracefieldError, short_reason
from tracefield.infer import Footprint, InferOptions, ScenePlan, plan_scene
from tracefield.io.frames import SceneSource
from tracefield.model.network import TraceAnything
from tracefield.runner import InferRun, Pending, PlanFailure, RunSummary, SceneResult, is_finished, scene_of
from tracefield.scene_folder import SceneFolder
from tracefield.stages import Stages
from tracefield.workers import Workers

log = logging.getLogger(__name__)


def trace_all(
    scenes: Sequence[Pending],
    output_dir: str | Path,
    options: InferOptions,
    footprint: Footprint,
    load: Callable[[], TraceAnything],
    workers: Workers = Workers(),
    stages: Optional[Stages] = None,
) -> RunSummary:
    """Trace this process's share of ``scenes`` (all of them, alone); returns every process's results,
    the scenes skipped as already traced included."""
    output_dir = Path(output_dir)
    done = [s for s in scenes if not options.overwrite and is_finished(SceneFolder(output_dir / scene_of(s).name), options)]
    if done:
        log.info("skipping %d scene(s) already traced in %s (--overwrite traces them again)", len(done), output_dir)
    join(workers)
    try:
        mine = share([s for s in scenes if s not in done], options, workers)
        with InferRun(mine, output_dir, options, footprint, stages, keep_going=len(scenes) > 1, rank=workers.rank) as run:
            summary = run.trace(load)
        summary = gather(summary, workers)
    finally:
        leave(workers)
    summary.results += [SceneResult(scene_of(s).name, "skipped", folder=output_dir / scene_of(s).name) for s in done]
    return summary


def join(workers: Workers) -> None:
    """Join the other processes of a torchrun (nothing to do alone)."""
    if workers.size > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")


def leave(workers: Workers) -> None:
    if workers.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def deal(costs: Sequence[int], size: int) -> list[int]:
    """The process of each item: largest cost first, each to the least loaded process (ties: the lower rank)."""
    loads = [0] * size
    owners = [0] * len(costs)
    for item in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        owner = min(range(size), key=lambda r: (loads[r], r))
        owners[item] = owner
        loads[owner] += costs[item]
    return owners


def share(scenes: Sequence[Pending], options: InferOptions, workers: Workers) -> list[Pending]:
    """This process's scenes, planned (or failed to plan), balanced by frames over all processes."""
    if workers.size == 1:
        return list(scenes)
    mine = {i: _try_plan(scenes[i], options) for i in range(workers.rank, len(scenes), workers.size)}  # planned once, by one process
    gathered: list[Optional[dict]] = [None] * workers.size
    dist.all_gather_object(gathered, mine)
    planned: dict[int, Pending] = {i: item for part in gathered for i, item in part.items()}
    items = [planned[i] for i in range(len(scenes))]
    owners = deal([len(item.indices) if isinstance(item, ScenePlan) else 0 for item in items], workers.size)
    share = [item for item, owner in zip(items, owners) if owner == workers.rank]
    log.debug("process %d of %d: %d of %d scenes", workers.rank, workers.size, len(share), len(items))
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


def gather(summary: RunSummary, workers: Workers) -> RunSummary:
    """Every process's results, on every process (the wall time is the longest)."""
    if workers.size == 1:
        return summary
    parts: list[Optional[RunSummary]] = [None] * workers.size
    dist.all_gather_object(parts, summary)
    return RunSummary([r for part in parts for r in part.results], max(part.seconds for part in parts))
