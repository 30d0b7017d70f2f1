#!/usr/bin/env python3
"""Viewer performance on the issue's reference field (30 frames of 512x288, K = 10, 20% moving).

Measures, on this machine (CPU only):

* start to ready: wall time from launching ``tracefield view`` to its "ready" log line
  (median of 3 launches), for the 30-frame field and a 200-frame one;
* peak memory of that process (VmHWM) after everything is built and a browser connected;
* bytes a newly connected browser receives at default settings (a websocket client that
  speaks viser's protocol counts them until the server goes quiet);
* server work (CPU seconds of the viewer process, all threads, including message encoding
  for one connected browser) and bytes sent per time step: on frame times (playback, frame
  stepping; the first pass makes each frame's nodes, later passes reuse them) and between
  frames, without and with trajectories; per confidence-slider move; and the time and bytes
  of building trajectories for 3 frames (0, mid, last);
* what a browser that connects after a playback receives (every frame's cached nodes).

    python benchmarks/bench_viewer.py            # table at the end; --frames-long 200
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from viewer_field import write_field  # noqa: E402

READY = re.compile(r"ready in")
QUIET_SECONDS = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ByteCounter:
    """A viser websocket client that counts what it receives."""

    def __init__(self, port: int) -> None:
        import viser
        from websockets.sync.client import connect

        self.ws = connect(f"ws://127.0.0.1:{port}", subprotocols=[f"viser-v{viser.__version__}"], max_size=None)
        self.bytes = 0
        self.last = time.perf_counter()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        try:
            for message in self.ws:
                self.bytes += len(message)
                self.last = time.perf_counter()
        except Exception:
            pass

    def settle(self, quiet: float = QUIET_SECONDS, timeout: float = 60.0) -> int:
        start = time.perf_counter()
        while time.perf_counter() - self.last < quiet and time.perf_counter() - start < timeout:
            time.sleep(0.05)
        return self.bytes

    def close(self) -> None:
        self.ws.close()


def launch(field: Path, port: int, extra: list[str] = ()) -> tuple[subprocess.Popen, float, list[str]]:
    """Start ``tracefield view``; return the process, seconds to its ready line, and its log so far."""
    command = [sys.executable, "-m", "tracefield.cli", "view", str(field), "--port", str(port), *extra]
    start = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines = []
    for line in process.stderr:
        lines.append(line.rstrip())
        if READY.search(line):
            elapsed = time.perf_counter() - start
            threading.Thread(target=lambda: [lines.append(x.rstrip()) for x in process.stderr], daemon=True).start()
            return process, elapsed, lines
    raise RuntimeError("viewer exited before ready:\n" + "\n".join(lines))


def wait_for(lines: list[str], pattern: str, timeout: float = 120.0) -> None:
    start = time.perf_counter()
    while not any(pattern in line for line in lines):
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"no {pattern!r} in the viewer's log:\n" + "\n".join(lines))
        time.sleep(0.05)


def peak_rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024


def start_to_ready(field: Path, runs: int) -> tuple[float, float, int]:
    """Median start-to-ready seconds; peak MB and bytes to a new browser from the last run."""
    times, peak, sent = [], 0.0, 0
    for run in range(runs):
        port = free_port()
        process, elapsed, lines = launch(field, port)
        times.append(elapsed)
        if run == runs - 1:
            wait_for(lines, "trajectories:")
            wait_for(lines, "camera frustums:")
            client = ByteCounter(port)
            sent = client.settle()
            client.close()
            peak = peak_rss_mb(process.pid)
        process.terminate()
        process.wait(timeout=10)
    return statistics.median(times), peak, sent


def interaction_costs(field: Path) -> dict[str, float]:
    """CPU seconds and bytes per time step (on frame times, between them), per confidence move, trajectories, in process."""
    from viewer.app import Viewer, ViewerOptions, open_field

    loaded, folder = open_field(field)
    viewer = Viewer(loaded, folder, ViewerOptions(port=free_port(), trajectory_frames="none"))
    viewer.wait_idle(120)
    client = ByteCounter(viewer.server.get_port())
    client.settle()
    frame_times = [float(t) for t in viewer.scene.times]
    between = [float(a + b) / 2 for a, b in zip(frame_times[:-1], frame_times[1:])]

    def cost(action, count: int) -> tuple[float, float]:
        before_cpu, before_bytes = time.process_time(), client.bytes
        for i in range(count):
            action(i)
            viewer.wait_idle(60)
        client.settle(quiet=0.5)
        return (time.process_time() - before_cpu) / count, (client.bytes - before_bytes) / count

    def step(times: list[float]):
        return lambda i: viewer.controls.set_time(times[i % len(times)])

    frames = len(frame_times)
    first_cpu, first_bytes = cost(step(frame_times), frames)  # playback's first pass makes each frame's nodes
    frame_cpu, frame_bytes = cost(step(frame_times), 2 * frames)  # later passes (and frame steps) reuse them
    between_cpu, between_bytes = cost(step(between), 2 * len(between))

    def move_conf(i: int) -> None:
        viewer.state.fg_drop = viewer.state.bg_drop = float(5 + (i * 7) % 40)
        viewer.redraw("background")
        viewer.redraw("filter")

    conf_cpu, conf_bytes = cost(move_conf, 10)
    viewer.state.fg_drop = viewer.state.bg_drop = 10.0
    viewer.redraw("background")
    viewer.redraw("filter")
    viewer.wait_idle(60)
    client.settle()  # the confidence moves' megabytes are all sent
    viewer.state.frames = (0, frames // 2, frames - 1)
    start, before = time.perf_counter(), client.bytes
    viewer.redraw("trajectories")
    viewer.wait_idle(60)
    traj_wall = time.perf_counter() - start
    client.settle(quiet=0.5)
    traj_bytes = client.bytes - before
    cost(step(frame_times), frames)  # the frame pictures of the new trajectories' panel are warm again
    with_traj_frame_cpu, with_traj_frame_bytes = cost(step(frame_times), 2 * frames)
    with_traj_between_cpu, with_traj_between_bytes = cost(step(between), 2 * len(between))
    client.close()
    late = ByteCounter(viewer.server.get_port())  # a browser that arrives after a playback: every frame's nodes
    late_bytes = late.settle()
    late.close()
    viewer.stop()
    return {
        "frame step CPU (ms)": frame_cpu * 1e3, "frame step bytes (kB)": frame_bytes / 1e3,
        "frame step, first visit CPU (ms)": first_cpu * 1e3, "frame step, first visit bytes (kB)": first_bytes / 1e3,
        "between-frames step CPU (ms)": between_cpu * 1e3, "between-frames step bytes (kB)": between_bytes / 1e3,
        "frame step with trajectories CPU (ms)": with_traj_frame_cpu * 1e3,
        "frame step with trajectories bytes (kB)": with_traj_frame_bytes / 1e3,
        "between step with trajectories CPU (ms)": with_traj_between_cpu * 1e3,
        "between step with trajectories bytes (kB)": with_traj_between_bytes / 1e3,
        "conf move CPU (ms)": conf_cpu * 1e3, "conf move bytes (MB)": conf_bytes / 1e6,
        "trajectories 3 frames (s)": traj_wall, "trajectories 3 frames (MB)": traj_bytes / 1e6,
        "sent to a browser after playback (MB)": late_bytes / 1e6,
    }


TARGETS = {
    "frame step CPU (ms)": "<= 5", "frame step bytes (kB)": "<= 20", "between-frames step CPU (ms)": "<= 20",
    "frame step with trajectories CPU (ms)": "<= 5", "frame step with trajectories bytes (kB)": "<= 20",
    "between step with trajectories CPU (ms)": "<= 20", "conf move CPU (ms)": "<= 100",
    "trajectories 3 frames (s)": "<= 0.2", "trajectories 3 frames (MB)": "<= 5",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames-long", type=int, default=200, help="frames of the scale test (0: skip)")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        field = write_field(Path(tmp) / "bench30", frames=30).parent
        ready, peak, sent = start_to_ready(field, args.runs)
        costs = interaction_costs(field)
        rows = [("start to ready (s)", ready, "<= 2"), ("peak memory (MB)", peak, "<= 1536"),
                ("sent to a new browser (MB)", sent / 1e6, "<= 20")]
        rows += [(name, value, TARGETS.get(name, "")) for name, value in costs.items()]
        if args.frames_long:
            long_field = write_field(Path(tmp) / f"bench{args.frames_long}", frames=args.frames_long).parent
            ready_long, peak_long, sent_long = start_to_ready(long_field, 1)
            rows += [(f"{args.frames_long} frames: start to ready (s)", ready_long, "<= 10"),
                     (f"{args.frames_long} frames: peak memory (MB)", peak_long, ""),
                     (f"{args.frames_long} frames: sent to a new browser (MB)", sent_long / 1e6, "")]
            costs_long = interaction_costs(long_field)
            for name in ("frame step CPU (ms)", "frame step bytes (kB)", "between-frames step CPU (ms)"):
                rows.append((f"{args.frames_long} frames: {name}", costs_long[name], ""))
    print(f"\nviewer benchmark, {os.cpu_count()} CPUs, 30-frame 512x288 K=10 field (20% moving)")
    print(f"{'measure':<46}{'value':>12}  target")
    for name, value, target in rows:
        print(f"{name:<46}{value:>12.3f}  {target}")


if __name__ == "__main__":
    main()
