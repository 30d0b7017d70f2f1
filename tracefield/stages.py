"""Where the seconds of a run go: wall time per stage, summed over scenes and threads.

``tracefield infer`` decodes frames in a worker while the network runs and a writer writes,
so stages overlap and their totals can add up to more than the run's wall time; the table
shows both. With ``--profile`` the table is logged at the end of the run (and written as
JSON to a given path, for benchmarks); without it, to the debug log (``-v``).
GPU work is asynchronous: when profiling, the device is synchronised at the end of each
GPU stage so that its time lands where it is spent.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Iterator, Optional

# The order of the table: start-up, then a scene's path through the run.
ORDER = ("imports", "load", "plan", "decode", "warm-up", "network", "masks", "field", "writing")


def process_age() -> float:
    """Seconds since this process started (Linux's /proc), 0.0 where unknown."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time in clock ticks since boot
        return max(0.0, float(Path("/proc/uptime").read_text().split()[0]) - started)
    except (OSError, ValueError, IndexError):
        return 0.0


class Stages:
    """Thread-safe totals of seconds per stage, with the number of times each ran."""

    def __init__(self, sync: Optional[Callable[[], None]] = None) -> None:
        self.sync = sync  # called before a GPU stage's clock stops (profiling only)
        self.seconds: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.events: list[tuple[str, float]] = []  # (what, seconds since start): scenes finished, for rates
        self._lock = threading.Lock()
        self._started = time.perf_counter() - process_age()

    @contextlib.contextmanager
    def __call__(self, name: str, gpu: bool = False) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if gpu and self.sync is not None:
                self.sync()
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] += seconds
            self.counts[name] += 1

    def mark(self, what: str) -> None:
        """Note that ``what`` happened now (e.g. a scene was written)."""
        with self._lock:
            self.events.append((what, self.elapsed()))

    def elapsed(self) -> float:
        """Seconds since the process started."""
        return time.perf_counter() - self._started

    def table(self) -> str:
        names = [n for n in ORDER if n in self.seconds] + sorted(set(self.seconds) - set(ORDER))
        lines = [f"{'stage':<10}{'seconds':>9}{'times':>7}"]
        lines += [f"{name:<10}{self.seconds[name]:>9.3f}{self.counts[name]:>7d}" for name in names]
        lines.append(f"{'wall':<10}{self.elapsed():>9.3f}")
        return "\n".join(lines)

    def to_json(self) -> str:
        with self._lock:
            return json.dumps({"seconds": dict(self.seconds), "counts": dict(self.counts), "events": self.events,
                               "wall": self.elapsed()}, indent=1)
