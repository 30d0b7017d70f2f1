"""Where the viewer's parts join, checked against the truth of the synthetic scene.

The other viewer tests use a field whose coincidences hide join bugs: an identity
transform (video pixels are network pixels), frame times evenly spaced and equal to the
times the frames were given, frame 0 on screen when picking, one picture per frame. This
field breaks them: a portrait 180x320 video seen by the network as 160x90 (rotated,
halved), six frames taken unevenly out of an eleven-frame clip (times 0, .1, .2, .4, .7, 1,
while the times they were given stay 0, .2, ..., 1), a confidence that rises with x, and
the true camera of every frame. What the viewer shows is checked against that truth: the
true cameras' projections, the true card masks, matplotlib's colormap, hand-computed
pixel mappings. A browser's part goes through a viser client as a page sends it
(tests/viser_client.py).
"""

from __future__ import annotations

import io

import matplotlib
import msgspec
import numpy as np
import pytest
import torch
import viser.transforms as vtf
import zstandard
from PIL import Image

from conftest import serving, wait_until
from scene import CARD_END, CARD_START, FOCAL, PLANE, make_scene, true_camera
from tracefield.field import FrameInfo, TraceField
from tracefield.io.preprocess import Preprocess
from viewer.app import Viewer
from viewer.layers import frustums as frustum_layer
from viewer.layers import panels
from viewer.picking import ray_to_pixel
from viewer.scene import Scene
from viser_client import open_page

CLIP_FRAMES = 11  # the clip the frames are taken from: frame i at time i / 10
KEPT = (0, 1, 2, 4, 7, 10)  # the field's frames: uneven times
TIMES = np.array(KEPT) / (CLIP_FRAMES - 1)
HEIGHT, WIDTH = 90, 160
VIDEO_HW = (320, 180)  # portrait: rotated, then halved, to the network's 90x160
PORTRAIT = Preprocess(original_hw=VIDEO_HW, rotated=True, resized_hw=(HEIGHT, WIDTH), model_hw=(HEIGHT, WIDTH))


def joined_field() -> TraceField:
    """The synthetic card scene on six uneven frames of an eleven-frame clip, from a portrait video (module docstring)."""
    clip = make_scene(frames=CLIP_FRAMES, num_ctrl=7, height=HEIGHT, width=WIDTH, transform=PORTRAIT).field
    keep = list(KEPT)
    conf = 1.0 + torch.arange(WIDTH, dtype=torch.float32) / WIDTH  # rises with x: a confidence filter has something to cut
    return TraceField(
        ctrl_pts=clip.ctrl_pts[keep].clone(), ctrl_conf=conf.expand(len(keep), clip.num_ctrl, HEIGHT, WIDTH).clone(),
        times=torch.tensor(TIMES, dtype=torch.float32), time_steps=torch.linspace(0, 1, len(keep)),
        images=clip.images[keep].clone(), fg_masks=clip.fg_masks[keep].clone(), transform=PORTRAIT,
        frames=FrameInfo(source="", names=[f"{i:03d}.png" for i in keep], indices=keep, fps=10.0),
    )


def camera(frame: int):
    """The true camera of the field's ``frame``."""
    return true_camera(KEPT[frame], CLIP_FRAMES, HEIGHT, WIDTH)


@pytest.fixture(scope="module")
def viewer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("portrait")
    joined_field().save(folder / "field.safetensors")
    with serving(folder, t_step=0.05) as running:
        yield running


@pytest.fixture(scope="module")
def page(viewer):
    with open_page(viewer.server.get_port()) as client:
        yield client


def show(viewer: Viewer, frame: int) -> None:
    """The frame on screen, as playback and frame steps leave it; no picks."""
    viewer.state.clear_picks()
    viewer.redraw("picks")
    viewer.controls.set_time(float(TIMES[frame]))
    assert viewer.wait_idle(30)


def card_pixel(field: TraceField, frame: int, not_on: int) -> tuple[int, int]:
    """A pixel (x, y) on the card in ``frame`` that is off the card in frame ``not_on``, mid-height."""
    mask, other = field.masks[frame].numpy(), field.masks[not_on].numpy()
    ys, xs = np.nonzero(mask & ~other)
    middle = np.argmin(np.abs(ys - np.median(ys)) + 0.01 * np.abs(xs - np.median(xs)))
    return int(xs[middle]), int(ys[middle])


def test_a_pick_on_another_frames_image_trails_from_that_pixel(viewer):
    """A click on frame 3's frustum image while frame 0 is on screen: the new trajectory is the curve of that pixel of
    frame 3, so at frame 3's time it projects through frame 3's true camera onto the clicked pixel, and at every
    frame's time onto the card in that frame (a curve taken from the frame on screen starts on the background)."""
    show(viewer, 0)
    field = viewer.scene.field
    x, y = card_pixel(field, 3, not_on=0)
    viewer.clicked_pixel(3, float(x), float(y))
    assert viewer.wait_idle(30)
    built = viewer.display.trajectories.trajectories
    assert built.frames[-1] == 3 and built.pixels[-1] == y * WIDTH + x
    for frame, t in enumerate(TIMES):
        k = int(np.argmin(np.abs(built.times - t)))
        assert abs(built.times[k] - t) < 1e-6  # every frame time is on the trajectories' grid
        pixel, depth = camera(frame).project(built.samples[-1, k].astype(np.float64))
        if frame == 3:
            np.testing.assert_allclose(pixel, [x, y], atol=0.05)
        px, py = np.round(pixel).astype(int)
        assert depth > 0 and field.masks[frame][py, px], f"frame {frame}: the trail is off the card at ({px}, {py})"


def test_frame_buttons_step_to_the_neighbouring_frame_times(viewer, page):
    """Next frame and Previous frame land on the next and previous frames' own times (uneven here), and the status
    line names the frame and its time (the network's time, not the time the frame was given)."""
    show(viewer, 2)
    page.click("Next frame")
    assert wait_until(lambda: viewer.state.t == pytest.approx(TIMES[3])), viewer.state.t
    page.click("Previous frame")
    page.click("Previous frame")
    assert wait_until(lambda: viewer.state.t == pytest.approx(TIMES[1])), viewer.state.t
    assert wait_until(lambda: viewer.display.points.shown_frame == 1)
    viewer.controls.set_time(0.42)  # nearest to frame 3, at 0.4 (given as 0.6)
    assert viewer.wait_idle(30)
    assert "frame 3 of 6 (time 0.400)" in viewer.controls.outputs.status.content


def test_the_highlighted_frustum_is_the_frame_on_screen(viewer):
    """Exactly one frustum is highlighted, the one of the frame shown, however the time moved."""
    for frame in (4, 1, 5, 3):
        viewer.controls.set_time(float(TIMES[frame]))
        assert viewer.wait_idle(30)
        lit = [f for f, node in viewer.display.frustums.nodes.items() if tuple(node.color) == frustum_layer.HIGHLIGHT]
        assert lit == [frame]


def test_a_typed_video_pixel_picks_its_network_pixel_on_the_frame_shown(viewer, page):
    """The portrait video's pixel (x, y) is the network's pixel ((y + .5) / 2 - .5, (179 - x + .5) / 2 - .5) (rotated
    counter-clockwise, halved), worked out by hand here; the pick is that pixel of the frame on screen, and its
    trajectory at that frame's time projects through the true camera onto it."""
    show(viewer, 4)
    nx, ny = card_pixel(viewer.scene.field, 4, not_on=0)
    typed = (VIDEO_HW[1] - 1 - 2 * ny, 2 * nx)  # to the network: ((2 nx + .5) / 2 - .5, (2 ny + .5) / 2 - .5), nearest (nx, ny)
    assert typed[0] != nx and typed[1] >= HEIGHT  # taken as network pixels it would be elsewhere or outside
    page.send("Pixel x,y (video pixels)", f"{typed[0]},{typed[1]}")
    page.click("Add pixel on this frame")
    assert wait_until(lambda: len(viewer.state.picks) == 1), page.notifications()
    assert viewer.wait_idle(30)
    pick = viewer.state.picks[0]
    assert pick.frame == 4 and pick.pixels.tolist() == [ny * WIDTH + nx]
    built = viewer.display.trajectories.trajectories
    k = int(np.argmin(np.abs(built.times - TIMES[4])))
    pixel, _ = camera(4).project(built.samples[-1, k].astype(np.float64))
    np.testing.assert_allclose(pixel, [nx, ny], atol=0.05)


def test_an_uploaded_edited_frame_of_the_videos_size_is_kept(viewer, page, tmp_path):
    """An edited first frame of the portrait video's own size (180 wide, 320 high) is taken as it is."""
    rng = np.random.default_rng(0)
    edited = rng.integers(0, 256, (VIDEO_HW[0], VIDEO_HW[1], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(edited).save(buffer, format="PNG")
    viewer.state.edited_frame = ""
    since = page.upload("Upload edited first frame", "edited.png", buffer.getvalue())
    assert wait_until(lambda: viewer.state.edited_frame or page.notifications(since)), "no answer to the upload"
    assert viewer.state.edited_frame, page.notifications(since)
    assert np.array_equal(np.asarray(Image.open(viewer.state.edited_frame).convert("RGB")), edited)


def test_the_colour_bar_runs_from_the_first_frame_to_the_last(viewer, page):
    """Colouring by time with viridis: the colour bar starts with matplotlib's viridis(0) (the first frame's time,
    under its label 0) and ends with viridis(1)."""
    show(viewer, 0)
    before = viewer.display.trajectories.trajectories
    page.send("Colormap", "viridis")
    assert wait_until(lambda: viewer.display.trajectories.trajectories is not before)  # rebuilt with the new colours
    assert viewer.wait_idle(30)
    bar = viewer.controls.outputs.legend.image
    row = bar[22 + 9]  # the middle of the bar's rows
    painted = np.flatnonzero(np.any(row != 255, axis=-1))
    viridis = matplotlib.colormaps["viridis"]
    first, last = (np.round(np.asarray(viridis(v)[:3]) * 255) for v in (0.0, 1.0))
    np.testing.assert_allclose(row[painted[0]], first, atol=2)
    np.testing.assert_allclose(row[painted[-1]], last, atol=2)


def test_a_new_pick_rings_on_the_pictures_already_seen(viewer):
    """Frame 2's picture was made before the pick; when frame 2 is shown again it rings the picked pixel (a
    background pixel: the picture differs from the frame there only by the ring), and so does the picture on screen."""
    show(viewer, 2)
    show(viewer, 0)
    field, panel = viewer.scene.field, viewer.display.panel
    for frame, (x, y) in ((0, (30, 70)), (2, (140, 15))):
        assert not field.masks[frame][y, x]
        viewer.clicked_pixel(frame, float(x), float(y))
        assert viewer.wait_idle(30)
        viewer.controls.set_time(float(TIMES[frame]))
        assert viewer.wait_idle(30)
        picture = panel.images.node(frame).image.astype(int)
        plain = field.images[frame].numpy().astype(int)
        near = (slice(y - 4, y + 5), slice(x - 4, x + 5))
        assert np.abs(picture[near] - plain[near]).sum(axis=-1).max() > 60, f"frame {frame}: no ring at ({x}, {y})"


def test_frustums_stand_where_the_true_cameras_filmed(viewer):
    """Each frustum sits at its frame's true camera centre and turns as it did (camera -> world is R^T: the last
    frame is yawed 3 degrees); a ray from the true camera through pixel (x, y) meets the frustum's image at (x, y),
    so a click there picks what that camera saw there."""
    layer = viewer.display.frustums
    assert sorted(layer.nodes) == list(range(len(KEPT)))
    for frame in (0, 3, 5):
        true, geometry, node = camera(frame), layer.geometry[frame], layer.nodes[frame]
        np.testing.assert_allclose(node.position, true.centre, atol=1e-2)
        np.testing.assert_allclose(vtf.SO3(np.asarray(node.wxyz)).as_matrix(), true.rotation.T, atol=2e-3)
        for x, y in ((12.0, 8.0), (80.0, 45.0), (150.0, 70.0)):
            k = true.intrinsics
            direction = true.rotation.T @ np.array([(x - k.cx) / k.focal, (y - k.cy) / k.focal, 1.0])
            pixel = ray_to_pixel(geometry, true.centre - 0.5 * direction, direction, (HEIGHT, WIDTH))
            assert pixel is not None and pixel == pytest.approx((x, y), abs=0.5)


def test_frustum_images_are_the_frames_in_their_own_colours(viewer):
    """The JPEG each frustum sends shows its frame: red where the card is (240) and 40 elsewhere, green rising with x,
    no blue; decoded, its channel means match the frame's."""
    for frame, node in viewer.display.frustums.nodes.items():
        shown = np.asarray(Image.open(io.BytesIO(node._image_data)).convert("RGB")).astype(float)
        truth = viewer.scene.field.images[frame].numpy().astype(float)
        assert shown.shape == truth.shape
        np.testing.assert_allclose(shown.mean(axis=(0, 1)), truth.mean(axis=(0, 1)), atol=3)


def test_point_size_sliders_size_their_own_points(viewer, page):
    """Static 4 px and moving 0.5 px, at the median depth: the background's points are 4 pixel footprints wide
    (depth / focal), the moving points 0.5, whatever was set before."""
    show(viewer, 1)
    page.send("Static point size (px)", 4.0)
    page.send("Moving point size (px)", 0.5)
    points = viewer.display.points
    # both values applied: the moving points reach an eighth of the static ones only once the second arrives too
    assert wait_until(lambda: points.shown_foreground().point_size < points.background.point_size / 6), "no size change"
    assert viewer.wait_idle(30)
    footprint = PLANE[0] / (FOCAL * WIDTH / 128)  # one pixel at the background plane's depth
    assert points.background.point_size == pytest.approx(4.0 * footprint, rel=0.2)
    assert points.shown_foreground().point_size == pytest.approx(0.5 * footprint, rel=0.2)
    assert points.background.point_size / points.shown_foreground().point_size == pytest.approx(8.0)


def test_static_confidence_slider_drops_static_points(viewer, page):
    """Confidence rises with x: dropping the lowest 50% of the static points keeps the right half of them."""
    total = len(viewer.scene.background.points)
    background = viewer.display.points.background
    page.send("Static: drop lowest conf. %", 50)
    assert wait_until(lambda: len(background.points) < 0.7 * total), "the static points were not filtered again"
    assert viewer.wait_idle(30)
    assert len(background.points) == pytest.approx(0.5 * total, rel=0.03)
    page.send("Static: drop lowest conf. %", 10)
    assert wait_until(lambda: len(background.points) > 0.8 * total)


def test_a_listed_object_is_the_card_of_the_frame_shown(viewer, page):
    """List the objects on frame 0, then on frame 4: one object, the card, as large as its true mask on frame 4;
    adding it picks exactly the card's pixels on frame 4."""
    show(viewer, 0)
    for frame in (0, 4):
        viewer.controls.set_time(float(TIMES[frame]))
        assert viewer.wait_idle(30)
        viewer.controls.objects.options = ("(list objects first)",)
        page.click("List objects on this frame")
        assert wait_until(lambda: viewer.controls.objects.options[0] != "(list objects first)"), page.notifications()
    mask = viewer.scene.field.masks[4].numpy()
    options = tuple(viewer.controls.objects.options)
    assert options == (f"1: {int(mask.sum())} px",)
    page.send("Object", options[0])
    page.click("Add object")
    assert wait_until(lambda: len(viewer.state.picks) == 1), page.notifications()
    pick = viewer.state.picks[0]
    assert pick.frame == 4 and np.array_equal(pick.pixels, np.flatnonzero(mask))


def test_a_recording_plays_at_the_chosen_pace_and_leaves_the_time(viewer, page):
    """At 8 FPS the six frames last 6 / 8 s in the recording (what its player waits), and the viewer is back at the
    time it showed before."""
    show(viewer, 2)
    page.send("FPS", 8)
    assert wait_until(lambda: viewer.state.fps == 8)
    viser_path, _ = viewer.record()
    raw = viser_path.read_bytes()
    inner = zstandard.ZstdDecompressor().decompress(raw[8:], max_output_size=int.from_bytes(raw[:8], "little"))
    recording = msgspec.msgpack.decode(inner[8 : 8 + int.from_bytes(inner[:8], "little")])
    assert recording["durationSeconds"] == pytest.approx(len(KEPT) / 8)
    assert viewer.state.t == pytest.approx(TIMES[2])
    assert viewer.wait_idle(30)
    assert viewer.display.points.shown_frame == 2


def test_a_long_clip_panel_shows_the_frame_on_screen(tmp_path, monkeypatch):
    """A clip longer than the panel's picture budget keeps one picture: after frame 2 then frame 4 it shows frame 4,
    its card (the true mask) tinted and nothing else changed."""
    monkeypatch.setattr(panels, "PANEL_IMAGES", 2)
    joined_field().save(tmp_path / "field.safetensors")
    with serving(tmp_path, frustums=False, trajectory_frames="none") as running:
        for frame in (2, 4):
            running.controls.set_time(float(TIMES[frame]))
            assert running.wait_idle(30)
        single, field = running.display.panel.single, running.scene.field
        assert single.label.startswith("frame 4 ")
        changed = np.abs(single.image.astype(int) - field.images[4].numpy().astype(int)).sum(axis=-1) > 12
        assert np.array_equal(changed, field.masks[4].numpy())


def test_card_moves_as_the_scene_says():
    """The fixture itself: the card's true motion between kept frames (guards the truth the tests above rely on)."""
    field = joined_field()
    own = field.points_at_own_time().numpy()
    velocity = np.array([*(CARD_END - CARD_START), 0.0])
    for frame in (1, 5):
        points = own[frame][field.masks[frame].numpy()]
        at_zero = field.points_at([0.0], [frame])[0, 0].numpy()[field.masks[frame].numpy()]
        np.testing.assert_allclose(points - at_zero, np.broadcast_to(velocity * TIMES[frame], points.shape), atol=1e-4)


def test_typed_pixels_are_checked_against_the_videos_own_width_and_height():
    """The portrait video is 180 wide and 320 high: its bottom-right pixel (179, 319) is inside, x = 180 and y = 320
    are not (the bounds are the video's, x against its width, y against its height)."""
    from viewer.controls import parse_pixel

    assert parse_pixel("179, 319", PORTRAIT.original_hw) == (179.0, 319.0)
    assert parse_pixel("0 250", PORTRAIT.original_hw) == (0.0, 250.0)
    for bad in ("180,10", "10,320", "-1,5"):
        with pytest.raises(ValueError, match="outside the 180x320 video"):
            parse_pixel(bad, PORTRAIT.original_hw)


def test_a_wide_frames_frustum_picture_keeps_its_aspect():
    """A frame wider than the thumbnail is shrunk to 256 pixels wide at its own aspect (72x400 -> 46x256), and
    keeps its colours: red 240 on the card and 40 elsewhere, green rising with x, as the scene painted them."""
    field = make_scene(frames=2, num_ctrl=4, height=72, width=400).field
    layer = frustum_layer.FrustumLayer(None, Scene.build(field), lambda *_: None)
    thumb = layer._thumbnail(0).astype(float)
    assert thumb.shape == (round(72 * 256 / 400), 256, 3)
    truth = field.images[0].numpy().astype(float)
    np.testing.assert_allclose(thumb.mean(axis=(0, 1)), truth.mean(axis=(0, 1)), atol=3)
    column = (np.arange(256) + 0.5) * 400 / 256 - 0.5  # the source column under each thumbnail column
    green = np.interp(column, np.arange(400), truth[0, :, 1])
    assert np.median(np.abs(thumb[thumb.shape[0] // 2, :, 1] - green)) < 4  # away from the wrap of 2x mod 256


def test_the_scene_opens_with_the_fields_up_upwards(page):
    """The field's y points down (the first camera's frame): the root orientation the page gets must turn the field's
    -y onto three.js's up, +y, or the scene opens upside down."""
    _, message = page.wait_for(lambda m: m["type"] == "SetOrientationMessage" and m["name"] == "")
    turn = vtf.SO3(np.asarray(message["wxyz"], dtype=np.float64)).as_matrix()
    np.testing.assert_allclose(turn @ np.array([0.0, -1.0, 0.0]), [0.0, 1.0, 0.0], atol=1e-6)
