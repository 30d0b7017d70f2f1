"""The Export panel's one action: the picks of the frame on screen -> generator conditions, as one zip.

The work is :func:`tracefield.export.run_export`'s, with the picks of ``frame`` handed over
as they are stored (network pixels; each pick keeps its identity: a whole object exports as
that object) or, with no picks there, every moving object; an edited first frame
(``image``) asks for the conditions of that picture (motion transfer). Files land under the
scene folder's ``exports/`` and go back to the browser zipped. Everything comes in as
arguments, so this runs without a viewer (tests, scripts).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Iterable, Optional, Sequence

from tracefield.errors import TracefieldError
from tracefield.field import TraceField
from tracefield.scene_folder import SceneFolder
from viewer.state import Pick


def export_picks(field: TraceField, folder: SceneFolder, picks: Sequence[Pick], frame: int, fmt: str, prompt: Optional[str],
                 captions: Optional[dict[int, str]] = None, image: Optional[Path] = None) -> tuple[str, bytes]:
    """Write one export of the ``picks`` on ``frame`` in format ``fmt``; returns the zip's name and bytes."""
    from tracefield.export import ExportOptions, run_export
    from tracefield.export.selection import SelectionOptions

    chosen = [p.pixels for p in picks if p.frame == frame]
    name = f"{folder.name}_{fmt}_frame{frame:03d}"
    out = folder.exports / name
    options = ExportOptions(format=fmt, output=out, name=name, selection=SelectionOptions(frame=frame), prompt=prompt,
                            captions=captions or {}, image=image)
    result = run_export(field, options, picks=chosen or None)
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
