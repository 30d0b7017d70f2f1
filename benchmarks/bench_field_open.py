#!/usr/bin/env python3
"""Opening large fields: seconds and peak memory of reading a field, and of the viewer getting ready.

Fields shaped like the viewer issue's reference (512x288, K = 10, 20% moving;
``viewer_field.make_field``) of 30 and 200 frames, in both files: ours (field.safetensors)
and the release's output.pt (fp32, without evaluated tracks), made once under ``--cache``.
For each, in fresh processes:

* **read**: ``TraceField.load`` alone (imports done): wall seconds and the process's peak
  memory (VmHWM, what the issue measured; imports included);
* **view**: ``tracefield view`` from launch to its "ready" line, and its peak memory once
  the camera frustums and default trajectories are built.

    python benchmarks/bench_field_open.py --cache /tmp/field_cache          # table last
    python benchmarks/bench_field_open.py --cache /tmp/field_cache --no-view --frames 30
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from viewer_field import make_field  # noqa: E402

READ = """
import re, sys, time
from pathlib import Path
from tracefield.field import TraceField
start = time.perf_counter()
field = TraceField.load(sys.argv[1])
seconds = time.perf_counter() - start
print(seconds, int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024, field.num_frames)
"""


def make_fields(cache: Path, frames: int) -> dict[str, Path]:
    """``field.safetensors`` and ``output.pt`` of one ``frames``-frame field, each in a scene folder of its own."""
    ours, release = cache / f"ours{frames}" / "field.safetensors", cache / f"release{frames}" / "output.pt"
    if not (ours.is_file() and release.is_file()):
        print(f"making the {frames}-frame fields (once) ...", file=sys.stderr)
        field = make_field(frames=frames)
        ours.parent.mkdir(parents=True, exist_ok=True)
        release.parent.mkdir(parents=True, exist_ok=True)
        field.save(ours)
        field.save_release_output(release)
    return {"field.safetensors": ours, "output.pt": release}


def read(path: Path) -> tuple[float, float]:
    """Seconds of ``TraceField.load(path)`` in a fresh process (imports not counted), and the process's peak MB."""
    out = subprocess.run([sys.executable, "-c", READ, str(path)], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def view(path: Path, timeout: float = 600.0) -> tuple[float, float]:
    """Seconds from launching ``tracefield view`` to "ready", and its peak MB once frustums and trajectories are built."""
    command = [sys.executable, "-m", "tracefield", "view", str(path), "--port", str(free_port())]
    start = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    ready, seen = None, []
    try:
        for line in process.stderr:
            seen.append(line)
            if ready is None and "ready in" in line:
                ready = time.perf_counter() - start
            if ready is not None and any("trajectories:" in s for s in seen) and any("camera frustums:" in s for s in seen):
                break
            if time.perf_counter() - start > timeout:
                break
        if ready is None:
            raise RuntimeError("the viewer did not get ready:\n" + "".join(seen))
        status = Path(f"/proc/{process.pid}/status").read_text()
        peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024
    finally:
        process.terminate()
        process.wait(timeout=30)
    return ready, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, required=True, help="folder for the fields (made once; 200 frames: 2.5 + 5.1 GB)")
    parser.add_argument("--frames", type=int, nargs="+", default=[30, 200])
    parser.add_argument("--no-view", action="store_true", help="time reading only, not the viewer")
    args = parser.parse_args()
    rows = []
    for frames in args.frames:
        for kind, path in make_fields(args.cache, frames).items():
            seconds, peak = read(path)
            row = [f"{frames} frames, {kind}", path.stat().st_size / 2**30, seconds, peak]
            row += [None, None] if args.no_view else list(view(path.parent))
            rows.append(row)
            print(rows[-1], file=sys.stderr)
    print(f"\n{'field':<28}{'GiB':>6}{'read s':>8}{'read MB':>9}{'ready s':>9}{'view MB':>9}   targets: 30-frame output.pt ready <= 3 s; 200 frames <= 6 GB")
    for name, size, seconds, peak, ready, view_peak in rows:
        tail = f"{ready:>9.2f}{view_peak:>9.0f}" if ready is not None else f"{'-':>9}{'-':>9}"
        print(f"{name:<28}{size:>6.2f}{seconds:>8.2f}{peak:>9.0f}{tail}")


if __name__ == "__main__":
    main()
