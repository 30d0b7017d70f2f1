"""Synthetic scenes: ground truth that agrees with the cameras and the rendering, deterministic by seed."""

from __future__ import annotations

import torch

from tracefield.data.synthetic import CAMERA_MOTIONS, SceneConfig, render_scene

SMALL = SceneConfig(frames=5, height=48, width=80)


def project(points: torch.Tensor, k: torch.Tensor, pose: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cam = points @ pose[:3, :3].T + pose[:3, 3]
    return torch.stack([k[0, 0] * cam[..., 0] / cam[..., 2] + k[0, 2], k[1, 1] * cam[..., 1] / cam[..., 2] + k[1, 2]], -1), cam[..., 2]


def test_static_scene_tracks_are_the_camera_motion_flow():
    """Without objects, tracks stay put, and projecting them is the flow from depth + camera motion."""
    for motion in ("pan", "dolly", "orbit"):
        scene = render_scene(11, SceneConfig(frames=4, height=40, width=64, min_objects=0, max_objects=0), camera_motion=motion)
        tracks = scene.tracks.double()
        assert torch.equal(tracks, tracks[:, :1].expand_as(tracks))
        k, poses = scene.intrinsics.double(), scene.poses.double()
        ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(64.0), indexing="ij")
        depth = scene.depth[0].double()
        back_projected = torch.stack([(xs - k[0, 2]) / k[0, 0] * depth, (ys - k[1, 2]) / k[1, 1] * depth, depth], -1)  # camera 0 = world
        for t in range(4):
            flow_from_depth, _ = project(back_projected, k, poses[t])
            flow_from_tracks, _ = project(tracks[0, t], k, poses[t])
            assert (flow_from_depth - flow_from_tracks).abs().max() < 1e-3, motion


def test_rigid_objects_keep_pairwise_distances():
    scene = render_scene(9, SceneConfig(frames=6, height=48, width=80, nonrigid_probability=0.0))
    for obj in range(1, int(scene.object_ids.max()) + 1):
        points = scene.tracks[0][:, scene.object_ids[0] == obj][:, :60].double()  # [T, P, 3]
        if points.shape[1] < 2:
            continue
        distances = (points[:, :, None] - points[:, None]).norm(dim=-1)
        assert (distances - distances[0]).abs().max() < 1e-4
    assert (scene.tracks[0][:, scene.object_ids[0] > 0].std(dim=0) > 1e-3).any()  # and they do move


def test_nonrigid_objects_deform():
    scene = render_scene(9, SceneConfig(frames=6, height=48, width=80, nonrigid_probability=1.0, min_objects=1, max_objects=1))
    points = scene.tracks[0][:, scene.object_ids[0] == 1][:, :60].double()
    distances = (points[:, :, None] - points[:, None]).norm(dim=-1)
    assert (distances - distances[0]).abs().max() > 1e-2


def test_visibility_matches_the_rendering():
    """A point seen by camera t is what camera t renders at its projection (within a pixel's footprint)."""
    scene = render_scene(3, SMALL)
    for t in range(SMALL.frames):
        uv, _ = project(scene.tracks[0, t].reshape(-1, 3), scene.intrinsics, scene.poses[t])
        seen = scene.visible[0, t].reshape(-1)
        ui, vi = uv[:, 0].round().long().clamp(0, 79), uv[:, 1].round().long().clamp(0, 47)
        rendered = scene.tracks[t, t][vi, ui]
        gap = (rendered - scene.tracks[0, t].reshape(-1, 3)).norm(dim=-1)[seen]
        assert gap.median() < 0.1 and seen[scene.object_ids[0].reshape(-1) == 0].float().mean() > 0.3
    assert scene.visible[0, 0].all()  # every pixel sees itself


def test_deterministic_by_seed():
    a, b, c = render_scene(5, SMALL), render_scene(5, SMALL), render_scene(6, SMALL)
    assert torch.equal(a.images, b.images) and torch.equal(a.tracks, b.tracks) and torch.equal(a.visible, b.visible)
    assert not torch.equal(a.images, c.images)


def test_every_camera_motion_renders():
    for motion in CAMERA_MOTIONS:
        scene = render_scene(2, SceneConfig(frames=3, height=32, width=48), camera_motion=motion)
        assert scene.images.shape == (3, 32, 48, 3) and scene.camera_motion == motion
        assert torch.isfinite(scene.tracks).all()


def test_saved_scene_is_an_infer_input_with_ground_truth(tmp_path):
    from tracefield.data.synthetic import load_ground_truth, save_scene
    from tracefield.io.frames import discover_scenes

    scene = render_scene(4, SMALL)
    save_scene(scene, tmp_path / "clip", SMALL)
    (found,) = discover_scenes([tmp_path / "clip"])
    assert len(found.paths) == SMALL.frames
    tensors, metadata = load_ground_truth(tmp_path / "clip")
    assert int(metadata["seed"]) == 4 and metadata["camera_motion"] == scene.camera_motion
    torch.testing.assert_close(tensors["query_tracks"], scene.tracks[0, :, 2::4, 2::4])
    assert torch.equal(tensors["poses"], scene.poses)


def test_hidden_points_are_behind_what_the_camera_renders():
    """Visible: the camera renders that very point at its pixel. Hidden but inside the image: it renders something nearer."""
    scene = render_scene(3, SMALL)
    hidden_total = 0
    for t in range(SMALL.frames):
        points = scene.tracks[0, t].reshape(-1, 3)
        uv, z = project(points, scene.intrinsics, scene.poses[t])
        ui, vi = uv[:, 0].round().long(), uv[:, 1].round().long()
        inside = (z > 0) & (ui >= 0) & (ui < SMALL.width) & (vi >= 0) & (vi < SMALL.height)
        seen = scene.visible[0, t].reshape(-1)
        assert not (seen & ~inside).any()
        ui, vi = ui.clamp(0, SMALL.width - 1), vi.clamp(0, SMALL.height - 1)
        gap = (scene.tracks[t, t][vi, ui] - points).norm(dim=-1)
        assert torch.quantile(gap[seen], 0.99) < 0.2
        hidden = inside & ~seen
        assert (z[hidden] > scene.depth[t][vi[hidden], ui[hidden]] * 1.01).all()
        hidden_total += int(hidden.sum())
    assert hidden_total > 0  # the clip has occlusions to get wrong
