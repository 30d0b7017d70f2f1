#!/usr/bin/env python3
"""Anchoring and kept/left-out tracks of every format on a traced scene, read back as each consumer reads it.

For each format: the tracks selected, kept in the file and left out (with the reasons), the
largest distance in the consumer's pixel space between a track's first position (and its
appearance sample) and its pick, and the field's own reprojection error at the picks (what
anchoring absorbed). For example, after ``tracefield infer examples/synthetic --config small -o outputs``:

    python benchmarks/export_anchoring.py outputs/synthetic --frame 0 --camera static
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np

from tracefield.export import FORMATS, ExportOptions, run_export
from tracefield.export.readback import consumer_view
from tracefield.export.selection import SelectionOptions
from tracefield.export.tracks import CameraOptions
from tracefield.field import TraceField


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene", type=Path)
    parser.add_argument("--frame", type=int, default=0)
    parser.add_argument("--camera", default="static")
    parser.add_argument("--select", default="objects")
    parser.add_argument("--start", type=float, help="clip time of the first output frame (default: the frame's own)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    field = TraceField.load(args.scene)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in FORMATS:
            out = Path(tmp) / fmt
            options = ExportOptions(format=fmt, output=out, name="x", selection=SelectionOptions(strategy=args.select, frame=args.frame),
                                    camera=CameraOptions(mode=args.camera), start=args.start, captions={1: "the first object moves"}, pictures=False)
            result = run_export(field, options)
            residual = np.linalg.norm(result.tracks.residual, axis=-1)
            kept = result.conditions.visible[0] if fmt != "npz" else np.ones(result.tracks.num_tracks, bool)
            picks = result.conditions.picks[kept]
            if args.start is not None:
                error = float("nan")  # the first frame is not the picks' frame: nothing to anchor there
            elif fmt == "npz":
                error = float(np.abs(result.written.xy[0] - picks).max())
            else:
                view = consumer_view(fmt, out, "x")
                scale = np.array(view.size) / np.array(result.conditions.size)
                error = float(max(np.abs(view.xy[0] - picks * scale).max(), np.abs(view.start - picks * scale).max()
                                  if fmt != "wanmove" else np.abs(np.floor(view.start / 8) - np.floor(picks * scale / 8)).max() * 8))
            dropped = ", ".join(f"{n} {why}" for why, n in result.written.dropped.items()) or "-"
            rows.append((fmt, result.tracks.num_tracks, result.written.num_tracks, dropped, error, float(np.median(residual)), float(residual.max())))
    print(f"\nscene {args.scene}, frame {args.frame}, camera {args.camera}, select {args.select}, start {args.start}")
    print(f"{'format':12} {'selected':>8} {'kept':>5} {'anchor err px':>13} {'field off px (median/max)':>26}  left out")
    for fmt, selected, kept, dropped, error, median, worst in rows:
        print(f"{fmt:12} {selected:8d} {kept:5d} {error:13.4f} {median:12.2f} / {worst:<11.2f}  {dropped}")


if __name__ == "__main__":
    main()
