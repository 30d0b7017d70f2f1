"""Coalescing updates: slow work runs on one worker thread, always from the latest request.

Slider callbacks arrive faster than point clouds can be rebuilt. Each kind of work has a
key ("time", "points", ...); submitting work under a key replaces whatever of that key is
still waiting, so a burst of slider moves costs one rebuild, with the last value: nothing
is dropped that matters, and the screen never lags behind a backlog. Work of different
keys runs in submission order. Errors are logged and reported, never raised into viser.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Callable, Optional, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class LatestWork:
    def __init__(self, on_error: Optional[Callable[[str, BaseException], None]] = None, name: str = "viewer-updates") -> None:
        self._calls = itertools.count()
        self._pending: "OrderedDict[str, Callable[[], None]]" = OrderedDict()
        self._wake = threading.Condition()
        self._idle = threading.Event()
        self._idle.set()
        self._stopped = False
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, key: str, work: Callable[[], None]) -> None:
        """Run ``work`` soon, replacing any not-yet-started work under ``key``."""
        with self._wake:
            self._pending.pop(key, None)
            self._pending[key] = work
            self._idle.clear()
            self._wake.notify()

    def call(self, work: Callable[[], T], timeout: Optional[float] = None) -> T:
        """Run ``work`` on the worker (after what is waiting) and return its result or raise its error.

        For actions that must not overlap a redraw, such as a recording; each call is its own
        entry, never coalesced, so every caller gets its answer.
        """
        done: "Future[T]" = Future()

        def run() -> None:
            try:
                done.set_result(work())
            except BaseException as exc:  # handed to the caller, who reports it
                done.set_exception(exc)

        self.queue(run)
        return done.result(timeout)

    def queue(self, work: Callable[[], None]) -> None:
        """Run ``work`` after what is waiting, as its own entry (never replaced by later work)."""
        self.submit(f"queued-{next(self._calls)}", work)

    def waiting(self) -> int:
        """How many entries wait to run."""
        with self._wake:
            return len(self._pending)

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Block until nothing is pending or running (tests, benchmarks, recording)."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._pending and not self._stopped:
                    self._idle.set()
                    self._wake.wait()
                if self._stopped:
                    self._idle.set()
                    return
                key, work = self._pending.popitem(last=False)
            try:
                work()
            except Exception as exc:  # a failed update must not kill the viewer
                log.exception("viewer update %r failed", key)
                if self._on_error is not None:
                    self._on_error(key, exc)
