"""The processes of one run: where this one stands, its device and process group, and starting them.

``torchrun --nproc_per_node G -m tracefield <verb> ...`` starts G processes and tells each
its place in environment variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). :func:`launch` starts the same G
processes on this machine without torchrun (``tracefield generate --gpus G``), with the
same variables, so a process cannot tell how it was started. Each process then joins the
group (:func:`join`): one GPU each (NCCL) or, on a machine without one, the CPU (gloo, which
the tests use), and leaves it with the others (:func:`leave`).

The one home of this for every verb: ``infer`` (scenes dealt out by frames,
:mod:`tracefield.shards`), ``train`` (data parallel, gradients all-reduced on the GPUs) and
``generate`` (:mod:`tracefield.generate.parallel`).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Mapping, Optional

import torch
import torch.distributed as dist

from tracefield.errors import TracefieldError

log = logging.getLogger(__name__)

RUN_FIX = "start the processes with torchrun --nproc_per_node G (or --gpus G)"

# How long a collective waits for the slowest process when the processes meet only after each
# has done its share of the work (infer's scenes, generate's videos one per process): up to an
# item's worth of work apart, more than torch's default on NCCL (10 minutes). A process that
# fails does not leave the others waiting that long: torchrun (and :func:`launch`) stop them.
SHARES_APART = timedelta(hours=6)


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a run (alone: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def leader(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "World":
        """The place torchrun (or :func:`launch`) gave this process; rank 0 of 1 without one."""
        if "WORLD_SIZE" not in env:
            return cls()
        size = _whole(env, "WORLD_SIZE", 1)
        rank = _whole(env, "RANK", 0)
        local_size = _whole(env, "LOCAL_WORLD_SIZE", 1) if "LOCAL_WORLD_SIZE" in env else size
        local_rank = _whole(env, "LOCAL_RANK", 0) if "LOCAL_RANK" in env else rank
        if not 0 <= rank < size or not 0 <= local_rank < local_size or local_size > size:
            raise TracefieldError(
                f"environment RANK={rank} LOCAL_RANK={local_rank} of WORLD_SIZE={size} LOCAL_WORLD_SIZE={local_size}: "
                f"not a place among the processes; {RUN_FIX}"
            )
        return cls(rank=rank, size=size, local_rank=local_rank, local_size=local_size)


def _whole(env: Mapping[str, str], name: str, least: int) -> int:
    value = env.get(name, "")
    if not value.strip().isdigit() or int(value) < least:
        raise TracefieldError(f"environment {name}={value!r}: expected a whole number >= {least}; {RUN_FIX}")
    return int(value)


def share(count: int, world: World) -> range:
    """The indices of ``count`` items that are this process's: contiguous, all processes within one item of each other.

    For items of about equal cost (generate's videos, train's scenes of a step); infer's
    scenes differ in frames and are dealt by frame count instead (:func:`tracefield.shards.deal`).
    """
    return range(world.rank * count // world.size, (world.rank + 1) * count // world.size)


def check_gpus(processes: int, what: str) -> None:
    """``processes`` processes of this machine can each have a GPU of their own, with NCCL between them."""
    if not torch.cuda.is_available():
        raise TracefieldError(f"{what}: no CUDA GPU on this machine (torch {torch.__version__}); leave it out to run in one process")
    count = torch.cuda.device_count()
    if processes > count:
        raise TracefieldError(f"{what}: {processes} processes on this machine but it has {count} CUDA GPU(s); start at most {count}")
    if not dist.is_nccl_available():
        raise TracefieldError(f"{what}: torch {torch.__version__} was built without NCCL, which GPUs talk through; "
                              "install a CUDA build of PyTorch (pip install torch --index-url https://download.pytorch.org/whl/cu128)")


def join(world: World, device: torch.device, timeout: Optional[timedelta] = None) -> torch.device:
    """Join the run's process group; returns this process's device (GPU ``LOCAL_RANK`` on CUDA).

    On CUDA the group talks through NCCL, one GPU each, made this process's current device
    (which NCCL's collectives of Python objects need: :func:`exchange`, :func:`collect`). On
    the CPU it talks through gloo and each process gets its share of the cores (unless
    ``OMP_NUM_THREADS`` says otherwise), as torchrun would. ``timeout``: how long a collective
    waits for the others (torch's default when None; see :data:`SHARES_APART`).
    """
    if world.size == 1:
        return device
    if device.type == "cuda":
        check_gpus(world.local_size, f"torchrun --nproc_per_node {world.local_size}")
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", rank=world.rank, world_size=world.size, device_id=device, timeout=timeout)
    else:
        if "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world.local_size))
        dist.init_process_group("gloo", rank=world.rank, world_size=world.size, timeout=timeout)
    return device


def leave(world: World) -> None:
    """Leave together: a process tearing its group down while another still talks can abort it."""
    if world.size > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def launch(target: Callable[[Any], int], payload: Any, processes: int, start_method: str = "spawn") -> int:
    """Run ``target(payload)`` in ``processes`` processes of this machine, placed as torchrun places them.

    Returns 0, or the exit status of the first process that failed (the others are then
    stopped, so none waits forever on it). ``target`` returns an exit status; each process
    reports its own errors. A process that raised instead fails the run with status 1 and its
    error's last line, unless another had failed first (see :func:`_status_after_a_raise`).
    ``spawn`` starts clean interpreters (what CUDA needs); ``fork`` starts in an instant from
    this one (CPU only).
    """
    import torch.multiprocessing as mp

    logging.getLogger(mp.__name__ + ".spawn").setLevel(logging.ERROR)  # "Terminating process ..." after a failure
    context = mp.start_processes(_process, args=(target, payload, processes, _free_port()), nprocs=processes,
                                 join=False, start_method=start_method)
    try:
        while not context.join():
            pass
    except mp.ProcessExitedException as exc:
        return exc.exit_code if exc.exit_code > 0 else 1
    except mp.ProcessRaisedException as exc:
        return _status_after_a_raise(exc, [process.exitcode for process in context.processes])
    except KeyboardInterrupt:
        for process in context.processes:
            if process.is_alive():
                process.terminate()
        raise
    return 0


def _status_after_a_raise(exc: Exception, exit_codes: list[Optional[int]]) -> int:
    """The run's status when process ``exc.error_index`` raised rather than returned a status.

    Most often its collective broke because another process had already failed and exited (gloo:
    "Connection closed by peer"); that one has said why, and its status is the run's, not the
    raise, which the others' exit can beat or trail by milliseconds. Otherwise the raise is the
    failure: its last line is logged (the whole traceback at debug level) and the status is 1.
    """
    said = [code for index, code in enumerate(exit_codes) if index != exc.error_index and (code or 0) > 0]
    if said:
        return said[0]
    trace = exc.msg.strip().splitlines()
    log.error("process %d failed: %s", exc.error_index, trace[-1] if trace else "(no message)")
    log.debug("%s", exc.msg)
    return 1


def _process(index: int, target: Callable[[Any], int], payload: Any, processes: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(index), LOCAL_RANK=str(index),
                      WORLD_SIZE=str(processes), LOCAL_WORLD_SIZE=str(processes), GROUP_RANK="0", ROLE_RANK=str(index))
    code = target(payload)
    if code:
        sys.exit(code)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def exchange(item: Any, world: World) -> list:
    """Every process's ``item`` (a small picklable object) on every process, in rank order."""
    if world.size == 1:
        return [item]
    gathered: list = [None] * world.size
    dist.all_gather_object(gathered, item)
    return gathered


def collect(items: list, world: World) -> list:
    """Every process's ``items`` on process 0, in rank order (the others get ``[]``)."""
    if world.size == 1:
        return list(items)
    gathered: Optional[list] = [None] * world.size if world.leader else None
    dist.gather_object(list(items), gathered, dst=0)
    return [item for part in gathered for item in part] if gathered is not None else []
