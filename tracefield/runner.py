"""Many scenes through one loaded network, with decoding, the network and writing overlapped.

* **Overlap**: worker threads plan and decode the next scenes while the main thread runs the
  network on the current one, and a writer thread writes finished scenes (their PNGs on a
  pool). The network loads as soon as the first scene is known to be traceable (a video's
  header read, a folder planned), while its frames decode; on a GPU, if they are still
  decoding once it has loaded, a warm-up pass at their shape runs meanwhile (else the scene's
  own pass warms up: a blank pass would only add its time).
* **Resuming**: a scene whose folder is already finished is skipped (``--overwrite`` traces
  it again). Scene folders appear atomically, so a killed run loses only the scenes in
  flight (at most one being traced and one being written) and the next run goes on from
  there.
* **Failures**: with several scenes, a scene that fails (an unreadable file, out of memory)
  is reported with its reason and the others go on; with one scene its error is the run's.
* **Summary**: scenes traced, skipped and failed, their frames and seconds, and the reasons.

Per-stage seconds (:mod:`tracefield.stages`) come from here: ``tracefield infer --profile``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from tqdm import tqdm

from tracefield.errors import TracefieldError, short_reason
from tracefield.infer import Footprint, InferOptions, PreparedScene, ScenePlan, build_field, check_memory, plan_scene, predict, prepare_scene, warm_up
from tracefield.io.frames import SceneSource
from tracefield.masks import foreground_masks
from tracefield.model.network import TraceAnything
from tracefield.primer import start_priming
from tracefield.scene_folder import SceneFolder
from tracefield.scene_writer import SceneOutput, pinned_bytes, scene_output, write_scene
from tracefield.stages import Stages

log = logging.getLogger(__name__)

DECODE_WORKERS = 2  # scenes decoding at once (ffmpeg decodes in processes of its own)
PREFETCH = 3  # scenes planned or decoded ahead of the network
WRITES_IN_FLIGHT = 2  # traced scenes waiting for or being written; beyond, the network waits
PNG_WORKERS = 8


@dataclass
class PlanFailure:
    """A scene that already failed to plan elsewhere (another process of a torchrun)."""

    scene: SceneSource
    message: str


Pending = Union[SceneSource, ScenePlan, PlanFailure]


@dataclass
class SceneResult:
    name: str
    status: str  # "traced", "skipped" (already finished) or "failed"
    frames: int = 0
    seconds: float = 0.0  # from the start of its decoding to the end of its writing
    reason: str = ""
    folder: Optional[Path] = None
    rank: int = 0  # the process that traced it (torchrun)
    caveat: Optional[str] = None  # what the network that traced it can do (TraceField.caveat), when worth saying


@dataclass
class RunSummary:
    results: list[SceneResult] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the run

    @property
    def written(self) -> list[Path]:
        return [r.folder for r in self.results if r.status == "traced"]

    @property
    def failures(self) -> list[SceneResult]:
        return [r for r in self.results if r.status == "failed"]

    def table(self) -> str:
        """Scenes, frames and seconds per outcome, then every failure with its reason."""
        lines = [f"{'scenes':>7} {'frames':>7} {'seconds':>8}  outcome"]
        traced, skipped, failed = ([r for r in self.results if r.status == s] for s in ("traced", "skipped", "failed"))
        if traced:
            rate = 60 * len(traced) / self.seconds if self.seconds > 0 else 0.0
            lines.append(f"{len(traced):>7} {sum(r.frames for r in traced):>7} {self.seconds:>8.1f}  traced ({rate:.1f} scenes/min, loading included)")
        if skipped:
            lines.append(f"{len(skipped):>7} {'-':>7} {'-':>8}  skipped: already traced (--overwrite traces them again)")
        if failed:
            lines.append(f"{len(failed):>7} {'-':>7} {'-':>8}  failed:")
        ranks = sorted({r.rank for r in self.results if r.status != "skipped"})
        for rank in ranks if len(ranks) > 1 else []:
            mine = [r for r in self.results if r.rank == rank and r.status != "skipped"]
            lines.append(f"  process {rank}: {len(mine)} scenes, {sum(r.frames for r in mine)} frames traced")
        lines += [f"  failed {r.name}: {r.reason}" for r in self.failures]
        return "\n".join(lines)


@dataclass
class _Slot:
    """One scene on its way through the workers: its plan and its frames, each a future, and
    ``traceable``, done once its file is known to open (or its planning has ended)."""

    item: Pending
    started: float
    traceable: Future = field(default_factory=Future)
    plan: Future = field(default_factory=Future)
    frames: Future = field(default_factory=Future)

    def opened(self) -> None:
        if not self.traceable.done():  # set once, by the one worker preparing this slot
            self.traceable.set_result(None)

    @property
    def name(self) -> str:
        return scene_of(self.item).name


def scene_of(item: Pending) -> SceneSource:
    return item if isinstance(item, SceneSource) else item.scene


def is_finished(folder: SceneFolder, options: InferOptions) -> bool:
    """The scene folder holds a complete result of what this run would write."""
    return folder.field_file.is_file() and (not options.release_output or folder.release_file.is_file())


class InferRun:
    """Traces ``scenes`` into ``output_dir/<scene>`` (finished ones are skipped before, by
    :func:`tracefield.shards.trace_all`); use as a context manager, then :meth:`trace`.

    ``footprint``: the network's memory footprint, so that scenes that cannot fit are refused
    before decoding. ``keep_going``: record a failed scene and go on (several scenes) rather
    than raise its error (one scene). ``rank``: this process's rank, recorded in results.
    """

    def __init__(
        self,
        scenes: Sequence[Pending],
        output_dir: str | Path,
        options: InferOptions,
        footprint: Footprint,
        stages: Optional[Stages] = None,
        keep_going: bool = True,
        rank: int = 0,
    ) -> None:
        self.output_dir, self.options, self.footprint = Path(output_dir), options, footprint
        self.stages = stages or Stages()
        self.keep_going, self.rank = keep_going, rank
        self.summary = RunSummary()
        self._todo: deque[Pending] = deque(scenes)
        self._single = len(self._todo) == 1  # one scene: its own progress bars
        self._slots: deque[_Slot] = deque()
        self._stop = threading.Event()
        self._decoders = ThreadPoolExecutor(DECODE_WORKERS, thread_name_prefix="tracefield-decode")
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="tracefield-write")
        self._pngs = ThreadPoolExecutor(PNG_WORKERS, thread_name_prefix="tracefield-png")
        self._write_slots = threading.Semaphore(WRITES_IN_FLIGHT)
        self._writes: list[Future] = []
        self._started = time.perf_counter()
        self._lock = threading.Lock()

    def __enter__(self) -> "InferRun":
        self._refill()
        if self._slots:  # the GPU's one-time set-up beside the loading and the first decoding
            start_priming(self.footprint.device, self._slots[0].plan, self._pinned_bytes)
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for slot in self._slots:
            for future in (slot.plan, slot.frames):
                future.cancel()
        self._decoders.shutdown(wait=False, cancel_futures=True)
        for write in self._writes:  # scenes already traced are worth their last second of writing
            write.exception()
        self._writer.shutdown()
        self._pngs.shutdown()

    @property
    def to_trace(self) -> int:
        """Scenes this run will try to trace (the others are finished already)."""
        return len(self._todo) + len(self._slots)

    def _pinned_bytes(self, plan: ScenePlan) -> int:
        """The pinned block :func:`scene_output` will take for ``plan``'s scene."""
        return pinned_bytes(len(plan.indices), plan.transform.model_hw, self.footprint.net.num_ctrl_pts, self.options.field_dtype,
                            self.footprint.keeps_local(self.options.local_head))

    # ------------------------------------------------------------------ workers
    def _refill(self) -> None:
        while self._todo and len(self._slots) < PREFETCH:
            slot = _Slot(self._todo.popleft(), time.perf_counter())
            self._slots.append(slot)
            self._decoders.submit(self._prepare, slot)

    def _prepare(self, slot: _Slot) -> None:
        """Worker: plan (refusing what cannot fit), then decode; each outcome lands in its future."""
        if self._stop.is_set():
            return
        try:
            with self.stages("plan"):
                plan = self._plan(slot)
                check_memory(self.footprint, plan, self.options.local_head)
        except BaseException as exc:  # delivered to the main thread, which decides
            slot.plan.set_exception(exc)
            return
        finally:
            slot.opened()
        slot.plan.set_result(plan)
        try:
            with self.stages("decode"):
                prepared = prepare_scene(plan, self.options, progress=self.options.progress and self._single)
        except BaseException as exc:
            slot.frames.set_exception(exc)
            return
        plan.decoded = None  # now in ``prepared``, resized: the full-size frames are not needed again
        slot.frames.set_result(prepared)

    def _plan(self, slot: _Slot) -> ScenePlan:
        item = slot.item
        if isinstance(item, PlanFailure):
            raise TracefieldError(item.message)
        return item if isinstance(item, ScenePlan) else plan_scene(item, self.options, on_open=slot.opened)

    # ------------------------------------------------------------------ the network (main thread)
    def trace(self, load: Callable[[], TraceAnything]) -> RunSummary:
        """Trace every pending scene; ``load`` gives the network, called once the first scene is known to be traceable.

        No network is loaded when nothing is left to trace (all finished, or all failed).
        """
        model: Optional[TraceAnything] = None
        bar = tqdm(total=self.to_trace, desc="scenes", unit="scene", disable=self._single or not self.options.progress or None)
        with bar:
            while self._slots:
                slot = self._slots.popleft()
                self._refill()
                try:
                    if model is None:
                        model = self._load(load, slot)
                        self._warm_up(model, slot)
                    plan: ScenePlan = slot.plan.result()
                    prepared: PreparedScene = slot.frames.result()
                    output = self._run_network(model, plan, prepared)
                except _LoadError as exc:
                    raise exc.__cause__ from None
                except Exception as exc:  # a bad file, out of memory, or a bug: with keep_going the other scenes go on
                    self._failed(slot, exc)
                else:
                    self._write(slot, plan, output)
                bar.update()
        for write in self._writes:
            write.result()
        self.summary.seconds = time.perf_counter() - self._started
        return self.summary

    def _load(self, load: Callable[[], TraceAnything], slot: _Slot) -> TraceAnything:
        """The network, once ``slot``'s scene is known to be traceable; its errors end the run,
        whatever the scenes. Raises the scene's own error, loading nothing, if it failed before its file opened.
        """
        slot.traceable.result()
        if slot.plan.done() and slot.plan.exception() is not None:
            slot.plan.result()
        try:
            with self.stages("load"):
                return load()
        except Exception as exc:
            raise _LoadError() from exc

    def _warm_up(self, model: TraceAnything, slot: _Slot) -> None:
        """A pass at ``slot``'s shape while its frames still decode; none once they are ready (the scene's own pass warms up)."""
        if slot.frames.done() or slot.plan.exception() is not None:  # waits for the plan, whose shape the pass needs
            return
        try:
            with self.stages("warm-up", gpu=True):
                warm_up(model, slot.plan.result(), self.options.local_head)
        except Exception as exc:  # the scene itself will tell what is wrong
            log.debug("warm-up failed: %s", exc, exc_info=exc)

    def _run_network(self, model: TraceAnything, plan: ScenePlan, prepared: PreparedScene) -> SceneOutput:
        options = self.options
        log.info("tracing %s", plan.scene.describe())
        with self.stages("network", gpu=True):
            out = predict(model, prepared.frames, prepared.time_steps, plan.scene.name, options.progress and self._single, options.local_head)
        with self.stages("masks", gpu=True):
            masks = foreground_masks(out["ctrl_pts3d"])
        with self.stages("field", gpu=True):
            field = build_field(model, prepared, out, options, masks=masks)
            del out
            return scene_output(field, plan.scene.name, options.field_dtype, release=options.release_output)

    def _write(self, slot: _Slot, plan: ScenePlan, output: SceneOutput) -> None:
        self._write_slots.acquire()  # back-pressure: the network waits for a slow disk
        self._writes.append(self._writer.submit(self._write_scene, slot, plan, output))

    def _write_scene(self, slot: _Slot, plan: ScenePlan, output: SceneOutput) -> None:
        try:
            with self.stages("writing"):
                folder = write_scene(output, self.output_dir / output.name, self._pngs)
        except Exception as exc:  # a full disk, a permission: this scene fails
            self._failed(slot, exc)
            return
        finally:
            self._write_slots.release()
        self.stages.mark(output.name)
        self._record(SceneResult(output.name, "traced", len(plan.indices), time.perf_counter() - slot.started, folder=folder, rank=self.rank,
                                 caveat=output.caveat))
        log.info("%s: wrote %s (look at %s)", output.name, folder, SceneFolder(folder).preview)

    def _failed(self, slot: _Slot, exc: BaseException) -> None:
        """Record a failed scene (several scenes), or raise its error (one scene)."""
        if not self.keep_going:
            raise exc
        ours = isinstance(exc, (TracefieldError, OSError))
        reason = str(exc) if isinstance(exc, TracefieldError) else short_reason(exc, typed=True)
        if ours:
            log.warning("%s: failed: %s; the other scenes go on", slot.name, reason)
        else:  # a bug, or a library's surprise: its traceback helps
            log.error("%s: failed (%s); the other scenes go on", slot.name, reason, exc_info=exc)
        self._record(SceneResult(slot.name, "failed", seconds=time.perf_counter() - slot.started, reason=reason, rank=self.rank))

    def _record(self, result: SceneResult) -> None:
        with self._lock:
            self.summary.results.append(result)


class _LoadError(Exception):
    """Carries an error of loading the network past the per-scene handling (it ends the run)."""
