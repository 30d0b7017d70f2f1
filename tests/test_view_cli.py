"""`tracefield view` through its entry point: a subprocess serves a scene folder, a headless browser connects and sees the field.

The library-level viewer tests build :class:`viewer.app.Viewer` themselves; this one runs
what a user runs (``python -m tracefield view <scene>``), reads the URL from its log, and
opens it in Debian's Chromium (as ``tests/test_viewer_browser.py``; CI installs it).
"""

from __future__ import annotations

import io
import queue
import re
import subprocess
import sys
import threading
import time

import numpy as np
from PIL import Image

from browser import ARGS, CHROMIUM, WAIT, sync_api
from conftest import free_port
from scene import make_scene


def lines_of(stream) -> queue.Queue:
    """The stream's lines, read on a thread so the test can wait with a timeout."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    return lines


def wait_for_line(lines: queue.Queue, pattern: str, seen: list[str]) -> re.Match:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no line matching {pattern!r} within {WAIT:.0f} s; the viewer said:\n{''.join(seen)}")


def colourful_fraction(png: bytes) -> float:
    """Share of the canvas in saturated colours: the frames' (red card, green ramp), not the grey page."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)
    return float(((pixels.max(axis=-1) - pixels.min(axis=-1)) > 60).mean())


def test_view_serves_the_field_to_a_browser(tmp_path):
    folder = tmp_path / "card"
    folder.mkdir()
    make_scene(frames=4, num_ctrl=4, height=90, width=160).field.save(folder / "field.safetensors")
    port = free_port()
    viewer = subprocess.Popen([sys.executable, "-m", "tracefield", "view", str(folder), "--port", str(port), "--no-frustums"],
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen: list[str] = []
    try:
        lines = lines_of(viewer.stderr)
        url = wait_for_line(lines, r"ready in [\d.]+ s: open (\S+)", seen).group(1)
        assert url == f"http://localhost:{port}"  # bound where asked, on the loopback name
        wait_for_line(lines, rf"ssh -N -L {port}:localhost:{port} ", seen)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1024, "height": 640})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            page.get_by_text("Show trajectories").wait_for(timeout=WAIT * 1000)  # the controls arrived
            canvas = page.locator("canvas").first
            deadline = time.monotonic() + WAIT
            while colourful_fraction(canvas.screenshot()) < 0.01:
                assert time.monotonic() < deadline, "the field's points never appeared on the canvas"
                time.sleep(0.2)
            browser.close()
        assert not errors
        assert viewer.poll() is None  # still serving
    finally:
        viewer.terminate()
        viewer.wait(timeout=30)
