#!/usr/bin/env python3
"""Export speed: 1,000 tracks from a 40-frame 512x288 K=10 field to every format, on the CPU.

"tracks" is the number in the written file (tracks a consumer cannot start are left out).

The field is the synthetic scene of the tests (a tilted wall filmed by a moving camera and
a card moving in front of it), so cameras and visibility do real work. Prints the seconds
per format without pictures (selection, retiming, projection, occlusion, writing) and with
them (first-frame drawing and the overlay video):

    python benchmarks/bench_export.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from scene import make_scene  # noqa: E402  (the tests' synthetic scene)

from tracefield.export import FORMATS, ExportOptions, run_export  # noqa: E402
from tracefield.export.selection import SelectionOptions  # noqa: E402
from tracefield.export.tracks import CameraOptions  # noqa: E402


def main() -> None:
    field = make_scene(frames=40, num_ctrl=10, height=288, width=512).field
    selection = SelectionOptions(strategy="fps", region="all", max_tracks=1000, background=0)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for fmt in FORMATS:
            for camera in ("static", "filmed"):
                timings = []
                for pictures in (False, True):
                    options = ExportOptions(format=fmt, output=Path(out), name=fmt, selection=selection, captions={1: "a card slides right"},
                                            camera=CameraOptions(mode=camera), pictures=pictures)
                    start = time.perf_counter()
                    result = run_export(field, options)
                    timings.append(time.perf_counter() - start)
                rows.append((fmt, camera, result.written.num_tracks, result.tracks.xy.shape[0], *timings))
    print(f"\n{'format':12} {'camera':7} {'tracks':>6} {'frames':>6} {'export s':>9} {'+pictures s':>12}")
    for fmt, camera, tracks, frames, bare, pictures in rows:
        print(f"{fmt:12} {camera:7} {tracks:6d} {frames:6d} {bare:9.2f} {pictures:12.2f}")


if __name__ == "__main__":
    main()
