"""The set-up a fresh process pays on its first traced scene on a GPU, paid on a thread beside the loading.

A cold ``tracefield infer`` on one H200 spent 1.25-1.55 s on its first network pass against
0.19 s warm, and 0.3-0.5 s on its first pinned host block (the outputs' copy back). Profiled in
a fresh process, 0.75 s of that first pass was importing Triton and hashing its sources for its
kernel-cache key: nothing tied to the network's weights or to the scene. So, as soon as a run has
scenes to trace, a thread makes the CUDA context, imports the fused kernels and computes Triton's
key, runs the foreground masks' kernels once on a few pixels, and, once the first scene is
planned, pins a block of the size its outputs will take and hands it back to PyTorch's caching
host allocator, where :func:`tracefield.scene_writer.scene_output` finds it. The model loads and
the frames decode meanwhile. Nothing here changes a result; a failure here is only logged (the
first pass then pays, as before).
"""

from __future__ import annotations

import importlib
import logging
import threading
from concurrent.futures import Future
from typing import Callable, Optional

import torch

from tracefield.masks import foreground_masks
from tracefield.model.fast_ops import fused_kernels

log = logging.getLogger(__name__)


def start_priming(device: torch.device, first_plan: Future, pinned: Callable[[object], int]) -> Optional[threading.Thread]:
    """Start priming ``device`` (nothing to do on a CPU: returns None); ``pinned(plan)`` gives the bytes
    of the pinned block that ``first_plan``'s scene will need. The thread is a daemon: a run that ends
    early never waits for it."""
    if device.type != "cuda":
        return None
    thread = threading.Thread(target=_prime, args=(device, first_plan, pinned), name="tracefield-primer", daemon=True)
    thread.start()
    return thread


def _prime(device: torch.device, first_plan: Future, pinned: Callable[[object], int]) -> None:
    try:
        with torch.cuda.device(device), torch.inference_mode():
            torch.zeros(1, device=device)  # the CUDA context
            if fused_kernels() is not None:
                _triton_cache_key()
            foreground_masks(torch.rand(1, 2, 4, 4, 3, device=device))
            block = torch.empty(pinned(first_plan.result()), dtype=torch.uint8, pin_memory=True)
            del block  # back to the caching host allocator, pinned, for the scene's outputs
    except BaseException as exc:  # a failed plan, a cancelled run, a CUDA error: the scene itself will say
        log.debug("priming %s stopped: %s", device, exc)


def _triton_cache_key() -> None:
    """Triton hashes its own sources and library once per process, at the first kernel launch, for its
    kernel-cache key (0.44 s on the H200 machine; hashing releases the GIL). The function is internal
    to Triton (triton.runtime.cache from 3.3, triton.compiler.compiler before): where it has moved,
    the first pass computes the key as before."""
    for module in ("triton.runtime.cache", "triton.compiler.compiler"):
        try:
            key = importlib.import_module(module).triton_key
        except (ImportError, AttributeError):
            continue
        key()
        return
