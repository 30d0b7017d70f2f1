"""The viewer's scene building, trajectories and picking, against the exact synthetic scene."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scene import CARD_END, CARD_START, FOCAL, PLANE, background_velocity, make_scene
from tracefield import curves
from tracefield.errors import TracefieldError
from viewer.layers.panels import frame_with_mask
from viewer.picking import FrustumGeometry, motion_clusters, ray_to_pixel
from viewer.scene import Scene
from viewer.state import Pick
from viewer.playback import step_frame
from viewer.trajectories import build_trajectories, foreground_seeds, on_time, parse_frames, time_grid, trail_style
from viewer.updates import LatestWork


@pytest.fixture(scope="module")
def synthetic():
    return make_scene(frames=5, num_ctrl=7)


def test_time_mean_weights_integrate_the_basis():
    for k in (4, 7, 10, 12):
        grid = torch.linspace(0, 1, 20001)
        numeric = curves.basis(grid, k).double().mean(dim=0)
        assert torch.allclose(curves.time_mean_weights(k).double(), numeric, atol=1e-4)


def test_background_is_the_static_scene_at_its_time_mean(synthetic):
    field = synthetic.field
    scene = Scene.build(field)
    static = (~field.masks).sum().item()
    assert len(scene.background.points) == static  # under budget: every static pixel of every frame
    # static points sit on the plane Z = 4 + 0.25 X (their curves are constant)
    pts = scene.background.points.astype(np.float64)
    assert np.abs(pts[:, 2] - (PLANE[0] + PLANE[1] * pts[:, 0])).max() < 5e-3


def test_background_is_the_time_mean_of_curves_that_move():
    """Background curves that slide along the plane: each static point must sit at its curve's mean over the clip,
    which for a linear motion is its position at t = 0.5 (the first control point, or the frame's own time, is off
    by up to half the drift)."""
    drift = 0.4
    field = make_scene(frames=5, num_ctrl=7, background_drift=drift).field
    scene = Scene.build(field)
    own = field.points_at_own_time().numpy().astype(np.float64)
    shift = background_velocity(drift)
    expected = np.concatenate([own[i][~field.masks[i].numpy()] + shift * (0.5 - field.times[i].item()) for i in range(field.num_frames)])
    assert len(scene.background.points) == len(expected)
    assert np.abs(scene.background.points.astype(np.float64) - expected).max() < 5e-3  # float16 storage: 2e-3


def test_background_of_moving_static_curves_is_their_mean_over_the_clip():
    """Static pixels whose curves drift (camera jitter, depth noise): each is shown at its mean over time,
    checked against the curve sampled densely, not against the closed form nor its first control point."""
    field = make_scene(frames=3, num_ctrl=6).field
    drift = torch.tensor([0.3, -0.2, 0.5]) * torch.linspace(-1.0, 1.0, 6)[:, None] ** 2  # [K, 3], a bend over time
    static = ~field.masks  # [N, H, W]
    field.ctrl_pts += drift[None, :, None, None, :] * static[:, None, :, :, None]
    scene = Scene.build(field)
    grid = torch.linspace(0, 1, 4001)
    expected = []
    for frame in range(field.num_frames):
        pixels = static[frame].reshape(-1).nonzero()[:, 0]
        ctrl = field.ctrl_pts[frame].reshape(6, -1, 3)[:, pixels].permute(1, 0, 2)  # [n, K, 3]
        expected.append(curves.evaluate(ctrl, grid, dim=1).mean(dim=1).numpy())
    expected = np.concatenate(expected)
    assert len(scene.background.points) == len(expected)
    assert np.abs(scene.background.points.astype(np.float64) - expected).max() < 5e-3
    first = np.concatenate([field.ctrl_pts[f, 0][static[f]].numpy() for f in range(field.num_frames)])
    assert np.abs(expected - first).max() > 0.1  # the first control point is elsewhere


def test_time_grid_goes_through_the_frame_times():
    assert np.allclose(time_grid(0.25), [0, 0.25, 0.5, 0.75, 1.0])
    frames = np.linspace(0, 1, 30)
    grid = time_grid(0.025, frames)
    assert all(on_time(grid, t) is not None for t in frames) and len(grid) == 30  # gaps of 0.034 stay single steps
    assert np.allclose(time_grid(0.125, np.linspace(0, 1, 5)), np.arange(9) / 8)
    long = time_grid(0.025, np.linspace(0, 1, 200))
    assert 40 <= len(long) <= 60 and np.diff(long).min() > 0.018 and long[-1] == 1.0  # does not grow with the clip
    assert on_time(grid, frames[7] + 4e-4) is not None and on_time(grid, frames[7] + 0.01) is None


def test_frame_steps_land_on_frame_times():
    times = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    assert step_frame(times, 0.3, 1) == 0.5 and step_frame(times, 0.3, -1) == 0.25
    assert step_frame(times, 0.5, 1) == 0.75 and step_frame(times, 0.5, -1) == 0.25
    assert step_frame(times, 1.0, 1) is None and step_frame(times, 0.0, -1) is None


def test_background_budget_interleaves_pixels_across_frames(synthetic):
    field = synthetic.field
    static = int((~field.masks).sum())
    scene = Scene.build(field, background_budget=-(-static // 3))  # one pixel in three
    full = Scene.build(field)
    assert len(scene.background.points) <= -(-static // 3) + field.num_frames
    per_frame = np.cumsum([0] + (~field.masks).reshape(field.num_frames, -1).sum(dim=1).tolist())
    kept = 0
    for frame in range(field.num_frames):  # frame n keeps pixels n, n + 3, ... of its static pixels
        expected = full.background.points[per_frame[frame] : per_frame[frame + 1]][frame % 3 :: 3]
        assert np.array_equal(scene.background.points[kept : kept + len(expected)], expected)
        kept += len(expected)
    assert kept == len(scene.background.points)


def test_foreground_follows_the_curves_at_slider_time(synthetic):
    field = synthetic.field
    scene = Scene.build(field)
    velocity = np.array([*(CARD_END - CARD_START), 0.0])
    for t in (0.0, 0.37, 0.5, 1.0):
        frame = scene.nearest_frame(t)
        shown = scene.foreground_at(t, drop_percent=0)
        assert shown.frame == frame == int(np.argmin(np.abs(field.times.numpy() - t)))
        flat = field.masks[frame].reshape(-1).nonzero()[:, 0]
        seen = field.points_at_own_time([frame])[0].reshape(-1, 3)[flat].numpy()
        truth = seen + velocity * (t - field.times[frame].item())
        assert len(shown) == len(flat)
        assert np.abs(shown.points.astype(np.float64) - truth).max() < 5e-3


def test_confidence_filter_drops_the_requested_share():
    field = make_scene(frames=3, num_ctrl=4).field
    field.ctrl_conf = torch.rand(field.ctrl_conf.shape, generator=torch.Generator().manual_seed(0)) + 1
    scene = Scene.build(field)
    total = len(scene.background.points)
    assert len(scene.background_kept(0)) == total
    assert abs(len(scene.background_kept(30)) - 0.7 * total) <= 0.01 * total
    shown = scene.foreground_at(0.5, 50)
    assert abs(len(shown) - 0.5 * len(scene.foreground[shown.frame].pixels)) <= 2


def test_confidence_filter_keeps_the_most_confident_points():
    """Confidence rising with the static points' world x: dropping the lowest 30% keeps exactly the points right of the 30th percentile."""
    field = make_scene(frames=3, num_ctrl=4).field
    x = field.points_at_own_time()[..., 0]  # [N, H, W]; static points keep their x over time
    field.ctrl_conf = (1 + x - x.min())[:, None].expand_as(field.ctrl_conf).clone()
    scene = Scene.build(field)
    every_x = scene.background.points[:, 0].astype(np.float64)
    kept_x = scene.background_kept(30).points[:, 0].astype(np.float64)
    cut = np.percentile(every_x, 30)
    assert abs(len(kept_x) - 0.7 * len(every_x)) <= 0.01 * len(every_x)
    assert kept_x.min() >= cut - 1e-2  # float16 positions


def test_non_finite_points_are_dropped_and_conf_zeroed():
    field = make_scene(frames=3, num_ctrl=4).field
    fg = field.masks[1].reshape(-1).nonzero()[:, 0]
    bad_fg, bad_bg = fg[:5], (~field.masks[1]).reshape(-1).nonzero()[:7, 0]
    ctrl = field.ctrl_pts.reshape(3, 4, -1, 3)
    ctrl[1, 2, bad_fg] = float("nan")
    ctrl[1, 0, bad_bg] = float("inf")
    field.ctrl_conf.reshape(3, 4, -1)[1, :, fg[5:8]] = float("nan")
    scene = Scene.build(field)
    assert len(scene.foreground[1].pixels) == len(fg) - 5
    assert torch.isfinite(scene.foreground[1].conf).all()
    assert np.isfinite(scene.background.points.astype(np.float32)).all()
    assert len(scene.background.points) == int((~field.masks).sum()) - 7


def test_empty_foreground_and_single_frame():
    field = make_scene(frames=2, num_ctrl=4).field
    field.fg_masks[:] = False
    scene = Scene.build(field)
    assert len(scene.foreground_at(0.3, 10)) == 0
    assert len(build_trajectories(scene, foreground_seeds(scene, [0, 1], 100), time_grid(0.1))) == 0
    single = make_scene(frames=2, num_ctrl=4).field
    for name in ("ctrl_pts", "ctrl_conf", "images", "fg_masks"):
        setattr(single, name, getattr(single, name)[:1])
    single.times, single.time_steps = torch.zeros(1), torch.zeros(1)
    one = Scene.build(single)
    assert one.nearest_frame(0.9) == 0 and len(one.foreground_at(0.9, 0)) > 0


def test_scale_follows_the_scene(synthetic):
    field = synthetic.field
    scale = Scene.build(field).scale
    assert scale.depth == pytest.approx(PLANE[0], rel=0.15)
    assert scale.footprint == pytest.approx(scale.depth / FOCAL, rel=0.2)  # one pixel at the median depth
    field.ctrl_pts = field.ctrl_pts * 10
    bigger = Scene.build(field).scale
    assert bigger.footprint == pytest.approx(10 * scale.footprint, rel=1e-3)
    assert bigger.depth == pytest.approx(10 * scale.depth, rel=1e-3)


def test_trajectories_sample_the_curves_and_colour_them(synthetic):
    field = synthetic.field
    scene = Scene.build(field)
    times = time_grid(0.25)
    assert np.allclose(times, [0, 0.25, 0.5, 0.75, 1.0])
    seeds = foreground_seeds(scene, [0, 4], per_frame=20)
    assert all(len(p) == 20 for _, p in seeds)
    traj = build_trajectories(scene, seeds, times, color_by="time", cmap="viridis")
    assert traj.samples.shape == (40, 5, 3)
    expected = curves.evaluate(traj.ctrl, torch.from_numpy(times).float(), dim=1).numpy()
    assert np.allclose(traj.samples, expected, atol=1e-5)
    assert np.array_equal(traj.colors[0, 0], traj.colors[1, 0]) and not np.array_equal(traj.colors[0, 0], traj.colors[0, -1])
    head, _ = traj.head_segments(0.6)
    assert np.allclose(head[:, 0], traj.samples[:, 2]) and np.allclose(head[:, 1], curves.evaluate(traj.ctrl, torch.tensor([0.6]), dim=1)[:, 0].numpy(), atol=1e-5)
    speed = build_trajectories(scene, seeds, times, color_by="speed")
    assert speed.legend is not None and speed.legend.vmax > speed.legend.vmin
    image = build_trajectories(scene, seeds, times, color_by="image")
    frame0 = field.images[0].reshape(-1, 3).numpy()[seeds[0][1]]
    assert np.array_equal(image.colors[:20, 3], frame0)


def test_speed_colours_are_the_curves_speed():
    """The card moves in a straight line at constant speed: colouring by speed must span exactly that speed."""
    scene = Scene.build(make_scene(frames=5, num_ctrl=7).field)
    speed = float(np.linalg.norm(CARD_END - CARD_START))  # world units per clip
    legend = build_trajectories(scene, foreground_seeds(scene, [0, 2, 4], 30), time_grid(0.1), color_by="speed").legend
    assert legend.vmin == pytest.approx(speed, rel=1e-2) and legend.vmax == pytest.approx(speed, rel=1e-2)


def test_trails_grow_to_the_current_time_and_thin_with_age():
    times = time_grid(0.25)
    shown, thickness = trail_style(times, 0.6, trail=1.0, width=2.0)
    assert shown.tolist() == [True, True, False, False]
    assert thickness[1] > thickness[0] and thickness[1] <= 2.0
    shown, _ = trail_style(times, 1.0, trail=0.3, width=2.0)
    assert shown.tolist() == [False, False, True, True]


def test_parse_frames():
    assert parse_frames("0,mid,last", 30) == [0, 15, 29]
    assert parse_frames("first, -1, 3-5", 10) == [0, 3, 4, 5, 9]
    assert parse_frames("none", 10) == [] and parse_frames(" None ", 10) == []
    assert parse_frames("0-29", 30) == list(range(30))
    for bad, why in (("40", "outside 0..29"), ("x", "not a frame"), ("0,mid,lots", "not a frame"), ("5-2", "runs backwards"),
                     ("", "names no frame"), (",,,", "names no frame"), ("0-30000000", "ends after the last frame, 29"),
                     ("-31", "outside"), ("9" * 300, "longer than 200")):
        with pytest.raises(ValueError, match=why):
            parse_frames(bad, 30)


def test_a_click_on_a_frustum_image_gives_its_pixel():
    yaw = np.radians(30)
    rotation = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    geometry = FrustumGeometry(rotation, np.array([0.5, -0.2, 1.0]), fov=0.8, aspect=16 / 9, scale=0.3)
    half_x, half_y, depth = geometry.image_half_extent()
    height, width = 90, 160
    for x, y in ((0.0, 0.0), (80.0, 45.0), (159.0, 10.0)):
        local = np.array([((x + 0.5) / width * 2 - 1) * half_x, ((y + 0.5) / height * 2 - 1) * half_y, depth])
        target = rotation @ local + geometry.centre
        origin = geometry.centre + rotation @ np.array([0.1, -0.3, -2.0])
        pixel = ray_to_pixel(geometry, origin, target - origin, (height, width))
        assert pixel == pytest.approx((x, y), abs=1e-6)
    assert ray_to_pixel(geometry, geometry.centre, rotation @ np.array([5.0, 0, 1]), (height, width)) is None  # misses the image
    assert ray_to_pixel(geometry, geometry.centre, rotation @ np.array([0, 0, -1.0]), (height, width)) is None  # points away


def test_motion_clusters_separate_things_that_move_differently():
    field = make_scene(frames=3, num_ctrl=4).field
    mask = field.fg_masks[0]
    flat = mask.reshape(-1).nonzero()[:, 0]
    left = flat[: len(flat) // 2]
    ctrl = field.ctrl_pts[0].reshape(4, -1, 3)
    ctrl[:, left] += torch.tensor([0.0, 0.5, 0.0]) * torch.linspace(0, 1, 4)[:, None, None]  # the left half also rises
    labels = motion_clusters(Scene.build(field), 0, count=2).reshape(-1)
    assert set(labels[left.numpy()]) != set(labels[flat[len(flat) // 2 :].numpy()])
    assert len(set(labels[left.numpy()])) == 1 and (labels[~mask.reshape(-1).numpy()] == 0).all()


def test_latest_work_keeps_only_the_newest_request_per_key():
    work = LatestWork()
    ran: list[int] = []
    gate = __import__("threading").Event()
    work.submit("block", gate.wait)
    for value in range(50):
        work.submit("time", lambda v=value: ran.append(v))
    gate.set()
    assert work.wait_idle(5)
    assert ran == [49]
    failures = []
    failing = LatestWork(on_error=lambda key, exc: failures.append((key, str(exc))))
    failing.submit("boom", lambda: 1 / 0)
    failing.submit("after", lambda: ran.append(-1))
    assert failing.wait_idle(5)
    assert failures == [("boom", "division by zero")] and ran[-1] == -1  # the worker survived
    work.stop()
    failing.stop()


def test_pixel_stride_keeps_every_ds_th_pixel(synthetic):
    field = synthetic.field
    full, half = Scene.build(field), Scene.build(field, ds=2)
    height, width = field.hw
    strided = field.masks[0, ::2, ::2]
    assert len(half.foreground[0].pixels) == int(strided.sum())
    ys, xs = np.divmod(half.foreground[0].pixels, width)
    assert (ys % 2 == 0).all() and (xs % 2 == 0).all()
    assert len(half.background.points) == pytest.approx(len(full.background.points) / 4, rel=0.05)
    with pytest.raises(TracefieldError):
        Scene.build(field, ds=0)


def test_frame_panel_tints_the_mask_and_rings_picks(synthetic):
    field = synthetic.field
    scene = Scene.build(field)
    plain = field.images[2].numpy().astype(int)
    mask = field.masks[2].numpy()
    ys, xs = np.nonzero(~mask)
    flat = int(ys[len(ys) // 2] * field.hw[1] + xs[len(xs) // 2])
    panel = frame_with_mask(scene, 2, [Pick(2, np.array([flat]), "a pixel"), Pick(0, np.array([0]), "another frame")]).astype(int)
    assert (np.abs(panel[mask] - plain[mask]).sum(axis=-1) > 20).all()  # tinted
    untouched = ~mask
    untouched[max(0, ys[len(ys) // 2] - 6) : ys[len(ys) // 2] + 7, max(0, xs[len(xs) // 2] - 6) : xs[len(xs) // 2] + 7] = False
    assert np.array_equal(panel[untouched], plain[untouched])  # background kept, except the ring around the pick
    assert not np.array_equal(panel[~mask], plain[~mask])
    assert np.array_equal(panel[0, 0], plain[0, 0])  # the other frame's pick is not drawn here


def test_curves_of_a_frame_spread_over_its_whole_moving_region(synthetic):
    """A few curves per frame must cover the card from its top row to its bottom row (evenly spread over the
    moving pixels in raster order), not bunch up in its first rows."""
    field = synthetic.field
    scene = Scene.build(field)
    width = field.hw[1]
    rows = np.nonzero(field.masks[2].numpy().any(axis=1))[0]  # the card's rows on frame 2, from the scene itself
    (_, seeds), = foreground_seeds(scene, [2], per_frame=10)
    seed_rows = seeds // width
    assert len(seeds) == 10 and field.masks[2].reshape(-1)[torch.from_numpy(seeds)].all()
    assert seed_rows.min() == rows.min() and seed_rows.max() == rows.max()
    gaps = np.diff(seed_rows)
    assert gaps.max() <= 2 * (rows.max() - rows.min()) / 9 + 1  # even steps down the card


def test_speed_colours_run_from_the_slowest_to_the_fastest_curve():
    """Half the card moves twice as fast: coloured by speed, the slow curves take the colormap's first colour and
    the fast ones its last (matplotlib's own colours), and the colour bar spans the two speeds."""
    import matplotlib

    field = make_scene(frames=3, num_ctrl=4).field
    flat = field.fg_masks[0].reshape(-1).nonzero()[:, 0]
    fast = flat[: len(flat) // 2]
    ctrl = field.ctrl_pts[0].reshape(4, -1, 3)
    velocity = torch.tensor([*(CARD_END - CARD_START), 0.0], dtype=torch.float32)
    ctrl[:, fast] += velocity * (torch.linspace(0, 1, 4)[:, None, None] - 0.0)  # speed doubles on these pixels
    scene = Scene.build(field)
    seeds = [(0, flat.numpy())]
    traj = build_trajectories(scene, seeds, time_grid(0.25), color_by="speed", cmap="viridis")
    speed = float(np.linalg.norm(CARD_END - CARD_START))
    assert traj.legend.vmin == pytest.approx(speed, rel=1e-2) and traj.legend.vmax == pytest.approx(2 * speed, rel=1e-2)
    ends = (np.asarray(matplotlib.colormaps["viridis"]([0.0, 1.0]))[:, :3] * 255).round()
    is_fast = np.isin(traj.pixels, fast.numpy())
    assert np.abs(traj.colors[~is_fast].astype(int) - ends[0]).max() <= 2
    assert np.abs(traj.colors[is_fast].astype(int) - ends[1]).max() <= 2


def _card_in_three_motions():
    """The card of frame 0 split in raster order into thirds: one moves as the scene says, one also rises, one also
    recedes; the last third is the smallest (a fifth of the card), so the groups differ in size."""
    field = make_scene(frames=3, num_ctrl=4).field
    flat = field.fg_masks[0].reshape(-1).nonzero()[:, 0]
    cut1, cut2 = len(flat) * 2 // 5, len(flat) * 4 // 5
    groups = [flat[:cut1], flat[cut1:cut2], flat[cut2:]]
    ctrl = field.ctrl_pts[0].reshape(4, -1, 3)
    ramp = torch.linspace(0, 1, 4)[:, None, None]
    ctrl[:, groups[1]] += torch.tensor([0.0, -0.6, 0.0]) * ramp
    ctrl[:, groups[2]] += torch.tensor([0.0, 0.0, 0.8]) * ramp
    return field, groups


def test_motion_clusters_are_numbered_by_decreasing_size():
    """Cluster 1 is the biggest group that moves together (the objects list reads like the mask regions' one)."""
    field, groups = _card_in_three_motions()
    labels = motion_clusters(Scene.build(field), 0, count=2).reshape(-1)
    small = groups[2].numpy()
    big = np.concatenate([groups[0].numpy(), groups[1].numpy()])  # 4/5 of the card; k = 2 splits off the receding fifth
    assert set(labels[small]) == {2} and set(labels[big]) == {1}


def test_a_new_cluster_count_regroups_the_objects():
    """Listing objects, then asking for more motion clusters on the same frame, must give the new grouping,
    not the labels kept from the first listing."""
    from viewer.picking import Picker
    from viewer.state import ViewerState

    field, groups = _card_in_three_motions()
    state = ViewerState(object_source="motion clusters", cluster_count=2)
    picker = Picker(Scene.build(field), state)
    assert len(picker.objects(0)) == 2
    state.cluster_count = 3
    assert len(picker.objects(0)) == 3
    labels = picker.labels(0).reshape(-1)
    assert all(len(set(labels[g.numpy()])) == 1 for g in groups)  # each motion is one object


def test_frames_a_little_closer_than_a_step_are_all_on_the_time_grid():
    """Uneven frame times with a 0.1 grid step: the first gap, 0.08, is 0.8 of a step, more than the anchors' 0.75,
    so 0.08 is a grid time too (playback lands on the grid and draws no head pieces); 0 to 0.08 is one step."""
    frames = np.array([0.0, 0.08, 0.3, 0.55, 1.0])
    grid = time_grid(0.1, frames)
    assert all(on_time(grid, t) is not None for t in frames)
    assert np.allclose(grid[:2], [0.0, 0.08])


def test_image_colours_come_from_each_curves_own_frame(synthetic):
    """Coloured by image, a curve takes its pixel's colour on the frame it starts from: pixels that are on the card in
    frame 3 and off it in frame 0 are painted card red (240) there, background red (40) on frame 0."""
    field = synthetic.field
    scene = Scene.build(field)
    flat = np.flatnonzero((field.masks[3] & ~field.masks[0]).reshape(-1).numpy())
    assert len(flat) > 10
    traj = build_trajectories(scene, [(0, flat[:5]), (3, flat)], time_grid(0.25), color_by="image")
    assert (traj.colors[:5, :, 0] == 40).all()
    assert (traj.colors[5:, :, 0] == 240).all() and traj.legend is None
