"""The toy family (tracefield.data.toy): its ground truth is the motion it draws, checked against the rendered frames."""

from __future__ import annotations

import pytest
import torch

from tracefield.data.synthetic import SceneConfig, render_scene
from tracefield.data.toy import SQUARE_THICKNESS, stage_at

TOY = dict(frames=4, height=64, width=112)


def pixel_of(points: torch.Tensor, k: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    """World points ``[..., 3]`` -> pixel (x, y) in a camera, written out here rather than taken from the renderer."""
    cam = points.double() @ pose[:3, :3].double().T + pose[:3, 3].double()
    k = k.double()
    return torch.stack([k[0, 0] * cam[..., 0] / cam[..., 2] + k[0, 2], k[1, 1] * cam[..., 1] / cam[..., 2] + k[1, 2]], -1)


def silhouette_box(mask: torch.Tensor) -> torch.Tensor:
    """(x0, y0, x1, y1) of the pixels of ``mask`` ``[H, W]``."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return torch.stack([xs.min(), ys.min(), xs.max(), ys.max()]).double()


def miss_in_pixels(scene, t: int, points: torch.Tensor) -> torch.Tensor:
    """How far (in pixel footprints at that depth) what camera t renders at each world point's projection is from it; inf outside the image.

    ``points`` ``[P, 3]`` are positions at time t; about 0.5 where camera t renders that very point.
    """
    uv = pixel_of(points, scene.intrinsics, scene.poses[t])
    x, y = uv[:, 0].round().long(), uv[:, 1].round().long()
    inside = (x >= 0) & (x < TOY["width"]) & (y >= 0) & (y < TOY["height"])
    x, y = x.clamp(0, TOY["width"] - 1), y.clamp(0, TOY["height"] - 1)
    footprint = scene.depth[t, y, x].double() / scene.intrinsics[0, 0].double()  # one pixel, in world units, at that depth
    gap = (scene.tracks[t, t, y, x].double() - points.double()).norm(dim=-1) / footprint
    return torch.where(inside, gap, torch.full_like(gap, torch.inf))


def test_square_moves_its_image_by_focal_times_travel_over_depth_and_the_room_stays():
    for seed in (1, 5):
        scene = render_scene(seed, SceneConfig(**TOY, stage="square"))
        assert scene.camera_motion == "static" and torch.equal(scene.poses, torch.eye(4).expand(4, 4, 4))
        assert int(scene.object_ids.max()) == 1  # one square
        centre = scene.centres[0].double()  # [T, 3]
        torch.testing.assert_close(centre[2] - centre[1], centre[1] - centre[0])  # a straight line at a constant speed
        assert (centre[:, 2] == centre[0, 2]).all()  # parallel to the image plane
        f, front = scene.intrinsics[0, 0].double(), centre[0, 2] - SQUARE_THICKNESS
        shift = f * (centre[:, :2] - centre[0, :2]) / front  # [T, 2] pixels: where the motion says the image goes
        assert shift[-1].norm() > 10  # it does move
        boxes = [silhouette_box(scene.object_ids[t] == 1) for t in range(4)]
        for t in range(4):
            assert boxes[t][0] > 0 and boxes[t][1] > 0 and boxes[t][2] < TOY["width"] - 1 and boxes[t][3] < TOY["height"] - 1, (seed, t)
            torch.testing.assert_close(boxes[t][:2] - boxes[0][:2], shift[t], atol=1.0, rtol=0)  # the rendered square: shifted ...
            torch.testing.assert_close(boxes[t][2:] - boxes[t][:2], boxes[0][2:] - boxes[0][:2], atol=1.0, rtol=0)  # ... not resized
        # the tracked corner: frame 0's top-left square pixel lands where the motion says, on the same point of the square
        y, x = (int(v) for v in boxes[0][[1, 0]])
        assert scene.object_ids[0, y, x] == 1
        corner = scene.tracks[0, :, y, x]  # [T, 3]
        for t in range(4):
            landed = pixel_of(corner[t], scene.intrinsics, scene.poses[t])
            torch.testing.assert_close(landed, torch.tensor([x, y], dtype=torch.float64) + shift[t], atol=1e-3, rtol=0)
            torch.testing.assert_close(landed, boxes[t][:2], atol=1.0, rtol=0)  # the top-left corner of the square frame t renders
        square = scene.object_ids[0] == 1  # every point of the square moves by the centre's displacement
        travel = scene.tracks[0][:, square].double() - scene.tracks[0, 0][square].double()
        torch.testing.assert_close(travel, (centre - centre[0])[:, None].expand_as(travel), atol=1e-5, rtol=0)
        room = scene.object_ids == 0  # the room is static: its points stay put and look the same wherever no square covers them
        assert torch.equal(scene.tracks.permute(0, 2, 3, 1, 4)[room], scene.tracks.permute(0, 2, 3, 1, 4)[room][:, :1].expand(-1, 4, -1))
        both = room[0] & room[3]
        assert torch.equal(scene.images[0][both], scene.images[3][both])


def test_rotate_turns_and_squashes_the_square_at_a_constant_depth():
    scene = render_scene(2, SceneConfig(**TOY, stage="rotate"))
    assert scene.camera_motion == "static"
    square = scene.object_ids[0] == 1
    points = scene.tracks[0][:, square].double()  # [T, P, 3]
    assert (points[..., 2] - points[:1, :, 2]).abs().max() < 1e-6  # turning about the camera axis keeps the depth
    a, b = points[:, 0], points[:, -1]  # two points of the square, far apart
    direction = torch.nn.functional.normalize((b - a)[:, :2], dim=-1)
    assert (direction[1:] * direction[:1]).sum(-1).min() < 0.99  # the segment between them turns
    distances = (points[:, :, None, :2] - points[:, None, :, :2]).norm(dim=-1)
    assert (distances - distances[0]).abs().max() > 0.05  # and stretches: not a rigid motion
    for t in range(4):  # each track lands on the point the frame renders there, wherever the square is seen
        assert (miss_in_pixels(scene, t, points[t]) < 1).float().mean() > 0.9, t


def test_camera_stage_moves_the_room_in_the_image_but_not_in_the_world():
    for seed in (3, 4):
        scene = render_scene(seed, SceneConfig(**TOY, stage="camera"))
        assert scene.camera_motion in ("pan", "dolly", "orbit", "shake") and int(scene.object_ids.max()) == 1
        room = scene.object_ids[0] == 0
        points = scene.tracks[0][:, room].double()  # [T, P, 3]
        assert torch.equal(points, points[:1].expand_as(points))  # static in the world
        ys, xs = torch.nonzero(room, as_tuple=True)
        flow = pixel_of(points[-1], scene.intrinsics, scene.poses[-1]) - torch.stack([xs, ys], -1).double()
        assert flow.norm(dim=-1).median() > 0.5, scene.camera_motion  # but the camera moves it in the image
        seen = scene.visible[0, 3][room]  # onto the room point camera 3 renders there, where it sees it
        assert seen.float().mean() > 0.3 and miss_in_pixels(scene, 3, points[-1][seen]).median() < 1


def test_toy_scenes_are_deterministic_and_differ_by_stage():
    a, b = render_scene(7, SceneConfig(**TOY, stage="square")), render_scene(7, SceneConfig(**TOY, stage="square"))
    assert torch.equal(a.images, b.images) and torch.equal(a.tracks, b.tracks)
    assert not torch.equal(a.images, render_scene(7, SceneConfig(**TOY, stage="rotate")).images)
    with pytest.raises(ValueError, match="squares"):
        render_scene(7, SceneConfig(**TOY, stage="squares"))


def test_stages_by_step():
    assert [stage_at(s, "square,rotate,full", [10, 20]) for s in (0, 9, 10, 19, 20, 10_000)] == ["square"] * 2 + ["rotate"] * 2 + ["full"] * 2
    assert stage_at(123, "camera", []) == "camera"
    for curriculum, steps, message in (("square,rotate", [], "need 1 step"), ("square,spin", [5], "unknown stage 'spin'"), ("square,rotate,full", [20, 10], "increasing")):
        with pytest.raises(ValueError, match=message):
            stage_at(0, curriculum, steps)
