"""The viewer in a real browser: headless Chromium (Debian's ``chromium``) driven by playwright.

Opens the viewer, waits for the scene, finds the controls, moves the time slider, toggles
the trajectories, and checks that the canvas shows rendered points, not a blank page.
Then exports and records from the panels and receives both as browser downloads. CI
installs Chromium with apt-get (see .ci/run); elsewhere the test says how to get it.
"""

from __future__ import annotations

import io
import zipfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from browser import ARGS, CHROMIUM, WAIT, sync_api
from conftest import serving
from scene import make_scene


def until(condition, timeout: float = WAIT, what: str = "") -> None:
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def canvas_pixels(page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator("canvas").first.screenshot())).convert("RGB")).astype(np.int16)


def drawn_fraction(pixels: np.ndarray) -> float:
    """Share of the canvas that is not the empty background (which is one flat colour)."""
    background = np.median(pixels.reshape(-1, 3), axis=0)
    return float((np.abs(pixels - background).sum(axis=-1) > 40).mean())


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    folder = tmp_path_factory.mktemp("card")
    make_scene(frames=6, num_ctrl=7, height=144, width=256).field.save(folder / "field.safetensors")
    with serving(folder, wait=120, t_step=0.1) as viewer:
        yield viewer


@pytest.fixture(scope="module")
def page(running):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        tab = browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.goto(running.url())
        tab.wait_for_selector("canvas", timeout=WAIT * 1000)
        tab.get_by_text("Show trajectories").wait_for(timeout=WAIT * 1000)
        tab.errors = errors
        yield tab
        browser.close()


def test_the_scene_renders_points(page, running):
    running.display.frustums.set_visible(False)  # only the point clouds (and trails) are left to draw
    try:
        until(lambda: drawn_fraction(canvas_pixels(page)) > 0.05, what="points on the canvas")
        pixels = canvas_pixels(page)
        chroma = pixels.max(axis=-1) - pixels.min(axis=-1)
        assert (chroma > 60).mean() > 0.01  # the frames' colours, not grey UI
    finally:
        running.display.frustums.set_visible(True)
    assert not page.errors


def open_folder(page, folder: str, control: str) -> None:
    """Open a GUI folder (some start closed) unless its ``control`` text is already on screen."""
    target = page.get_by_text(control, exact=True).first
    if not target.is_visible():  # a closed folder keeps its controls in the page, hidden
        page.get_by_text(folder, exact=True).click()
        target.wait_for(state="visible", timeout=WAIT * 1000)


def test_the_controls_are_there(page):
    for folder, control in (("Cameras", "Show camera frustums"), ("Export", "Export and download"), ("Share", "Record")):
        open_folder(page, folder, control)
    for label in ("Time", "FPS", "Moving: drop lowest conf. %", "Static: drop lowest conf. %", "Show trajectories",
                  "Frames (e.g. 0,mid,last)", "Colour by", "Width (px)", "A click picks", "Show camera frustums", "Format"):
        assert page.get_by_text(label, exact=True).count() >= 1, label
    for button in ("Play", "Build / refresh", "Add pixel on this frame", "Export and download", "Record"):
        assert page.get_by_role("button", name=button).count() == 1, button


def test_moving_the_time_slider_redraws(page, running):
    before = canvas_pixels(page)
    slider = page.locator("[role=slider]").first  # Time is the first slider of the panel
    slider.focus()
    slider.press("End")
    until(lambda: running.state.t == pytest.approx(1.0), what="the server to receive t = 1")
    assert running.wait_idle(30)
    page.get_by_text("t = 1.000").wait_for(timeout=WAIT * 1000)
    until(lambda: np.abs(canvas_pixels(page) - before).sum(axis=-1).astype(bool).mean() > 0.002, what="the canvas to change")
    assert running.display.points.shown_frame == running.scene.num_frames - 1


def test_toggling_trajectories(page, running):
    assert running.state.show_trajectories and running.display.trajectories.nodes
    assert any(node.visible for node in running.display.trajectories.nodes)
    page.get_by_text("Show trajectories", exact=True).click()
    until(lambda: not running.state.show_trajectories, what="the trajectories to be hidden")
    assert running.wait_idle(30)
    assert not any(node.visible for node in running.display.trajectories.nodes)
    page.get_by_text("Show trajectories", exact=True).click()
    until(lambda: running.state.show_trajectories, what="the trajectories to come back")
    assert running.wait_idle(30)
    assert any(node.visible for node in running.display.trajectories.nodes)
    assert not page.errors


def test_export_and_record_arrive_as_downloads(page, running):
    running.controls.set_time(0.0)  # an export starts on the frame shown and moves forward from it
    assert running.wait_idle(30)
    open_folder(page, "Export", "Export and download")
    open_folder(page, "Share", "Record")
    with page.expect_download(timeout=WAIT * 1000) as export:
        page.get_by_role("button", name="Export and download").click()
    archive = zipfile.ZipFile(export.value.path())
    assert export.value.suggested_filename.endswith(".zip") and any(name.endswith(".pth") for name in archive.namelist())
    with page.expect_download(timeout=2 * WAIT * 1000) as recording:
        page.get_by_role("button", name="Record").click()
    html = Path(recording.value.path()).read_text()
    assert recording.value.suggested_filename.endswith(".html") and "__VISER_EMBED_DATA__" in html
    assert not page.errors
