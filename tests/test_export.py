"""Export: readers against the references, geometry against a scene with known cameras, bad input.

What each consumer reads from our files is checked against the bundled clip's ground truth
in test_export_consumers.py.
"""

from __future__ import annotations

import json

import imageio.v2 as iio
import numpy as np
import pytest

from tracefield.cli import main
from tracefield.errors import TracefieldError
from tracefield.export import ExportOptions, run_export
from tracefield.export.canvas import Placement, fit_image, inside
from tracefield.export.formats.ati import ati_condition, read_ati, read_ati_array
from tracefield.export.formats.comfyui import read_comfyui
from tracefield.export.formats.npz import read_npz
from tracefield.export.formats.worldcanvas import METADATA_KEYS, decode_mask, read_worldcanvas
from tracefield.export.selection import SelectionOptions
from tracefield.export.timing import Timing, clip_times
from tracefield.export.tracks import CameraOptions
from tracefield.io.preprocess import Preprocess

from conftest import SHARED, require_shared
from scene import HEIGHT, WIDTH, make_scene

ATI_NAMES = ["bear", "deco", "fish", "giraffe", "human", "sea"]


@pytest.fixture(scope="module")
def scene():
    return make_scene()


def export(field, tmp_path, fmt="npz", **kwargs):
    selection = kwargs.pop("selection", SelectionOptions(strategy="grid", region="all", grid_step=12, background=0))
    camera = kwargs.pop("camera", CameraOptions())
    return run_export(field, ExportOptions(format=fmt, output=tmp_path, name="clip", selection=selection, camera=camera, **kwargs))


# --------------------------------------------------------------------------- ATI


@pytest.mark.parametrize("name", ATI_NAMES)
def test_ati_reader_matches_reference(name):
    expected = np.load(require_shared(SHARED / "vectors" / "ati" / f"{name}.expected.npz"))
    got = ati_condition(read_ati_array(SHARED / "vectors" / "ati" / f"{name}.pth"), int(expected["width"]), int(expected["height"]))
    np.testing.assert_allclose(got.numpy(), expected["tracks"], atol=1e-5, rtol=0)


def test_ati_round_trip(scene, tmp_path):
    result = export(scene.field, tmp_path, "ati", camera=CameraOptions(occlusion=False))
    xy, visible = read_ati(tmp_path / "clip.pth")
    held = result.conditions.take(result.conditions.visible[0])
    np.testing.assert_allclose(xy, held.xy.transpose(1, 0, 2), atol=1e-3)
    np.testing.assert_allclose(xy[:, 0], result.tracks.picks[result.conditions.visible[0]] + 0.5, atol=1e-3)  # file pixels: corner origin
    np.testing.assert_array_equal(visible, held.visible.T)
    run = __import__("yaml").safe_load((tmp_path / "clip.yaml").read_text())
    assert run == [{"image": str(tmp_path / "clip.png"), "text": run[0]["text"], "track": str(tmp_path / "clip.pth")}] and run[0]["text"]
    assert iio.imread(tmp_path / "clip.png").shape == (HEIGHT, WIDTH, 3)
    condition = ati_condition(read_ati_array(tmp_path / "clip.pth"), WIDTH, HEIGHT)
    assert condition.shape == (81, held.num_tracks, 4)
    x0 = (held.xy[0, :, 0] - WIDTH / 2) / HEIGHT * 2  # frame 0, short side spans [-1, 1]
    np.testing.assert_allclose(condition[0, :, 1].numpy(), x0, atol=1e-4)


# --------------------------------------------------------------------------- WorldCanvas


def test_worldcanvas_has_the_reference_structure(scene, tmp_path):
    reference = json.loads(require_shared(SHARED / "vectors" / "worldcanvas" / "door.json").read_text())
    export(scene.field, tmp_path, "worldcanvas", selection=SelectionOptions(per_object=5, background=3, min_object_area=20),
           captions={1: "the card slides right"})
    ours = json.loads((tmp_path / "clip.json").read_text())
    assert [list(t) for t in ours[:-5]] == [list(reference[0])] * (len(ours) - 5)
    assert [list(m) for m in ours[-5:]] == [list(m) for m in reference[-5:]] == [[k] for k in METADATA_KEYS]
    conditions = read_worldcanvas(tmp_path / "clip.json")
    assert conditions.xy.shape[0] == 81 and conditions.visible.shape[0] == 81
    assert conditions.texts.count("None") == 3 and conditions.texts.count("the card slides right") == 5
    assert conditions.metadata["id_caption_map"] == {"1": "the card slides right"} and conditions.metadata["color_map"] == {"1": "red"}
    assert len(set(conditions.ids)) == 4  # the card, and each camera track an id of its own
    for mask, radius in zip(conditions.masks, conditions.radii):
        assert mask.shape == (480, 832)
        assert radius == max(int(mask.sum()) * 320 // 399360, 5)
    card = conditions.masks[conditions.texts.index("the card slides right")]
    assert card.mean() > 0.05  # the card covers a good part of the first frame
    for n in range(len(conditions.ids)):  # every track starts inside its own mask
        x, y = np.floor(conditions.xy[0, n]).astype(int)
        assert conditions.masks[n][y, x]


def test_worldcanvas_needs_a_caption(scene, tmp_path):
    selection = SelectionOptions(per_object=2, background=1, min_object_area=20)
    with pytest.raises(TracefieldError, match="no --caption given.*objects: 1"):
        export(scene.field, tmp_path, "worldcanvas", selection=selection)
    with pytest.raises(TracefieldError, match="no object 7 among the exported tracks"):
        export(scene.field, tmp_path, "worldcanvas", selection=selection, captions={7: "a ghost"})
    with pytest.raises(TracefieldError, match="WorldCanvas works on 832x480 only"):
        export(scene.field, tmp_path, "worldcanvas", selection=selection, captions={1: "a card"}, canvas="1280x720")
    assert not (tmp_path / "clip.json").exists()


def test_worldcanvas_reader_reads_the_editor_files():
    for name in ("door", "mouse_dog"):
        conditions = read_worldcanvas(require_shared(SHARED / "vectors" / "worldcanvas" / f"{name}.json"))
        assert conditions.xy.shape[0] == 81 and len(conditions.ids) == len(conditions.masks)
        assert all(r == max(int(m.sum()) * 320 // 399360, 5) for r, m in zip(conditions.radii, conditions.masks))


def test_mask_rle_round_trip():
    from tracefield.export.formats.worldcanvas import encode_mask

    mask = np.zeros((480, 832), bool)
    mask[100:200, 300:450] = True
    mask[10, 10] = True
    assert np.array_equal(decode_mask(encode_mask(mask)), mask)


# --------------------------------------------------------------------------- other formats


def test_wanmove_comfyui_npz(scene, tmp_path):
    wan = export(scene.field, tmp_path / "wan", "wanmove")
    tracks = np.load(tmp_path / "wan" / "clip" / "tracks.npy")
    visibility = np.load(tmp_path / "wan" / "clip" / "visibility.npy")
    assert tracks.dtype == np.float32 and visibility.dtype == bool
    assert tracks.shape == (81, wan.written.num_tracks, 2) and visibility.shape == (81, wan.written.num_tracks)
    assert iio.imread(tmp_path / "wan" / "clip.png").shape == (480, 832, 3)  # the image in the tracks' pixel space
    placement = Placement.cover(WIDTH, HEIGHT, 832, 480)
    np.testing.assert_allclose(tracks[0], placement.to_file(wan.tracks.picks[wan.conditions.visible[0]]), atol=1e-3)
    assert not (visibility & ~inside(tracks, 832, 480)).any()
    comfy = export(scene.field, tmp_path / "comfy", "comfyui")
    stored, given = read_comfyui(tmp_path / "comfy" / "clip.json")
    held = comfy.conditions.take(comfy.conditions.visible[0])
    for n in range(held.num_tracks):  # each track runs exactly while it is visible
        length = int(given[:, n].sum())
        assert held.visible[:length, n].all() and (length == 121 or not held.visible[length, n])
        np.testing.assert_allclose(stored[:length, n], held.xy[:length, n], atol=1e-3)
    plain = export(scene.field, tmp_path / "npz", "npz", camera=CameraOptions(mode="filmed"))
    data = read_npz(tmp_path / "npz" / "clip.npz")
    np.testing.assert_allclose(data["xy"], plain.tracks.xy + 0.5, atol=1e-3)
    np.testing.assert_array_equal(data["visible"], plain.tracks.seen & inside(data["xy"], WIDTH, HEIGHT))
    assert data["points3d"].shape == (scene.field.num_frames, plain.tracks.num_tracks, 3)
    assert str(data["camera_mode"]) == "filmed" and data["focal"] == pytest.approx(110.0, rel=1e-4)


def test_placement_follows_the_image():
    placement = Placement.cover(1280, 960, 832, 480)  # 4:3 onto 16:9: resized to 832x624, 72 rows cropped at top
    image = np.zeros((960, 1280, 3), np.uint8)
    image[598:603, 897:902] = 255
    out = fit_image(image, 832, 480)
    ys, xs = np.nonzero(out[..., 0] > 60)
    np.testing.assert_allclose([xs.mean() + 0.5, ys.mean() + 0.5], placement.to_file([899, 600]), atol=0.7)
    np.testing.assert_allclose(placement.from_file(placement.to_file([[10.0, 20.0]])), [[10.0, 20.0]])
    twice = Placement.cover(100, 50, 200, 100).then(Placement.cover(200, 100, 90, 60))
    np.testing.assert_allclose(twice.to_file([[3.0, 4.0]]), Placement.cover(200, 100, 90, 60).to_file(Placement.cover(100, 50, 200, 100).to_file([[3.0, 4.0]]) - 0.5))
    assert inside(np.array([[-0.3, 5.0], [0.0, 5.0], [831.9, 479.9], [832.0, 10.0]]), 832, 480).tolist() == [False, True, True, False]


# --------------------------------------------------------------------------- geometry


def test_static_scene_projects_to_the_known_camera_flow(scene, tmp_path):
    """Background tracks through the estimated filmed cameras land where the true cameras put them."""
    n = scene.field.num_frames
    result = export(scene.field, tmp_path, selection=SelectionOptions(strategy="grid", region="background", grid_step=8, background=0),
                    camera=CameraOptions(mode="filmed", occlusion=False), frames=n, fps=10)
    tracks = result.tracks
    truth = np.stack([scene.cameras[k].project(tracks.points[k])[0] for k in range(n)])
    assert np.abs(tracks.xy - truth).max() < 0.5
    flow = truth[-1] - truth[0]
    assert np.abs(flow).mean() > 5  # the camera really moved


@pytest.mark.parametrize("transform", [Preprocess((144, 256), False, (72, 128), (72, 128)), Preprocess((256, 144), True, (72, 128), (72, 128))])
def test_tracks_come_out_in_original_pixels(transform, tmp_path):
    scene = make_scene(transform=transform)
    n = scene.field.num_frames
    result = export(scene.field, tmp_path, selection=SelectionOptions(strategy="grid", region="background", grid_step=16, background=0),
                    camera=CameraOptions(mode="filmed", occlusion=False), frames=n, fps=10)
    truth = np.stack([scene.cameras[k].project(result.tracks.points[k])[0] for k in range(n)])
    np.testing.assert_allclose(result.tracks.xy, transform.to_original(truth), atol=0.5)
    assert result.tracks.original_size == transform.original_hw[::-1]


def test_object_motion_with_the_static_camera(scene, tmp_path):
    result = export(scene.field, tmp_path, selection=SelectionOptions(per_object=4, background=0, min_object_area=20),
                    frames=9, fps=10, camera=CameraOptions(occlusion=False))
    tracks = result.tracks
    assert (tracks.object_ids == 1).all()
    start = tracks.points[0]
    times = tracks.clip_times
    expected_points = start[None] + scene.card_velocity[None, None] * times[:, None, None]
    np.testing.assert_allclose(tracks.points, expected_points, atol=1e-4)
    truth = scene.cameras[0].project(expected_points)[0]
    np.testing.assert_allclose(tracks.xy, truth, atol=1e-3)


def test_occlusion_hides_background_behind_the_card(scene, tmp_path):
    """A wall point the card slides over is hidden while covered, visible before it arrives."""
    field = scene.field
    y = HEIGHT // 2
    covered_later = next(x for x in range(WIDTH - 1, 0, -1) if not field.fg_masks[0, y, x] and field.fg_masks[-1, y, x])
    pixel = field.transform.to_original([[covered_later, y]])[0]
    result = export(field, tmp_path, selection=SelectionOptions(strategy="pixels", pixels=[tuple(pixel)], background=0),
                    frames=field.num_frames, fps=10, camera=CameraOptions(mode="filmed"))
    seen = result.tracks.seen[:, 0]
    assert seen[0] and not seen[-1]


def test_camera_path_orbit_moves_the_view(scene, tmp_path):
    path = tmp_path / "orbit.yaml"
    path.write_text("orbit: {degrees: 8}\nzoom: {factor: 1.2}\nease: smooth\n")
    still = export(scene.field, tmp_path / "a", selection=SelectionOptions(strategy="grid", region="background", grid_step=16, background=0),
                   camera=CameraOptions(occlusion=False), frames=5, fps=10)
    orbit = export(scene.field, tmp_path / "b", selection=SelectionOptions(strategy="grid", region="background", grid_step=16, background=0),
                   camera=CameraOptions(mode=str(path), occlusion=False), frames=5, fps=10)
    np.testing.assert_allclose(orbit.tracks.xy[0], still.tracks.xy[0], atol=1e-6)  # paths start at the first camera
    assert np.abs(orbit.tracks.xy[-1] - still.tracks.xy[-1]).mean() > 3


@pytest.mark.parametrize("text, words", [("spin: {degrees: 3}", "unknown move 'spin'"), ("orbit: {deg: 3}", "needs a number 'degrees'"), ("orbit: [1", "not valid YAML")])
def test_bad_camera_paths(scene, tmp_path, text, words):
    path = tmp_path / "path.yaml"
    path.write_text(text)
    with pytest.raises(TracefieldError, match=words):
        export(scene.field, tmp_path, camera=CameraOptions(mode=str(path)))


# --------------------------------------------------------------------------- timing and selection


def test_retiming_without_snapping(scene):
    fill = clip_times(Timing(frames=121, fps=24), scene.field)
    np.testing.assert_allclose(fill, np.linspace(0, 1, 121))
    half = clip_times(Timing(frames=81, fps=16, start=0.25, end=0.75), scene.field)
    assert half[0] == 0.25 and half[-1] == 0.75
    real = clip_times(Timing(frames=24, fps=24, speed=2.0), scene.field)  # clip: 4 frame steps at 10 fps = 0.4 s
    np.testing.assert_allclose(real[:5], np.arange(5) / 24 * 2 / 0.4)
    assert real[-1] == 1.0  # holds still after the clip ends


def test_selection_keeps_user_pixels_first_and_caps(scene, tmp_path):
    result = export(scene.field, tmp_path, selection=SelectionOptions(strategy="fps", region="all", pixels=[(5.0, 5.0)], max_tracks=7, background=2))
    assert result.tracks.num_tracks == 7
    np.testing.assert_allclose(result.tracks.xy[0, 0], [5.0, 5.0], atol=1e-4)
    assert result.tracks.camera_tracks.sum() >= 1


# --------------------------------------------------------------------------- pictures and CLI


def test_pictures_draw_what_the_file_holds(scene, tmp_path):
    from tracefield.export.draw import draw_tracks

    result = export(scene.field, tmp_path, "ati", selection=SelectionOptions(strategy="grid", region="all", grid_step=16, background=0),
                    start=0.5, camera=CameraOptions(mode="filmed"))
    left_out = ~result.conditions.visible[0]
    assert result.written.num_tracks == int((~left_out).sum()) and result.conditions.visible[:, left_out].any()  # some left out...
    plain = iio.imread(tmp_path / "clip.png")
    drawn = iio.imread(tmp_path / "clip_tracks.png")
    xy, visible = read_ati(tmp_path / "clip.pth")
    np.testing.assert_array_equal(drawn, draw_tracks(plain, xy.transpose(1, 0, 2) - 0.5, visible.T))  # ...and not drawn
    everything = result.conditions
    assert not np.array_equal(drawn, draw_tracks(plain, everything.xy - 0.5, everything.visible))
    video = iio.mimread(tmp_path / "clip_tracks.mp4")
    assert len(video) == 121


def test_cli_export_end_to_end(scene, tmp_path, capsys):
    scene.field.save(tmp_path / "scene" / "field.safetensors")
    code = main(["export", str(tmp_path / "scene"), "--format", "worldcanvas", "-o", str(tmp_path / "out"),
                 "--caption", "1=a card slides", "--min-object-area", "20", "-q"])
    assert code == 0
    assert {"scene.json", "scene.png", "scene_tracks.png", "scene_tracks.mp4"} <= {p.name for p in (tmp_path / "out").iterdir()}


# --------------------------------------------------------------------------- bad input


def test_no_foreground(scene, tmp_path):
    field = make_scene().field
    field.fg_masks[:] = False
    with pytest.raises(TracefieldError, match="has no foreground"):
        export(field, tmp_path, selection=SelectionOptions())


def test_all_tracks_occluded_or_unconfident(tmp_path):
    field = make_scene().field
    field.ctrl_conf[0, :, :, :] = 1.0  # the seed frame's curves fall below the confidence percentile everywhere
    field.ctrl_conf[1:] = 50.0
    with pytest.raises(TracefieldError, match="hidden .occluded or low confidence."):  # (not starting on the seed frame: picks are seen there)
        export(field, tmp_path, selection=SelectionOptions(strategy="grid", region="all", conf_percentile=0.0, background=0),
               camera=CameraOptions(conf_percentile=50.0), start=0.25)


def test_nan_trajectories(tmp_path):
    field = make_scene().field
    field.ctrl_pts[0, :, :, :] = float("nan")
    with pytest.raises(TracefieldError, match="NaN"):
        export(field, tmp_path, selection=SelectionOptions(strategy="pixels", pixels=[(10.0, 10.0)], background=0))


def test_tracks_leaving_the_image(tmp_path):
    field = make_scene().field
    field.ctrl_pts[:, 1:, ..., 0] += 50.0  # every curve starts where its pixel is, then leaves far to the right
    with pytest.raises(TracefieldError, match="outside the 128x72 image at every output frame"):
        export(field, tmp_path, frames=5, fps=10, start=0.5, end=1.0, camera=CameraOptions(occlusion=False))


def test_zero_tracks_and_unknown_format(scene, tmp_path, capsys):
    with pytest.raises(TracefieldError, match="at least one track"):
        export(scene.field, tmp_path, selection=SelectionOptions(max_tracks=0))
    with pytest.raises(TracefieldError, match="unknown"):
        export(scene.field, tmp_path, "mp4")
    scene.field.save(tmp_path / "s" / "field.safetensors")
    with pytest.raises(SystemExit) as info:
        main(["export", str(tmp_path / "s"), "--format", "sora"])
    assert info.value.code == 2 and "invalid choice: 'sora'" in capsys.readouterr().err


def test_tracks_picked_on_the_last_frame(scene, tmp_path):
    last = scene.field.num_frames - 1
    with pytest.raises(TracefieldError, match=f"frame {last} is at clip time 1.000, the end of the exported span.*nothing moves after it"):
        export(scene.field, tmp_path, selection=SelectionOptions(strategy="grid", region="all", frame=last, background=0))
    assert not list(tmp_path.iterdir())  # nothing written
