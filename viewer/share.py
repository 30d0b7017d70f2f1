"""Sharing what the viewer shows: recordings (``.viser`` + a self-contained HTML page).

A recording is viser's own scene serialisation: the scene as it is, then every change
while the clip plays once, frame by frame, with the pauses between them. The HTML page is
viser's built client with the recording embedded (the client reads
``window.__VISER_EMBED_DATA__``, base64), so it opens from a file or any static host with
no server. Both files are written atomically under the scene folder's ``recordings/``.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Callable, Sequence

import viser

from tracefield.io.atomic import atomic_file
from tracefield.scene_folder import SceneFolder
from viewer.state import ViewerState

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


def record(server: viser.ViserServer, state: ViewerState, redraw_time: Callable[[], None], times: Sequence[float],
           folder: SceneFolder) -> tuple[Path, Path]:
    """Play ``times`` once into a recording (``redraw_time`` draws the state's time); save it in ``folder``.

    The caller runs this where no other redraw runs at the same time (the viewer's update
    worker); the state's time and playing flag are put back afterwards.
    """
    was_playing, start_t = state.playing, state.t
    state.playing = False
    serializer = server.get_scene_serializer()
    step = 1.0 / max(state.fps, 1)
    try:
        for t in times:
            state.t = float(t)
            redraw_time()
            serializer.insert_sleep(step)
        recording = serializer.serialize()
    finally:
        state.t, state.playing = start_t, was_playing
        redraw_time()
    return save_recording(recording, folder.recordings, f"{folder.name}_t{len(times)}")
