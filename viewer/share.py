"""Sharing what the viewer shows: recordings (``.viser`` + a self-contained HTML page) and downloads.

A recording is viser's own scene serialisation: the scene as it is, then every change
while the timeline plays once, with the pauses between them. The HTML page is viser's
built client with the recording embedded (the client reads ``window.__VISER_EMBED_DATA__``,
base64), so it opens from a file or any static host with no server. Both files are
written atomically under the scene folder; the HTML is also sent to the browser.

Exports go through :func:`tracefield.export.run_export` with the picks of the frame on
screen, handed over as they are stored (network pixels; each pick keeps its identity: a
whole object exports as that object), or, with no picks there, every moving object; they
land in ``<scene>/exports/`` and come back to the browser as one zip.
"""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Optional

import viser

from tracefield.errors import TracefieldError
from tracefield.io.atomic import atomic_file

if TYPE_CHECKING:
    from viewer.app import Viewer

CLIENT_HTML = Path(viser.__file__).parent / "client" / "build" / "index.html"


def recording_html(recording: bytes, title: str = "tracefield recording") -> str:
    """A standalone page that plays ``recording`` (bytes of a ``.viser`` file)."""
    client = CLIENT_HTML.read_text(encoding="utf-8")
    payload = base64.b64encode(recording).decode("ascii")
    inject = f'<script>window.__VISER_EMBED_DATA__="{payload}";window.__VISER_EMBED_CONFIG__={{darkMode:false}};</script>'
    client = client.replace("<title>Viser</title>", f"<title>{_html_escape(title)}</title>", 1)
    head_end = client.index("</head>")
    return client[:head_end] + inject + client[head_end:]


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def save_recording(recording: bytes, folder: Path, name: str) -> tuple[Path, Path]:
    """Write ``<folder>/<name>.viser`` and ``<folder>/<name>.html`` atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    viser_path, html_path = folder / f"{name}.viser", folder / f"{name}.html"
    with atomic_file(viser_path) as tmp:
        tmp.write_bytes(recording)
    with atomic_file(html_path) as tmp:
        tmp.write_text(recording_html(recording, name), encoding="utf-8")
    return viser_path, html_path


def zip_files(paths: Iterable[Path], root: Path) -> bytes:
    """The files (and files inside folders) zipped with paths relative to ``root``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in paths:
            for item in sorted(path.rglob("*")) if path.is_dir() else [path]:
                if item.is_file():
                    archive.write(item, item.relative_to(root).as_posix())
    return buffer.getvalue()


def record(viewer: "Viewer") -> tuple[Path, Path]:
    """Play the timeline once into a recording; save it beside the field (``recordings/``)."""
    viewer.work.wait_idle(timeout=60)
    was_playing, start_t = viewer.state.playing, viewer.state.t
    viewer.state.playing = False
    serializer = viewer.server.get_scene_serializer()
    step = 1.0 / max(viewer.state.fps, 1)
    for t in viewer.times:
        viewer.state.t = float(t)
        viewer.redraw_time()
        serializer.insert_sleep(step)
    recording = serializer.serialize()
    viewer.state.t, viewer.state.playing = start_t, was_playing
    viewer.redraw_time()
    name = f"{viewer.folder.name}_t{len(viewer.times)}"
    paths = save_recording(recording, viewer.folder.recordings, name)
    viewer.notify_all("Recording", f"{paths[0].name}: {len(recording) / 1e6:.1f} MB")
    return paths


def export_picks(viewer: "Viewer", fmt: str, prompt: Optional[str], captions: Optional[dict[int, str]] = None,
                 image: Optional[Path] = None) -> tuple[str, bytes]:
    """Write one export of the picks on the frame shown (``image``: an edited first frame); returns the zip's name and bytes."""
    from tracefield.export import ExportOptions, run_export
    from tracefield.export.selection import SelectionOptions

    frame = viewer.points.shown_frame
    picks = [p.pixels for p in viewer.state.picks if p.frame == frame]
    name = f"{viewer.folder.name}_{fmt}_frame{frame:03d}"
    out = viewer.folder.exports / name
    options = ExportOptions(format=fmt, output=out, name=name, selection=SelectionOptions(frame=frame), prompt=prompt,
                            captions=captions or {}, image=image)
    result = run_export(viewer.scene.field, options, picks=picks or None)
    if not result.files:
        raise TracefieldError(f"the {fmt} export wrote no files")
    return f"{name}.zip", zip_files(result.files, out)
