"""Frame and video input: scene discovery, frame selection and decoding."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Callable

import imageio.v2 as iio
import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

from tracefield.errors import TracefieldError
from tracefield.io import frames
from tracefield.io.frames import (
    DecodedFrames,
    SceneSource,
    check_frame_sizes,
    count_frames,
    discover_scenes,
    read_frames,
    read_whole_video,
    select_frames,
)

H, W = 24, 40


def write_png(path: Path, value: int = 0, size: tuple[int, int] = (W, H), mode: str = "RGB") -> Path:
    """A flat image of ``size`` (W, H) filled with ``value``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value if mode in ("L", "P") else (value,) * len(mode)).save(path)
    return path


def write_frames(folder: Path, count: int, pattern: str = "frame{}.png") -> list[Path]:
    return [write_png(folder / pattern.format(i), value=i % 256) for i in range(count)]


def write_video(path: Path, count: int) -> Path:
    """``count`` flat gray frames 32x48, frame i at gray level 20 * i (mod 256), 10 fps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    video = [np.full((32, 48, 3), (20 * i) % 256, np.uint8) for i in range(count)]
    if path.suffix == ".gif":
        iio.mimwrite(path, video, duration=100)
    else:
        iio.mimwrite(path, video, fps=10)
    return path


def one_line_error(path: Path, call: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    """Run ``call``, require a one-line TracefieldError naming ``path``, return the message."""
    with pytest.raises(TracefieldError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- discovery


def test_folder_of_frames_natural_order_ignores_other_files(tmp_path: Path) -> None:
    folder = tmp_path / "elephant"
    for i in (10, 2, 1, 33):
        write_png(folder / f"frame{i}.png")
    write_png(folder / "frame3.JPG")
    (folder / "notes.txt").write_text("not a frame")
    write_frames(folder / "sub", 2)  # subfolders of a frames folder are ignored
    write_png(folder / "._frame0.png")  # hidden (macOS resource fork)

    [scene] = discover_scenes([folder])

    assert (scene.name, scene.kind) == ("elephant", "frames")
    assert [p.name for p in scene.paths] == ["frame1.png", "frame2.png", "frame3.JPG", "frame10.png", "frame33.png"]
    assert scene.describe() == f"elephant (5 frames in {folder})"
    assert count_frames(scene) == 5


def test_folder_of_scenes_with_video(tmp_path: Path) -> None:
    root = tmp_path / "scenes"
    write_frames(root / "b", 3)
    write_frames(root / "a10", 2)
    write_frames(root / "a9", 2)
    write_video(root / "clip.mp4", 4)
    (root / "README.txt").write_text("ignored")
    (root / "no_images").mkdir()
    (root / "no_images" / "data.csv").write_text("ignored")

    scenes = discover_scenes([root])

    assert [s.name for s in scenes] == ["a9", "a10", "b", "clip"]
    assert [s.kind for s in scenes] == ["frames", "frames", "frames", "video"]
    assert scenes[3].paths == [root / "clip.mp4"]
    assert scenes[3].describe() == f"clip (video {root / 'clip.mp4'})"


def test_image_files_form_one_scene_named_after_their_folder(tmp_path: Path) -> None:
    files = write_frames(tmp_path / "shots", 12, "img_{}.jpeg")

    [scene] = discover_scenes([files[11], files[2], files[0], files[10]])

    assert scene.name == "shots"
    assert [p.name for p in scene.paths] == ["img_0.jpeg", "img_2.jpeg", "img_10.jpeg", "img_11.jpeg"]


def test_mixed_inputs_keep_input_order(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.gif", 3)
    folder = tmp_path / "walk"
    write_frames(folder, 2)
    image = write_png(tmp_path / "loose" / "x1.png")
    image2 = write_png(tmp_path / "loose" / "x2.png")

    scenes = discover_scenes([video, image, folder, image2])

    assert [(s.name, s.kind) for s in scenes] == [("clip", "video"), ("loose", "frames"), ("walk", "frames")]


def test_name_renames_a_single_scene(tmp_path: Path) -> None:
    folder = tmp_path / "take1"
    write_frames(folder, 2)
    assert discover_scenes([str(folder)], name="dog")[0].name == "dog"
    assert discover_scenes(str(folder))[0].name == "take1"  # a lone str is one input
    files = write_frames(tmp_path / "pics", 2)
    assert discover_scenes(files, name="cat")[0].name == "cat"


def test_name_with_several_scenes_is_an_error(tmp_path: Path) -> None:
    write_frames(tmp_path / "root" / "a", 2)
    write_frames(tmp_path / "root" / "b", 2)
    with pytest.raises(TracefieldError, match="--name needs a single scene"):
        discover_scenes([tmp_path / "root"], name="x")


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert "does not exist" in one_line_error(missing, discover_scenes, [missing])


def test_empty_folder(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    message = one_line_error(folder, discover_scenes, [folder])
    assert "empty folder" in message and ".png" in message and ".mp4" in message


def test_folder_with_only_non_image_files(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.txt", "b.csv", "c.json", "d.md", "e.npy"):
        (folder / name).write_text("x")
    message = one_line_error(folder, discover_scenes, [folder])
    assert "a.txt, b.csv, c.json and 2 more" in message
    assert "d.md" not in message
    assert "folder of frames" in message and "scene folders" in message and ".jpg" in message


def test_unsupported_input_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("x")
    message = one_line_error(path, discover_scenes, [path])
    assert ".txt" in message and ".png" in message and ".mp4" in message


def test_duplicate_scene_names(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "walk", tmp_path / "b" / "Walk"
    write_frames(first, 2)
    write_frames(second, 2)
    message = one_line_error(second, discover_scenes, [first, second])
    assert "--name" in message and "rename" in message


def test_single_frame_folder(tmp_path: Path) -> None:
    [frame] = write_frames(tmp_path / "solo", 1)
    message = one_line_error(frame, discover_scenes, [tmp_path / "solo"])
    assert "at least 2 frames" in message and "add frames or pass a video" in message


def test_single_image_file(tmp_path: Path) -> None:
    frame = write_png(tmp_path / "one.png")
    one_line_error(frame, discover_scenes, [frame])


def test_single_frame_video(tmp_path: Path) -> None:
    video = write_video(tmp_path / "still.mp4", 1)
    [scene] = discover_scenes([video])
    assert "add frames or pass a video" in one_line_error(video, count_frames, scene)


@pytest.mark.parametrize("content", ["random", "truncated"])
def test_undecodable_video(tmp_path: Path, content: str) -> None:
    video = tmp_path / "broken.mp4"
    if content == "random":
        video.write_bytes(np.random.default_rng(0).bytes(5000))
    else:
        data = write_video(tmp_path / "good.mp4", 10).read_bytes()
        video.write_bytes(data[: len(data) // 2])
    scene = SceneSource("broken", "video", [video])
    message = one_line_error(video, count_frames, scene)
    assert "cannot decode video" in message and "-c:v libx264" in message
    assert len(message) < 400
    assert "cannot decode video" in one_line_error(video, read_frames, scene, [0, 1], progress=False)


# --------------------------------------------------------------------------- selection


@pytest.mark.parametrize("count", [2, 3, 39, 40])
def test_select_keeps_all_up_to_max(count: int) -> None:
    assert select_frames(count) == list(range(count))


@pytest.mark.parametrize("count", [41, 50, 77, 1000])
def test_select_caps_at_max_including_ends(count: int) -> None:
    picked = select_frames(count)
    assert len(picked) == 40
    assert picked[0] == 0 and picked[-1] == count - 1
    assert all(b > a for a, b in zip(picked, picked[1:]))


def test_select_stride() -> None:
    assert select_frames(10, stride=3) == [0, 3, 6, 9]
    assert select_frames(11, stride=5) == [0, 5, 10]
    picked = select_frames(1000, max_frames=5, stride=2)
    assert picked == [0, 250, 500, 748, 998]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"max_frames": 1}, "--max-frames"), ({"stride": 0}, "--stride"), ({"stride": 10}, "smaller --stride")],
)
def test_select_bad_arguments(kwargs: dict[str, int], needle: str) -> None:
    with pytest.raises(TracefieldError, match=needle) as info:
        select_frames(10, **kwargs)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- decoding


def test_read_frames_from_folder(tmp_path: Path) -> None:
    write_frames(tmp_path / "x", 5)
    [scene] = discover_scenes([tmp_path / "x"])

    decoded = read_frames(scene, [0, 2, 4], progress=False)

    assert isinstance(decoded, DecodedFrames)
    assert decoded.indices == [0, 2, 4]
    assert decoded.names == ["frame0.png", "frame2.png", "frame4.png"]
    assert decoded.fps is None
    for image, value in zip(decoded.images, [0, 2, 4]):
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        assert (image == value).all()


def test_read_frames_converts_rgba_gray_and_palette(tmp_path: Path) -> None:
    folder = tmp_path / "modes"
    write_png(folder / "f0.png", value=10, mode="RGBA")
    write_png(folder / "f1.png", value=77, mode="L")
    Image.new("RGB", (W, H), (200, 100, 50)).convert("P").save(folder / "f2.png")
    [scene] = discover_scenes([folder])

    images = read_frames(scene, [0, 1, 2], progress=False).images

    assert [image.shape for image in images] == [(H, W, 3)] * 3
    assert tuple(images[0][0, 0]) == (10, 10, 10)
    assert tuple(images[1][0, 0]) == (77, 77, 77)
    assert np.abs(images[2][0, 0].astype(int) - (200, 100, 50)).max() < 20


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    folder = tmp_path / "phone"
    folder.mkdir()
    stored = Image.new("RGB", (W, H), (255, 0, 0))
    stored.paste((0, 0, 255), (W // 2, 0, W, H))  # left red, right blue
    exif = stored.getexif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    stored.save(folder / "a.jpg", exif=exif, quality=95)
    write_png(folder / "b.png", size=(H, W))  # already upright at the displayed size
    [scene] = discover_scenes([folder])

    assert check_frame_sizes(scene, [0, 1]) == (W, H)
    image = read_frames(scene, [0, 1], progress=False).images[0]

    assert image.shape == (W, H, 3)
    assert image[2, H // 2, 0] > 200 and image[2, H // 2, 2] < 50  # top is the former left: red
    assert image[-3, H // 2, 2] > 200 and image[-3, H // 2, 0] < 50  # bottom: blue


def test_only_selected_frames_are_decoded(tmp_path: Path) -> None:
    folder = tmp_path / "long"
    folder.mkdir()
    tiny = Image.new("RGB", (4, 4))
    for i in range(1000):
        tiny.save(folder / f"{i:04d}.png")
    (folder / "0001.png").write_text("corrupt, but not selected")
    [scene] = discover_scenes([folder])
    indices = select_frames(count_frames(scene))
    assert 1 not in indices

    decoded = read_frames(scene, indices, progress=False)

    assert len(decoded.images) == 40 and decoded.names[-1] == "0999.png"


def test_progress_bar_default_is_harmless(tmp_path: Path) -> None:
    write_frames(tmp_path / "p", 2)
    [scene] = discover_scenes([tmp_path / "p"])
    assert len(read_frames(scene, [0, 1]).images) == 2


@pytest.mark.parametrize("content", [b"this is text, not a png", "truncated"])
def test_corrupt_image(tmp_path: Path, content: bytes | str) -> None:
    paths = write_frames(tmp_path / "bad", 3)
    if content == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (H, W, 3), np.uint8)).save(paths[1])
        paths[1].write_bytes(paths[1].read_bytes()[:200])
    else:
        paths[1].write_bytes(content)
    [scene] = discover_scenes([tmp_path / "bad"])
    message = one_line_error(paths[1], read_frames, scene, [0, 1, 2], progress=False)
    assert "cannot decode image" in message and "re-export this frame" in message


def test_mixed_frame_sizes_fail_before_decoding(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = write_frames(tmp_path / "mixed", 3)
    write_png(paths[2], size=(W + 2, H))
    [scene] = discover_scenes([tmp_path / "mixed"])
    monkeypatch.setattr(frames, "_decode_image", lambda path: pytest.fail("decoded before the size check"))

    message = one_line_error(paths[2], read_frames, scene, [0, 1, 2], progress=False)

    assert f"frame is {W + 2}x{H} but {paths[0]} is {W}x{H}" in message
    assert "resize them or split the scene" in message
    assert check_frame_sizes(scene, [0, 1]) == (H, W)  # the odd frame is not selected


def test_indices_out_of_range_are_a_value_error(tmp_path: Path) -> None:
    write_frames(tmp_path / "r", 3)
    [scene] = discover_scenes([tmp_path / "r"])
    for bad in ([0, 3], [-1, 1], [1, 1], []):
        with pytest.raises(ValueError):
            read_frames(scene, bad, progress=False)


def test_mp4(tmp_path: Path) -> None:
    [scene] = discover_scenes([write_video(tmp_path / "clip.mp4", 12)])

    assert count_frames(scene) == 12
    assert check_frame_sizes(scene, [0]) == (32, 48)
    decoded = read_frames(scene, [0, 5, 11], progress=False)

    assert decoded.fps == pytest.approx(10.0)
    assert decoded.indices == [0, 5, 11]
    assert decoded.names == ["clip.mp4#0", "clip.mp4#5", "clip.mp4#11"]
    for image, i in zip(decoded.images, [0, 5, 11]):
        assert image.shape == (32, 48, 3) and image.dtype == np.uint8
        assert abs(image.mean() - 20 * i) < 6
    with pytest.raises(ValueError):
        read_frames(scene, [0, 12], progress=False)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_short_video_read_whole_in_one_pass_matches_counting_and_reading(tmp_path: Path, suffix: str, monkeypatch) -> None:
    """The one-pass read of a short video gives what counting, sizing and reading in part give."""
    [scene] = discover_scenes([write_video(tmp_path / f"clip{suffix}", 12)])
    opened = []

    whole = read_whole_video(scene, on_open=lambda: opened.append(True))

    assert opened == [True]
    assert len(whole.images) == count_frames(scene) == 12
    assert whole.images[0].shape[:2] == check_frame_sizes(scene, [0])
    picked = whole.select([0, 5, 11])
    read = read_frames(scene, [0, 5, 11], progress=False)
    assert picked.indices == read.indices and picked.names == read.names and picked.fps == pytest.approx(read.fps)
    for a, b in zip(picked.images, read.images):
        np.testing.assert_array_equal(a, b)
    # Frames past the byte budget: nothing kept, the caller counts and reads in part instead.
    assert read_whole_video(scene, max_bytes=5 * 32 * 48 * 3) is None


def test_short_video_plan_starts_one_decoder(tmp_path: Path, monkeypatch) -> None:
    """Planning a short clip neither counts nor sizes it apart, and tracing decodes nothing more; a long one takes the old way, to the same frames."""
    from tracefield import infer

    [scene] = discover_scenes([write_video(tmp_path / "clip.mp4", 12)])
    options = infer.InferOptions(max_frames=5, progress=False)
    monkeypatch.setattr(infer, "read_whole_video", lambda *a, **k: None)  # as for a long video: count, size, read in part
    long_way = infer.prepare_scene(infer.plan_scene(scene, options), options)
    monkeypatch.setattr(infer, "read_whole_video", frames.read_whole_video)
    for name in ("count_frames", "check_frame_sizes", "read_frames"):
        monkeypatch.setattr(infer, name, lambda *a, _name=name, **k: pytest.fail(f"{_name} on a short clip"))

    plan = infer.plan_scene(scene, options)
    prepared = infer.prepare_scene(plan, options)

    assert plan.indices == [0, 3, 6, 8, 11] and plan.total == 12
    np.testing.assert_array_equal(prepared.frames, long_way.frames)
    np.testing.assert_array_equal(prepared.time_steps, long_way.time_steps)
    assert prepared.info == long_way.info


def test_gif(tmp_path: Path) -> None:
    [scene] = discover_scenes([write_video(tmp_path / "anim.gif", 5)])

    assert count_frames(scene) == 5
    decoded = read_frames(scene, [1, 4], progress=False)

    assert decoded.fps == pytest.approx(10.0)
    assert decoded.names == ["anim.gif#1", "anim.gif#4"]
    for image, i in zip(decoded.images, [1, 4]):
        assert image.shape == (32, 48, 3) and image.dtype == np.uint8
        assert abs(image.mean() - 20 * i) < 3


def test_variable_frame_rate_video_reads_the_counted_frames(tmp_path: Path) -> None:
    """ffmpeg must not resample to a constant rate, or frames would repeat and disagree with the count."""
    video = tmp_path / "vfr.mp4"
    source = ["-f", "lavfi", "-i", "testsrc=size=48x32:rate=10:duration=2"]
    fps_mode = frames.ffmpeg_read_params(imageio_ffmpeg.get_ffmpeg_version())[2]  # -vsync before ffmpeg 5.1 (a system or older bundled one)
    # 10 fps, then 2 fps; no B-frames: with them, ffmpeg 4's mp4 muxer writes an edit list that hides the last two frames
    timing = ["-vf", "setpts='if(lt(N,10),N*0.1,1+(N-10)*0.5)/TB'", fps_mode, "vfr", "-bf", "0"]
    ffmpeg = [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error"]
    subprocess.run([*ffmpeg, *source, *timing, "-pix_fmt", "yuv420p", str(video)], check=True)
    [scene] = discover_scenes([video])

    count = count_frames(scene)
    images = read_frames(scene, list(range(count)), progress=False).images

    # 20 frames over 5.5 s: resampled to a constant 10 fps they would be ~50, repeating. (ffmpeg before
    # 5.1 writes 18 of the 20 with -vsync vfr; what it wrote is what is counted and read.)
    assert 18 <= count <= 20 and len(images) == count
    assert all((a != b).any() for a, b in zip(images, images[1:]))


# --------------------------------------------------------------------------- names and time ranges


def test_videos_sharing_a_name_get_their_own_scenes(tmp_path: Path) -> None:
    """a.mp4, a.gif and a frame folder a/: each its own scene folder, none replacing another."""
    inputs = [write_video(tmp_path / "a.mp4", 3), write_video(tmp_path / "a.gif", 3), tmp_path / "a"]
    write_frames(tmp_path / "a", 2)
    assert [s.name for s in discover_scenes(inputs)] == ["a_mp4", "a_gif", "a"]
    assert [s.name for s in discover_scenes(inputs[:1])] == ["a"]  # alone, a video keeps its plain name


def test_names_still_clashing_are_refused(tmp_path: Path) -> None:
    for name in ("x/clip", "y/clip"):
        write_frames(tmp_path / name, 2)
    with pytest.raises(TracefieldError, match="two scenes are named 'clip'.*rename one"):
        discover_scenes([tmp_path / "x" / "clip", tmp_path / "y" / "clip"])


def test_time_range_picks_the_seconds_asked_for(tmp_path: Path) -> None:
    """30 frames at 10 fps: seconds 1.0 to 2.0 are frames 10..20, both ends included."""
    [video] = discover_scenes([write_video(tmp_path / "clip.mp4", 30)])
    assert frames.time_range(video, 30, 1.0, 2.0) == range(10, 21)
    assert frames.time_range(video, 30, None, 0.5) == range(0, 6)
    assert frames.time_range(video, 30, 2.5, None) == range(25, 30)
    assert frames.time_range(video, 30, None, None) == range(30)
    message = one_line_error(video.paths[0], frames.time_range, video, 30, 2.95, None)
    assert "holds 0 of its 30 frames (3.00 s at 10 fps)" in message and "0-3.00 s" in message


def test_time_range_of_frames_is_refused(tmp_path: Path) -> None:
    write_frames(tmp_path / "walk", 3)
    [scene] = discover_scenes([tmp_path / "walk"])
    assert "no frame rate" in one_line_error(tmp_path / "walk", frames.time_range, scene, 3, 1.0, None)


@pytest.mark.parametrize("version, option", [("4.2.2-static https://johnvansickle.com/ffmpeg/", "-vsync"), ("4.4.2-0ubuntu0.22.04.1", "-vsync"),
                                             ("5.0.1", "-vsync"), ("5.1.2", "-fps_mode"), ("n9.0.2-17-g2a571b6068-20260930", "-fps_mode"),
                                             ("7.1", "-fps_mode"), ("N-112345-gabcdef", "-fps_mode")])
def test_frames_are_read_as_stored_by_old_and_new_ffmpeg(version, option):
    """ffmpeg 5.1 renamed -vsync to -fps_mode and older ones refuse the new name (every video failed with
    'Could not load meta information' under a system ffmpeg 4.x)."""
    assert frames.ffmpeg_read_params(version) == ["-map", "0:v:0", option, "passthrough"]
