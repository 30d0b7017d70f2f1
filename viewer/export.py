"""The Export panel's one action: the picks of the frame on screen -> generator conditions, as one zip.

The work is :func:`tracefield.export.run_export`'s, with the picks of ``frame`` as the
user's pixels (or, with no picks there, every moving object), written under the scene
folder's ``exports/`` and sent back to the browser zipped. Everything comes in as
arguments, so this runs without a viewer (tests, scripts).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from tracefield.errors import TracefieldError
from tracefield.field import TraceField
from tracefield.scene_folder import SceneFolder
from viewer.state import Pick
from viewer.trajectories import spread

EXPORT_PER_PICK = 8  # tracks per picked object, as many as the export's per-object default


def export_picks(field: TraceField, folder: SceneFolder, picks: Sequence[Pick], frame: int, fmt: str,
                 prompt: Optional[str]) -> tuple[str, bytes]:
    """Write one export of the ``picks`` on ``frame`` in format ``fmt``; returns the zip's name and bytes."""
    from tracefield.export import ExportOptions, run_export
    from tracefield.export.selection import SelectionOptions

    width = field.hw[1]
    picked = [p for p in picks if p.frame == frame]
    pixels = np.concatenate([spread(p.pixels, EXPORT_PER_PICK) for p in picked]) if picked else np.zeros(0, np.int64)
    xy_model = np.stack([pixels % width, pixels // width], axis=1).astype(np.float64)
    xy = [tuple(map(float, v)) for v in field.transform.to_original(xy_model)] if len(pixels) else []
    selection = SelectionOptions(strategy="pixels" if xy else "objects", frame=frame, pixels=xy)
    name = f"{folder.name}_{fmt}_frame{frame:03d}"
    out = folder.exports / name
    result = run_export(field, ExportOptions(format=fmt, output=out, name=name, selection=selection, prompt=prompt))
    if not result.files:
        raise TracefieldError(f"the {fmt} export wrote no files")
    return f"{name}.zip", zip_files(result.files, out)


def zip_files(paths: Iterable[Path], root: Path) -> bytes:
    """The files (and files inside folders) zipped with paths relative to ``root``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in paths:
            for item in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if item.is_file():
                    archive.write(item, item.relative_to(root).as_posix())
    return buffer.getvalue()
