"""Our exports as each generator reads them, against the bundled clip's ground truth.

Every file is read back through a reader that redoes its consumer's loading code (ATI's
run list + ``process_tracks``, WorldCanvas' ``load_json`` and latent frames, ComfyUI's
``pad_pts`` + ``process_tracks``, Wan-Move's scaling and ``create_pos_feature_map``), and
what the consumer would use is compared with the truth of the clip the field was made of
(tests/truth_field.py): the picked pixels, the true 3D points through the true cameras,
the renderer's own visibility. Expected pixel positions are computed here from the clip's
sizes, independently of the export's placement code.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from tracefield.cli import main
from tracefield.errors import TracefieldError
from tracefield.export import ExportOptions, run_export
from tracefield.export.formats.ati import ati_view, read_ati, read_run_list
from tracefield.export.formats.comfyui import read_comfyui
from tracefield.export.formats.wanmove import read_wanmove
from tracefield.export.formats.worldcanvas import read_worldcanvas, worldcanvas_view
from tracefield.export.images import read_edited_frame
from tracefield.export.readback import consumer_view
from tracefield.export.selection import SelectionOptions
from tracefield.export.tracks import CameraOptions

from conftest import SHARED, require_shared
from truth_field import CLIP, SHRINK, bundled_truth

W0, H0 = 448, 256  # the bundled frames
CANVAS_SCALE, CANVAS_LEFT = 480 / 256, 4.0  # 448x256 cover-fitted into 832x480: 840x480, 4 columns cut each side
CONSUMERS = ("ati", "worldcanvas", "comfyui", "wanmove")
GRID = SelectionOptions(strategy="grid", region="all", grid_step=10, background=4, max_tracks=1000)
FALSE_VISIBLE, FALSE_HIDDEN = 0.02, 0.10  # of (track, frame) pairs; the occlusion test errs on the hidden side at edges
CAPTIONS = {1: "the red ball rolls right"}


@pytest.fixture(scope="module")
def truth():
    return bundled_truth()


def export(truth, out, fmt, frame=0, selection=GRID, camera="filmed", picks=None, **kwargs):
    kwargs.setdefault("captions", CAPTIONS if fmt == "worldcanvas" else {})
    options = ExportOptions(format=fmt, output=out, name="clip", selection=replace(selection, frame=frame), camera=CameraOptions(mode=camera),
                            pictures=kwargs.pop("pictures", False), **kwargs)
    return run_export(truth.field, options, picks=picks)


def stored(fmt, out):
    """``(xy [T, N, 2], visible [T, N])`` as the file holds them (NaN past a ComfyUI track's end)."""
    if fmt == "ati":
        xy, visible = read_ati(out / "clip.pth")
        return xy.transpose(1, 0, 2), visible.T
    if fmt == "worldcanvas":
        conditions = read_worldcanvas(out / "clip.json")
        return conditions.xy, conditions.visible
    if fmt == "comfyui":
        return read_comfyui(out / "clip.json")
    return read_wanmove(out / "clip")


def file_pixels(fmt, original_xy):
    """Original pixel-centre coordinates -> the format file's pixels (corner origin), from the sizes alone."""
    corner = np.asarray(original_xy, dtype=np.float64) + 0.5
    if fmt in ("ati", "npz"):
        return corner
    return corner * CANVAS_SCALE - np.array([CANVAS_LEFT, 0.0])


def consumer_pixels(fmt, view, xy):
    """File pixels -> the consumer's pixel space (Wan-Move scales by its video size / the image size)."""
    return xy * np.array(view.size) / np.array([832, 480]) if fmt == "wanmove" else xy


def seed_pixels(truth, result, keep):
    """The network pixels (x, y) the kept tracks were picked at (integers: every seed here is a pixel centre)."""
    net = truth.field.transform.to_model(result.tracks.picks[keep])
    assert np.allclose(net, np.round(net), atol=1e-6)
    return np.round(net).astype(int).T


def clip_frame(k, frames, start, end):
    """The clip frame output frame k shows, or None between clip frames."""
    i = (start + (end - start) * k / (frames - 1)) * 15
    return int(round(i)) if abs(i - round(i)) < 1e-4 else None


def visibility_errors(ours, truths):
    ours, truths = np.concatenate(ours), np.concatenate(truths)
    return float((ours & ~truths).mean()), float((~ours & truths).mean())


# --------------------------------------------------------------------------- every format against the truth


@pytest.mark.parametrize("frame", [0, 5])
@pytest.mark.parametrize("fmt", CONSUMERS)
def test_what_each_consumer_reads_matches_the_truth(truth, tmp_path, fmt, frame):
    frames = 121 if fmt in ("ati", "comfyui") else 81
    start = frame / 15
    end = 1.0 if frames == 121 or frame else 2 / 3  # output frames then fall on clip frames every 8 (or 12)
    result = export(truth, tmp_path, fmt, frame, end=end)
    keep = result.conditions.visible[0]
    assert keep.all() and not result.written.dropped  # tracks start on their own frame: every one is usable
    xs, ys = seed_pixels(truth, result, keep)
    xy, visible = stored(fmt, tmp_path)
    view = consumer_view(fmt, tmp_path, "clip")
    width, height = (W0, H0) if fmt == "ati" else (832, 480)
    ours, truths, sentinels, checked = [], [], 0, 0
    for k in range(frames):
        i = clip_frame(k, frames, start, end)
        if i is None:
            continue
        true_xy = file_pixels(fmt, truth.project(truth.tracks[frame, i, ys, xs], i))
        true_inside = (true_xy[:, 0] >= 0) & (true_xy[:, 0] < width) & (true_xy[:, 1] >= 0) & (true_xy[:, 1] < height)
        true_visible = truth.visible[frame, i, ys, xs] & true_inside
        held = ~np.isnan(xy[k, :, 0])
        if fmt == "worldcanvas":
            sentinel = (xy[k] == -1).all(axis=1)
            assert not (sentinel & true_inside).any()  # [-1, -1] only where the point is truly off the canvas
            sentinels += int(sentinel.sum())
            held &= ~sentinel
        np.testing.assert_allclose(xy[k, held], true_xy[held], atol=0.5)  # coordinates at every clip frame
        checked += int(held.sum())
        ours.append(visible[k] if fmt != "comfyui" else held)
        truths.append(true_visible)
        if k in view.frames:  # what the consumer uses there
            c = int(np.nonzero(view.frames == k)[0][0])
            if fmt != "worldcanvas":  # (WorldCanvas reads the mean of frames 4k-3..4k: checked through `stored`)
                used = view.used[c]
                np.testing.assert_allclose(view.xy[c, used], consumer_pixels(fmt, view, true_xy)[used], atol=0.5)
            assert (view.used[c] & ~true_visible).mean() <= FALSE_VISIBLE
    false_visible, false_hidden = visibility_errors(ours, truths)
    assert false_visible <= FALSE_VISIBLE
    if fmt != "comfyui":  # (ComfyUI cannot say "hidden": a track ends at its first hidden frame)
        assert false_hidden <= FALSE_HIDDEN
    assert checked > 5 * len(xs)
    if fmt == "worldcanvas":
        sentinel = (xy == -1).all(axis=-1)
        for c, j in enumerate(view.frames):  # a latent frame WorldCanvas uses averages no marker into its position
            assert not (view.used[c] & sentinel[max(j - 3, 1) if j else 0 : j + 1].any(axis=0)).any()
        if frame == 0:
            assert sentinels > 0  # the orbiting camera loses sight of some points: the markers were exercised
    picks = consumer_pixels(fmt, view, file_pixels(fmt, truth.field.transform.to_original(np.stack([xs, ys], -1))))
    _starts_at_picks(fmt, view, picks)


def _starts_at_picks(fmt, view, picks):
    """Each track's first frame and its appearance sample are at its pick, in the consumer's pixels."""
    assert view.used[0].all()
    np.testing.assert_allclose(view.xy[0], picks, atol=0.5)
    if fmt == "wanmove":  # the feature comes from the pick's latent cell, never the (-1, -1) cell
        np.testing.assert_array_equal(np.floor(view.start / 8), np.floor(picks / 8))
    else:
        np.testing.assert_allclose(view.start, picks, atol=0.5)


# --------------------------------------------------------------------------- anchoring


STRATEGIES = {
    "objects": SelectionOptions(strategy="objects", per_object=6, background=3),
    "grid": SelectionOptions(strategy="grid", region="foreground", grid_step=6, background=2),
    "fps": SelectionOptions(strategy="fps", region="background", max_tracks=12, background=0),
    "pixels": SelectionOptions(strategy="pixels", pixels=[(2 * 30 + 0.5, 2 * 17 + 0.5), (2 * 132 + 0.5, 2 * 16 + 0.5)], background=2),
    "picks": SelectionOptions(background=2),
}


@pytest.mark.parametrize("camera", ["static", "filmed", "path"])
@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_tracks_start_at_their_picks(truth, tmp_path, strategy, camera):
    fmt = CONSUMERS[(list(STRATEGIES).index(strategy) + ["static", "filmed", "path"].index(camera)) % len(CONSUMERS)]
    frame = 5 if camera != "path" else 3
    if camera == "path":
        (tmp_path / "orbit.yaml").write_text("orbit: {degrees: 10}\nzoom: {factor: 1.2}\n")
        camera = str(tmp_path / "orbit.yaml")
    picks = None
    if strategy == "picks":  # a whole true object and one pixel (x != y), as the viewer stores them
        width = truth.field.hw[1]
        picks = [np.flatnonzero(truth.object_ids[frame] == 3), np.array([41 * width + 150])]
    result = export(truth, tmp_path / "out", fmt, frame, STRATEGIES[strategy], camera, picks=picks)
    keep = result.conditions.visible[0]
    assert keep.all()
    xs, ys = seed_pixels(truth, result, keep)
    on_object = truth.object_ids[frame, ys, xs] > 0
    if strategy in ("objects", "picks", "grid"):
        assert on_object[~result.tracks.camera_tracks].all() and not on_object[result.tracks.camera_tracks].any()
    if strategy == "pixels":
        assert [(xs[0], ys[0]), (xs[1], ys[1])] == [(30, 17), (132, 16)] and list(on_object[:2]) == [False, True]
    if strategy == "picks":
        assert (150, 41) in set(zip(xs.tolist(), ys.tolist()))
        assert (truth.object_ids[frame, ys, xs][result.tracks.object_ids == 1] == 3).all()
    view = consumer_view(fmt, tmp_path / "out", "clip")
    picked = consumer_pixels(fmt, view, file_pixels(fmt, truth.field.transform.to_original(np.stack([xs, ys], -1))))
    _starts_at_picks(fmt, view, picked)
    if camera == "static":  # the seed frame's camera throughout: the true points through the true camera of that frame
        xy, _ = stored(fmt, tmp_path / "out")
        frames = len(xy)
        for k in range(frames):
            i = clip_frame(k, frames, frame / 15, 1.0)
            if i is not None:
                expected = file_pixels(fmt, truth.project(truth.tracks[frame, i, ys, xs], frame))
                held = ~np.isnan(xy[k, :, 0]) & ~(xy[k] == -1).all(axis=1)
                np.testing.assert_allclose(xy[k, held], expected[held], atol=0.5)


@pytest.mark.parametrize("fmt", CONSUMERS)
def test_anchoring_absorbs_the_fields_error(truth, tmp_path, fmt):
    """A field whose points are all off by a few centimetres: tracks still start at their picks and move as the field does."""
    shift = np.array([0.06, -0.04, 0.0])
    field = replace(truth.field, ctrl_pts=truth.field.ctrl_pts + torch.tensor(shift, dtype=torch.float32))
    focal = truth.intrinsics[0, 0] * SHRINK  # original pixels: the camera is exactly the first true one
    frames = 121 if fmt in ("ati", "comfyui") else 81
    end = 1.0 if frames == 121 else 2 / 3
    options = ExportOptions(format=fmt, output=tmp_path, name="clip", selection=replace(GRID, grid_step=16), end=end, pictures=False,
                            camera=CameraOptions(mode="static", focal=focal), captions=CAPTIONS if fmt == "worldcanvas" else {})
    result = run_export(field, options)
    assert np.median(np.linalg.norm(result.tracks.residual, axis=-1)) > 2  # the field's own projection misses the picks
    keep = result.conditions.visible[0]
    xs, ys = seed_pixels(truth, result, keep)
    pick = file_pixels(fmt, truth.field.transform.to_original(np.stack([xs, ys], -1)))
    view = consumer_view(fmt, tmp_path, "clip")
    _starts_at_picks(fmt, view, consumer_pixels(fmt, view, pick))
    xy, _ = stored(fmt, tmp_path)
    at_pick = file_pixels(fmt, truth.project(truth.tracks[0, 0, ys, xs] + shift, 0))
    for k in range(frames):
        i = clip_frame(k, frames, 0.0, end)
        if i is not None:  # the field's displacement since the pick, added to the pick
            expected = pick + file_pixels(fmt, truth.project(truth.tracks[0, i, ys, xs] + shift, 0)) - at_pick
            held = ~np.isnan(xy[k, :, 0]) & ~(xy[k] == -1).all(axis=1)
            np.testing.assert_allclose(xy[k, held], expected[held], atol=0.5)


# --------------------------------------------------------------------------- picks, captions, misuse


def test_picked_objects_keep_their_identity(truth, tmp_path):
    width = truth.field.hw[1]
    objects = [np.flatnonzero(truth.object_ids[0] == o) for o in (2, 1, 3)]
    pixel = np.array([17 * width + 60])  # on the room, x = 60, y = 17
    captions = {1: "the big ball rolls", 3: "the box tumbles"}
    result = export(truth, tmp_path, "worldcanvas", 0, SelectionOptions(per_object=5, background=2), picks=[*objects, pixel], captions=captions)
    data = read_worldcanvas(tmp_path / "clip.json")
    ids = np.asarray(data.ids)
    assert [int((ids == i).sum()) for i in (1, 2, 3, 4)] == [5, 5, 5, 1]
    assert data.metadata["id_caption_map"] == {"1": "the big ball rolls", "3": "the box tumbles"}
    assert data.metadata["color_map"] == {"1": "red", "3": "red"}
    assert [data.texts[list(ids).index(i)] for i in (1, 2, 3, 4)] == ["the big ball rolls", "None", "the box tumbles", "None"]
    view = worldcanvas_view(tmp_path / "clip.json")
    assert view.prompt == "Object 1: the big ball rolls\nObject 2: the box tumbles" and not view.appears
    ys, xs = np.mgrid[0:480, 0:832]
    original = (np.stack([xs, ys], -1) + 0.5 + [CANVAS_LEFT, 0]) / CANVAS_SCALE - 0.5
    net = np.clip(np.round((original + 0.5) / SHRINK - 0.5).astype(int), 0, [width - 1, truth.field.hw[0] - 1])
    true_ids = truth.object_ids[0][net[..., 1], net[..., 0]]  # the true objects, drawn on the canvas
    for obj, true_obj in zip((1, 2, 3), (2, 1, 3)):
        mask = data.masks[list(ids).index(obj)]
        iou = (mask & (true_ids == true_obj)).sum() / (mask | (true_ids == true_obj)).sum()
        assert iou > 0.95
        for n in np.nonzero(ids == obj)[0]:  # each track starts inside its object's mask, on that true object
            x, y = np.floor(data.xy[0, n]).astype(int)
            assert mask[y, x] and true_ids[y, x] == true_obj
    n = list(ids).index(4)
    np.testing.assert_allclose(data.xy[0, n], file_pixels("worldcanvas", [2 * 60 + 0.5, 2 * 17 + 0.5]), atol=0.5)  # x and y as picked
    assert result.written.num_tracks == len(ids)


def test_tracks_a_consumer_would_misuse_are_left_out(truth, tmp_path, caplog):
    """Starting later than the picks' frame, some tracks are hidden or gone on the first frame: left out, counted."""
    caplog.set_level(logging.INFO, logger="tracefield")
    for fmt in CONSUMERS:
        out = tmp_path / fmt
        result = export(truth, out, fmt, 0, start=0.4)  # output frame 0 shows clip frame 6
        first = result.conditions.visible[0]
        assert 0 < first.sum() < len(first)
        assert sum(result.written.dropped.values()) == int((~first).sum()) and result.written.num_tracks == int(first.sum())
        view = consumer_view(fmt, out, "clip")
        assert view.xy.shape[1] == int(first.sum()) and view.used[0].all() and np.isfinite(view.start).all()
        if fmt == "worldcanvas":
            assert not view.appears
        if fmt == "wanmove":
            inside = (view.start >= 0) & (view.start < view.size)
            assert inside.all() and (np.floor(view.start / 8) == np.floor(view.xy[0] / 8)).all()
        xs, ys = seed_pixels(truth, result, first)
        true_xy = truth.project(truth.tracks[0, 6, ys, xs], 6)
        assert truth.visible[0, 6, ys, xs].mean() >= 1 - FALSE_VISIBLE  # what is kept is truly seen there
        assert f"{fmt}: {int(first.sum())} tracks in" in caplog.text  # the message gives the count in the file
        assert np.isfinite(true_xy).all()


def test_run_list_opens_from_any_folder(truth, tmp_path, monkeypatch):
    export(truth, tmp_path / "exports", "ati", 0, prompt="  balls in a room \n")
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)  # ATI opens image and track relative to its working directory
    entry = read_run_list(tmp_path / "exports" / "clip.yaml")[0]
    assert entry.image.shape == (H0, W0, 3) and entry.text == "balls in a room" and entry.array.shape[1:] == (121, 1, 3)


# --------------------------------------------------------------------------- motion transfer


def edited_frame(path, size):
    frame = np.asarray(Image.open(CLIP / "000.png").convert("RGB"))
    Image.fromarray(255 - frame).resize(size, Image.BILINEAR).save(path)
    return path


@pytest.mark.parametrize("fmt, size, scale, offset", [
    ("ati", (896, 512), (2.0, 2.0), (0.0, 0.0)),  # same aspect: 2x
    ("ati", (896, 560), (2.1875, 2.1875), (42.0, 0.0)),  # 1.6 instead of 1.75: cover-fitted, 42 columns cut each side
    ("wanmove", (896, 560), (2.1875 * 832 / 896, 2.1875 * 832 / 896), (42.0 * 832 / 896, 20.0)),  # then into 832x520, 20 rows cut
])
def test_conditions_for_an_edited_first_frame(truth, tmp_path, fmt, size, scale, offset):
    image = edited_frame(tmp_path / "edited.png", size)
    result = export(truth, tmp_path / "out", fmt, 0, SelectionOptions(per_object=4, background=4), image=image)
    written = np.asarray(Image.open(tmp_path / "out" / "clip.png").convert("RGB"))
    assert written.shape[:2] == ((size[1], size[0]) if fmt == "ati" else (480, 832))
    if fmt == "ati":
        entry = read_run_list(tmp_path / "out" / "clip.yaml")[0]
        assert entry.image.shape == (size[1], size[0], 3) and np.abs(entry.image.astype(int) - np.asarray(Image.open(image)).astype(int)).max() == 0
    keep = result.conditions.visible[0]
    xs, ys = seed_pixels(truth, result, keep)
    view = consumer_view(fmt, tmp_path / "out", "clip")
    expected = (truth.field.transform.to_original(np.stack([xs, ys], -1)) + 0.5) * scale - offset
    _starts_at_picks(fmt, view, consumer_pixels(fmt, view, expected))
    xy, _ = stored(fmt, tmp_path / "out")
    k = 80 if fmt == "ati" else 32  # clip frame 10 of 121 output frames / clip frame 6 of 81
    i = clip_frame(k, len(xy), 0.0, 1.0)
    true_xy = (truth.project(truth.tracks[0, i, ys, xs], i) + 0.5) * scale - offset
    seen = ~np.isnan(xy[k, :, 0])
    np.testing.assert_allclose(xy[k, seen], true_xy[seen], atol=0.5)


def test_edited_frame_is_checked(truth, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(TracefieldError, match="not a readable image"):
        export(truth, tmp_path / "a", "ati", image=tmp_path / "notes.png")
    with pytest.raises(TracefieldError, match="does not show the 448x256 video frame.*crop or pad"):
        export(truth, tmp_path / "b", "ati", image=edited_frame(tmp_path / "square.png", (512, 512)))
    truth.field.save(tmp_path / "scene" / "field.safetensors")
    code = main(["export", str(tmp_path / "scene"), "--format", "ati", "--image", str(tmp_path / "missing.png"), "-o", str(tmp_path / "c")])
    assert code == 2 and "--image" in capsys.readouterr().err and not (tmp_path / "c").exists()
    upload = edited_frame(tmp_path / "ok.png", (448, 256)).read_bytes()
    assert read_edited_frame(upload, (W0, H0), what="Upload").shape == (256, 448, 3)  # the viewer's upload goes through the same checks
    with pytest.raises(TracefieldError, match="^Upload: not a readable image; save it as PNG or JPEG$"):
        read_edited_frame(b"GIF89a broken", (W0, H0), what="Upload")
    with pytest.raises(TracefieldError, match="use an image of 16 to 8192 pixels a side"):
        read_edited_frame(edited_frame(tmp_path / "tiny.png", (14, 8)).read_bytes(), (W0, H0))


# --------------------------------------------------------------------------- the editor's own files


def test_worldcanvas_reader_reads_what_load_json_reads():
    door = worldcanvas_view(require_shared(SHARED / "vectors" / "worldcanvas" / "door.json"))
    raw = json.loads((SHARED / "vectors" / "worldcanvas" / "door.json").read_text())
    assert door.prompt == ("Object 1: The camera moves forward and then stops. Then the door is opened from the inside.\n"
                           "Object 2 appears: A man in pajamas walks out through the door, raises his hand to greet the camera, "
                           "then turns around and switches off the lit light.")
    assert door.appears == {"4"} and door.ids == [1, 2, 3, 4]
    assert np.isnan(door.start[3]).all() and np.array_equal(door.start[:3], [t["tracking"][0] for t in raw[:3]])
    man = np.asarray(raw[3]["tracking"], dtype=float)
    vis = np.asarray(raw[3]["tracking_vis_value"])
    np.testing.assert_allclose(door.xy[5, 3], man[17:21].mean(axis=0))  # latent frame 5: the mean of frames 17..20
    np.testing.assert_array_equal(door.used[:, 3], vis[::4] > 0.8)
    assert not door.used[:5, 3].any() and door.used[5:, 3].any()
    mouse = worldcanvas_view(require_shared(SHARED / "vectors" / "worldcanvas" / "mouse_dog.json"))
    raw = json.loads((SHARED / "vectors" / "worldcanvas" / "mouse_dog.json").read_text())
    assert mouse.prompt == "Object 1: " + raw[-1]["id_caption_map"]["2"]  # id 1 has a text but no entry: not in the prompt
    assert not mouse.appears and mouse.ids == [1, 1, 1, 2, 3] and mouse.used.all()
