"""What a browser can send cannot hurt the server: every hostile input through the running
viewer, over its websocket, as a page would send it (tests/viser_client.py).

For each input: the browser that sent it gets a notification naming the control and the
value (cut short), its control is set back (or to the clamped value), the state keeps a
good value, the server's peak memory grows by less than :data:`MEMORY_MB`, and another
browser's time steps sent right after it are answered (their status line comes back) no
more than :data:`ANSWER_S` later than they were just before it: what a stall would add,
measured against the machine's own pace (on a quiet machine an answer takes ~15 ms).
"""

from __future__ import annotations

import itertools
import logging
import math
import re
import time
from pathlib import Path

import pytest

from conftest import serving, wait_until
from scene import make_scene
from viewer import controls
from viewer.state import MAX_FPS, MAX_PICKS
from viser_client import ViserClient, open_page

MEMORY_MB = 50.0
ANSWER_S = 0.1
FRAMES = "Frames (e.g. 0,mid,last)"
MEGABYTE_TEXT = "x" * 1_000_000


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("card")
    make_scene(frames=6, num_ctrl=7, height=90, width=160).field.save(folder / "field.safetensors")
    with serving(folder, t_step=0.1, frustums=False) as running:
        yield running


@pytest.fixture(scope="module")
def hostile(viewer):
    with open_page(viewer.server.get_port()) as client:
        yield client


@pytest.fixture(scope="module")
def other(viewer):
    with open_page(viewer.server.get_port()) as client:
        yield client


_probe_times = (round(0.05 + (0.137 * i) % 0.9, 3) for i in itertools.count(1))


def answer_times(client: ViserClient, count: int = 3) -> list[float]:
    """Seconds until the server answers each of ``count`` time steps of ``client`` (its status line shows the new time)."""
    times = []
    for _ in range(count):
        t = next(_probe_times)
        sent = client.send("Time", t)
        arrived, _ = client.wait_for(lambda m: m["type"] == "GuiUpdateMessage" and f"t = {t:.3f}" in str(m["updates"]), since=sent)
        times.append(arrived - sent)
    return times


def stall(client: ViserClient, action) -> float:
    """How much later than usual the server answers ``client`` right after ``action()``: worst answer after minus median before."""
    usual = sorted(answer_times(client))[1]
    action()
    return max(answer_times(client)) - usual


def peak_mb() -> float:
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024


def reset_peak() -> float:
    """Start a new peak-memory measurement of this process (the viewer runs in it); returns the current peak."""
    Path("/proc/self/clear_refs").write_text("5")
    return peak_mb()


def survive(viewer, hostile: ViserClient, other: ViserClient, send, title: str) -> str:
    """Run ``send()`` (the hostile messages; returns when they left), then check memory, another browser's
    answers and the notification; returns the notification's text. On a busy machine one answer can be
    late by chance: a late answer is measured once more (a stall the input causes comes back)."""
    for attempt in range(2):
        assert viewer.wait_idle(30)
        before = reset_peak()
        sent: list[float] = []
        delay = stall(other, lambda: sent.append(send()))
        body = hostile.wait_for_notification(title, since=sent[0])
        assert viewer.wait_idle(30)
        assert peak_mb() - before < MEMORY_MB
        assert len(body) < 200  # the value is cut short, never echoed whole
        if delay < ANSWER_S:
            return body
    raise AssertionError(f"another browser waited {delay * 1e3:.0f} ms longer than usual, twice")


@pytest.mark.parametrize("label, value, reason, field", [
    ("Moving: drop lowest conf. %", math.nan, "is not a finite number", "fg_drop"),
    ("Static: drop lowest conf. %", -math.inf, "is not a finite number", "bg_drop"),
    ("Moving point size (px)", math.nan, "is not a finite number", "fg_size"),
    ("Static point size (px)", math.inf, "is not a finite number", "bg_size"),
    ("Width (px)", "wide", "is not a number", "width"),
    ("Time", [0.5], "is not a number", "t"),
    ("Colour by", "bogus", "is not one of the options", "color_by"),
    ("Colormap", MEGABYTE_TEXT, "is not one of the options", "colormap"),
    ("Format", "../../etc", "is not one of the options", "export_format"),
    ("Show trajectories", "yes", "is not true or false", "show_trajectories"),
    (FRAMES, MEGABYTE_TEXT, "is longer than 200 characters", "frames_text"),
    ("Prompt", MEGABYTE_TEXT, "is longer than 2000 characters", "prompt"),
])
def test_refused_values_leave_the_state_and_the_control_as_they_were(viewer, hostile, other, caplog, label, value, reason, field):
    kept = getattr(viewer.state, field)
    started = time.perf_counter()
    with caplog.at_level(logging.INFO, logger="viewer"):
        body = survive(viewer, hostile, other, lambda: hostile.send(label, value), label)
    assert reason in body and ("(1000000 characters)" in body) == (value is MEGABYTE_TEXT)
    assert getattr(viewer.state, field) == kept or field == "t"  # the probes moved the time
    if field != "t":  # the sender's control is set back
        uuid = hostile.control(label)
        assert hostile.wait_for(lambda m: m["type"] == "GuiUpdateMessage" and m["uuid"] == uuid and m["updates"] == {"value": kept},
                                since=started)
    assert all(len(record.getMessage()) < 500 for record in caplog.records)  # no 1 MB echo in the log


def test_sizes_stay_finite_for_a_new_browser(viewer, hostile, other):
    for label, value in (("Moving point size (px)", math.nan), ("Static point size (px)", math.inf)):
        survive(viewer, hostile, other, lambda: hostile.send(label, value), label)
    with open_page(viewer.server.get_port()) as late:
        time.sleep(0.5)
        sizes = [m["props"]["point_size"] for m in late.messages() if m["type"] == "PointCloudMessage"]
        sizes += [m["updates"]["point_size"] for m in late.messages() if m["type"] == "SceneNodeUpdateMessage" and "point_size" in m["updates"]]
        assert sizes and all(math.isfinite(s) and s > 0 for s in sizes)


def test_a_huge_fps_is_clamped_and_playback_keeps_to_it(viewer, hostile, other):
    body = survive(viewer, hostile, other, lambda: hostile.send("FPS", 1e12), "FPS")
    assert f"is outside 1..{MAX_FPS}; set to {MAX_FPS}" in body and viewer.state.fps == MAX_FPS
    fps = hostile.control("FPS")
    assert hostile.wait_for(lambda m: m["type"] == "GuiUpdateMessage" and m["uuid"] == fps and m["updates"] == {"value": MAX_FPS})  # the sender's slider shows what was kept
    start = hostile.click("Play")
    time.sleep(1.0)
    hostile.click("Pause")
    assert wait_until(lambda: not viewer.state.playing) and viewer.wait_idle(30)  # stopped before the next test moves the time
    steps = [m for m in other.messages(start) if m["type"] == "GuiUpdateMessage" and "t = " in str(m["updates"])]
    assert 10 < len(steps) <= MAX_FPS + 5


@pytest.mark.parametrize("text, reason", [
    ("0-30000000", "range 0-30000000 ends after the last frame, 5"),
    ("0-999999999", "ends after the last frame, 5"),
    ("5-2", "range 5-2 runs backwards; write 2-5"),
    ("", "names no frame"),
    (",,,", "names no frame"),
    ("0,mid,lots", "'lots' is not a frame"),
])
def test_bad_frames_are_refused_by_name_and_the_trajectories_kept(viewer, hostile, other, text, reason):
    drawn = len(viewer.display.trajectories.trajectories)
    frames = viewer.state.frames

    def send() -> float:
        sent = hostile.send(FRAMES, text)
        hostile.click("Build / refresh")
        hostile.send(FRAMES, "0,mid")  # typed on at once: the notice still names the text that failed
        return sent

    body = survive(viewer, hostile, other, send, FRAMES)
    assert body.startswith(repr(text)) and reason in body
    assert viewer.state.frames == frames and len(viewer.display.trajectories.trajectories) == drawn


def test_updates_a_browser_never_sends_are_dropped(viewer, hostile, other):
    def send() -> None:
        for updates in ({"update_cb": ["boom"]}, {"sync_cb": "boom"}, {"max": 1e12}, {"value": 5, "min": 0}, ["value"], {}):
            hostile.send("FPS", updates=updates)

    assert stall(other, send) < ANSWER_S or stall(other, send) < ANSWER_S  # once more if late: see survive()
    hostile.send("FPS", 7)  # the control still works, with its own range and callbacks
    assert wait_until(lambda: viewer.state.fps == 7, timeout=5)
    assert "is not a finite number" in survive(viewer, hostile, other, lambda: hostile.send("FPS", math.nan), "FPS")


def test_too_many_curves_are_refused(viewer, hostile, other, monkeypatch):
    monkeypatch.setattr(controls, "MAX_CURVES", 100)  # the scene is small; the check is the same

    def send() -> float:
        sent = hostile.send(FRAMES, "0-5")
        hostile.click("Build / refresh")
        return sent

    drawn = len(viewer.display.trajectories.trajectories)
    body = survive(viewer, hostile, other, send, FRAMES)
    assert body.startswith("'0-5' would draw") and "more than 100" in body
    assert len(viewer.display.trajectories.trajectories) == drawn


@pytest.mark.parametrize("text, reason", [
    ("nan,nan", "is outside the 160x90 video"),
    ("1e308,5", "is outside the 160x90 video"),
    ("12", "is not two numbers"),
    ("a,b", "is not two numbers"),
])
def test_bad_pixels_are_refused_by_name(viewer, hostile, other, text, reason):
    picks = len(viewer.state.picks)

    def send() -> float:
        sent = hostile.send("Pixel x,y (video pixels)", text)
        hostile.click("Add pixel on this frame")
        return sent

    body = survive(viewer, hostile, other, send, "Pixel x,y (video pixels)")
    assert body.startswith(repr(text)) and reason in body and len(viewer.state.picks) == picks


def test_picks_are_bounded(viewer, hostile, other):
    hostile.click("Clear picks")
    hostile.send("Pixel x,y (video pixels)", "20,30")
    assert viewer.wait_idle(30)
    for count in range(1, MAX_PICKS + 1):
        hostile.click("Add pixel on this frame")
        wait_until(lambda: len(viewer.state.picks) >= count)  # the click reached the viewer (wait_idle may come before it)
        assert viewer.wait_idle(30)
    assert len(viewer.state.picks) == MAX_PICKS
    assert all(pick.pixels.tolist() == [30 * 160 + 20] for pick in viewer.state.picks)  # (x, y) = (20, 30), not (30, 20)
    body = survive(viewer, hostile, other, lambda: hostile.click("Add pixel on this frame"), "Not possible")
    assert f"{MAX_PICKS} picks already" in body and len(viewer.state.picks) == MAX_PICKS

    def flood() -> float:
        sent = time.perf_counter()
        for _ in range(200):
            hostile.click("Add pixel on this frame")
        return sent

    survive(viewer, hostile, other, flood, "Not possible")  # at most MAX_WAITING wait ("Busy" for the rest)
    assert len(viewer.state.picks) == MAX_PICKS
    hostile.click("Clear picks")
    assert viewer.wait_idle(30)
