"""Procedural dynamic scenes with exact 4D ground truth, rendered in torch (CPU or GPU).

A scene is a textured room (five planes around the camera) with a few objects inside:
spheres and boxes that move and turn (rigid), and ones whose radii or half-sizes change
over time (non-rigid: squash and stretch). The camera stays still, pans, dollies, orbits
or shakes. Frames are ray cast at pixel centres, so every pixel knows what it hit: a
*material point* m (coordinates in the shape's rest space) whose world position at any
time t is ``R(t) (S(t) * m) + c(t)``. That gives, per pixel of every frame, its exact 3D
position at every frame time in the first camera's frame, and whether each frame's camera
sees it (in front, inside the image, not behind the surface it renders).

``SceneConfig.stage`` picks a stage of the toy family instead (:mod:`tracefield.data.toy`:
one square translating, then turning and squashing, then under a moving camera); the
rendering and ground truth are the same code for every stage.

Everything is a function of one integer seed; no state is shared between scenes.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from tracefield.data import toy
from tracefield.data.motion import CAMERA_MOTIONS, SHAPES, ObjectMotion, sample_cameras, rotation_matrix, uniform
from tracefield.io.atomic import atomic_file

ROOM_PLANES = 5  # back wall, floor, ceiling, left and right walls
VISIBILITY_TOLERANCE = 0.01  # relative depth
EVAL_SEED_BASE = 10_000_000  # evaluation scenes use seeds from here up; training never renders them
QUERY_STRIDE = 4  # TAP-Vid-style queries: a grid of first-frame pixels, this many apart


@dataclass
class SceneConfig:
    frames: int = 16
    height: int = 256
    width: int = 448
    min_objects: int = 2
    max_objects: int = 4
    nonrigid_probability: float = 0.35
    stage: str = "full"  # a stage of the toy family (tracefield.data.toy.STAGES); "full": the scenes above


@dataclass
class Scene:
    """One rendered clip and its ground truth (all tensors on the render device)."""

    images: torch.Tensor  # uint8 [N, H, W, 3]
    tracks: torch.Tensor  # [N, T, H, W, 3]: pixel of frame n, world position at frame time t (T = N)
    visible: Optional[torch.Tensor]  # bool [N, T, H, W]: seen by camera t (None when not asked for)
    depth: torch.Tensor  # [N, H, W] camera-space depth of what each pixel shows
    object_ids: torch.Tensor  # int [N, H, W]: 0 room, 1.. objects
    centres: torch.Tensor  # [O, T, 3]: each object's centre at every frame time (world)
    intrinsics: torch.Tensor  # [3, 3]
    poses: torch.Tensor  # [N, 4, 4] world -> camera; world = the first camera
    times: torch.Tensor  # [N] in [0, 1]
    seed: int
    camera_motion: str

    @property
    def moving(self) -> torch.Tensor:
        """bool [N, H, W]: pixels whose world position changes over the clip."""
        return self.object_ids > 0


# --------------------------------------------------------------------------- sampling


def _sample_objects(g: torch.Generator, config: SceneConfig, times: torch.Tensor, room: torch.Tensor) -> ObjectMotion:
    count = int(torch.randint(config.min_objects, config.max_objects + 1, (1,), generator=g))
    rotations, scales, centres, shapes = [], [], [], []
    for _ in range(count):
        size = uniform(g, 0.35, 0.9, 3) * (1 if torch.rand(1, generator=g) < 0.5 else uniform(g, 0.6, 1.0, 1))
        start = torch.stack([uniform(g, -1.2, 1.2, 1)[0], uniform(g, -0.6, 0.8, 1)[0], uniform(g, 2.6, room[2].item() - 1.5, 1)[0]])
        travel = uniform(g, -1.0, 1.0, 3) * torch.tensor([1.2, 0.5, 1.0], dtype=torch.float64)
        wobble = uniform(g, -0.25, 0.25, 3)
        phase = uniform(g, 0, 2 * math.pi, 1)
        t = times[:, None]
        centre = start + travel * t + wobble * torch.sin(2 * math.pi * t + phase)
        spin = uniform(g, -1.0, 1.0, 3) * uniform(g, 0.0, 2.5, 1)
        tilt = uniform(g, -math.pi, math.pi, 3)
        rotation = rotation_matrix(tilt[None]) @ rotation_matrix(spin[None] * t)  # [T, 3, 3]
        if torch.rand(1, generator=g) < config.nonrigid_probability:
            amount = uniform(g, 0.15, 0.45, 3)
            rate = uniform(g, 0.7, 2.0, 1)
            scale = size * (1 + amount * torch.sin(2 * math.pi * rate * t + uniform(g, 0, 2 * math.pi, 3)))
        else:
            scale = size.expand(len(times), 3)
        rotations.append(rotation)
        scales.append(scale)
        centres.append(centre)
        shapes.append(SHAPES[int(torch.randint(0, 2, (1,), generator=g))])
    palette = torch.rand(count, 2, 3, generator=g, dtype=torch.float64) * 0.8 + 0.1
    frequency = uniform(g, 2.0, 6.0, count)
    n = len(times)
    stack = lambda parts, shape: torch.stack(parts) if parts else torch.zeros(0, n, *shape, dtype=torch.float64)  # noqa: E731
    return ObjectMotion(stack(rotations, (3, 3)), stack(scales, (3,)), stack(centres, (3,)), shapes, palette, frequency)



# --------------------------------------------------------------------------- ray casting


def _hit_shapes(origin: torch.Tensor, direction: torch.Tensor, motion: ObjectMotion) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest object hit per ray of every frame (``origin`` ``[N, 1, 3]``, ``direction`` ``[N, P, 3]``).

    Returns distance ``[N, P]`` (inf: none), object ``[N, P]`` (1..) and material point ``[N, P, 3]``.
    """
    best = torch.full(direction.shape[:2], math.inf, dtype=direction.dtype, device=direction.device)
    which = torch.zeros_like(best, dtype=torch.long)
    material = torch.zeros_like(direction)
    for o, shape in enumerate(motion.shape):
        rotation, scale, centre = (x[o].to(direction) for x in (motion.rotation, motion.scale, motion.centre))  # per frame
        o_rest = ((origin - centre[:, None]) @ rotation) / scale[:, None]  # R^T (x - c) / S
        d_rest = (direction @ rotation) / scale[:, None]
        s = _sphere_distance(o_rest, d_rest) if shape == "sphere" else _box_distance(o_rest, d_rest)
        nearer = s < best
        best = torch.where(nearer, s, best)
        which = torch.where(nearer, torch.full_like(which, o + 1), which)
        material = torch.where(nearer[..., None], o_rest + s.clamp(max=1e6)[..., None] * d_rest, material)
    return best, which, material


def _sphere_distance(o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    a = (d * d).sum(-1)
    b = 2 * (o * d).sum(-1)
    c = (o * o).sum(-1) - 1
    disc = b * b - 4 * a * c
    root = (-b - disc.clamp(min=0).sqrt()) / (2 * a)
    return torch.where((disc > 0) & (root > 1e-6), root, torch.full_like(root, math.inf))


def _box_distance(o: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t1, t2 = (-1 - o) * inv, (1 - o) * inv
    near = torch.minimum(t1, t2).amax(-1)
    far = torch.maximum(t1, t2).amin(-1)
    return torch.where((near < far) & (near > 1e-6), near, torch.full_like(near, math.inf))


def _hit_room(origin: torch.Tensor, direction: torch.Tensor, room: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exit point of each ray from the axis-aligned room (camera inside): distance and plane, ``direction``'s shape less its last axis."""
    bounds = [(2, room[2]), (1, room[1]), (1, -room[1]), (0, -room[0]), (0, room[0])]  # back, floor, ceiling, left, right
    best = torch.full(direction.shape[:-1], math.inf, dtype=direction.dtype, device=direction.device)
    plane = torch.zeros_like(best, dtype=torch.long)
    for index, (axis, value) in enumerate(bounds):
        along = direction[..., axis]
        s = (value - origin[..., axis]) / torch.where(along.abs() < 1e-12, torch.full_like(best, 1e-12), along)
        s = torch.where(s > 1e-6, s, torch.full_like(s, math.inf))
        nearer = s < best
        best = torch.where(nearer, s, best)
        plane = torch.where(nearer, torch.full_like(plane, index), plane)
    return best, plane


# --------------------------------------------------------------------------- textures


def _pattern(coords: torch.Tensor, frequency: torch.Tensor) -> torch.Tensor:
    """A trackable procedural texture in [0, 1]: checker times smooth bands times fine grain."""
    f = frequency[..., None]
    checker = ((torch.floor(coords * f).sum(-1)) % 2)
    bands = 0.5 + 0.5 * torch.sin(coords @ torch.tensor([3.1, 1.7, 2.3], dtype=coords.dtype, device=coords.device) * f[..., 0] * 1.3)
    grain = 0.5 + 0.5 * torch.sin(coords @ torch.tensor([17.3, 11.9, 13.7], dtype=coords.dtype, device=coords.device) * 3.0)
    return 0.45 * checker + 0.35 * bands + 0.2 * grain


def _room_colours(points: torch.Tensor, plane: torch.Tensor, g_palette: torch.Tensor) -> torch.Tensor:
    pattern = _pattern(points * 1.5, torch.full(points.shape[:1], 1.3, dtype=points.dtype, device=points.device))
    low, high = g_palette[plane, 0], g_palette[plane, 1]
    return low + (high - low) * pattern[:, None]


# --------------------------------------------------------------------------- the scene


def render_scene(
    seed: int, config: Optional[SceneConfig] = None, device: str | torch.device = "cpu", camera_motion: Optional[str] = None, visibility: bool = True
) -> Scene:
    """Render scene ``seed``: frames, exact trajectories, visibility, cameras (deterministic).

    ``visibility=False`` skips the visibility test (over half the render time), which
    training does not use.
    """
    config = config or SceneConfig()
    g = torch.Generator().manual_seed(seed)
    n, height, width = config.frames, config.height, config.width
    times = torch.linspace(0, 1, n, dtype=torch.float64)
    room = torch.stack([uniform(g, 3.0, 5.0, 1)[0], uniform(g, 1.5, 2.5, 1)[0], uniform(g, 7.0, 11.0, 1)[0]])
    if config.stage == "full":
        motion = camera_motion or CAMERA_MOTIONS[int(torch.randint(0, len(CAMERA_MOTIONS), (1,), generator=g))]
        objects = _sample_objects(g, config, times, room)
    elif config.stage in toy.STAGES:
        motion = camera_motion or toy.camera_motion(g, config.stage)
        objects = toy.sample_square(g, config.stage, times)
    else:
        raise ValueError(f"SceneConfig.stage={config.stage!r}; use one of {', '.join(toy.STAGES)}")
    focal = width * uniform(g, 0.75, 1.1, 1)[0]
    poses = sample_cameras(g, times, motion, depth=float(room[2]) * 0.5)
    room_palette = torch.rand(ROOM_PLANES, 2, 3, generator=g, dtype=torch.float64) * 0.7 + 0.15
    intrinsics = torch.tensor([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    dev = torch.device(device)
    dtype = torch.float64 if dev.type == "cpu" else torch.float32
    images, depth, ids, material = _render_frames(objects, room.to(dev, dtype), room_palette.to(dev, dtype), intrinsics.to(dev, dtype), poses.to(dev, dtype), (height, width))
    tracks = _trajectories(objects, ids, material, dev, dtype)
    visible = seen_by_cameras(tracks.movedim(1, -2), depth, intrinsics.to(dev, dtype), poses.to(dev, dtype)).movedim(-1, 1) if visibility else None
    return Scene(
        images=images, tracks=tracks.float(), visible=visible, depth=depth.float(), object_ids=ids, centres=objects.centre.float().to(dev),
        intrinsics=intrinsics.float().to(dev), poses=poses.float().to(dev), times=times.float().to(dev), seed=seed, camera_motion=motion,
    )


def _render_frames(motion: ObjectMotion, room: torch.Tensor, room_palette: torch.Tensor, intrinsics: torch.Tensor, poses: torch.Tensor, hw: tuple[int, int]):
    """Ray cast every frame at once: images ``[N, H, W, 3]``, depth, object ids and material points."""
    height, width = hw
    n = poses.shape[0]
    dtype, device = room.dtype, room.device
    ys, xs = torch.meshgrid(torch.arange(height, dtype=dtype, device=device), torch.arange(width, dtype=dtype, device=device), indexing="ij")
    rays_cam = torch.stack([(xs - intrinsics[0, 2]) / intrinsics[0, 0], (ys - intrinsics[1, 2]) / intrinsics[1, 1], torch.ones_like(xs)], -1).reshape(-1, 3)
    rotation, translation = poses[:, :3, :3], poses[:, :3, 3]
    origin = -(rotation.transpose(1, 2) @ translation[..., None]).transpose(1, 2)  # [N, 1, 3] camera centres
    direction = rays_cam @ rotation  # [N, P, 3]: R^T d
    s_room, plane = _hit_room(origin, direction, room)
    s_obj, which, material_obj = _hit_shapes(origin, direction, motion)
    on_object = s_obj < s_room
    s = torch.where(on_object, s_obj, s_room)
    world = origin + s[..., None] * direction
    ids = torch.where(on_object, which, torch.zeros_like(which))
    material = torch.where(on_object[..., None], material_obj, world)  # the room is static: material = world point
    colour = _room_colours(world.reshape(-1, 3), plane.reshape(-1), room_palette)
    flat_ids, flat_material, flat_on = ids.reshape(-1), material.reshape(-1, 3), on_object.reshape(-1)
    if flat_on.any():
        o = flat_ids[flat_on] - 1
        palette = motion.palette.to(device, dtype)[o]
        pattern = _pattern(flat_material[flat_on], motion.frequency.to(device, dtype)[o])
        shade = 0.75 + 0.25 * torch.nn.functional.normalize(flat_material[flat_on], dim=-1)[:, 1].neg()  # lit from above
        colour[flat_on] = (palette[:, 0] + (palette[:, 1] - palette[:, 0]) * pattern[:, None]) * shade[:, None]
    depth = s  # camera rays have z = 1, so the ray parameter is the hit's camera-space depth
    images = (colour.clamp(0, 1) * 255).round().to(torch.uint8).reshape(n, height, width, 3)
    return images, depth.reshape(n, height, width), ids.reshape(n, height, width), material.reshape(n, height, width, 3)


def _trajectories(motion: ObjectMotion, ids: torch.Tensor, material: torch.Tensor, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """World position of every pixel's material point at every frame time: ``[N, T, H, W, 3]``.

    The room (id 0) is static, so its points stay put; each object moves its material
    points by X(t) = R(t) (S(t) * m) + c(t).
    """
    n, height, width = ids.shape
    points = material[:, None].expand(n, n, height, width, 3).clone()
    for o in range(len(motion.shape)):
        frame, y, x = torch.nonzero(ids == o + 1, as_tuple=True)
        if not len(frame):
            continue
        rotation, scale, centre = (v[o].to(device, dtype) for v in (motion.rotation, motion.scale, motion.centre))
        scaled = scale[None] * material[frame, y, x][:, None, :]  # [P, T, 3]
        points[frame, :, y, x] = torch.einsum("tij,ptj->pti", rotation, scaled) + centre[None]
    return points


def project_to_cameras(points: torch.Tensor, intrinsics: torch.Tensor, poses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """World points ``[..., T, 3]`` (positions at time t) into camera t: pixel ``u``, ``v`` and depth ``z``, each ``[..., T]``."""
    cam = torch.einsum("tij,...tj->...ti", poses[:, :3, :3], points) + poses[:, :3, 3]
    z = cam[..., 2]
    u = intrinsics[0, 0] * cam[..., 0] / z.clamp(min=1e-6) + intrinsics[0, 2]
    v = intrinsics[1, 1] * cam[..., 1] / z.clamp(min=1e-6) + intrinsics[1, 2]
    return u, v, z


def seen_by_cameras(
    points: torch.Tensor, depth: torch.Tensor, intrinsics: torch.Tensor, poses: torch.Tensor, tolerance: float = VISIBILITY_TOLERANCE
) -> torch.Tensor:
    """Is each world point ``[..., T, 3]`` (its position at time t) seen by camera t, whose depth map is ``depth[t]``?

    Seen: in front of the camera, inside the image (nearest pixel) and not behind that
    pixel's surface by more than ``tolerance`` (relative). Returns bool ``[..., T]``.
    """
    frames, height, width = depth.shape
    u, v, z = project_to_cameras(points, intrinsics, poses)
    ui, vi = u.round().long(), v.round().long()
    inside = (z > 1e-6) & (ui >= 0) & (ui < width) & (vi >= 0) & (vi < height)
    frame_index = torch.arange(frames, device=points.device).expand_as(ui)
    surface = depth[frame_index, vi.clamp(0, height - 1), ui.clamp(0, width - 1)]
    return inside & (z <= surface * (1 + tolerance))


# --------------------------------------------------------------------------- saved scenes

GROUND_TRUTH_FILE = "ground_truth.safetensors"


def save_scene(scene: Scene, folder: str | Path, config: Optional[SceneConfig] = None) -> Path:
    """Frames as ``NNN.png`` (what ``tracefield infer`` reads) plus ``ground_truth.safetensors``.

    The ground truth keeps the cameras and times, frame 0's depth and object ids, and the
    trajectories and visibility of a stride-4 grid of frame-0 pixels (TAP-Vid-style
    queries); the seed and scene config in its metadata re-render everything else exactly.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(scene.images.cpu().numpy()):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    s = QUERY_STRIDE
    tensors = {
        "intrinsics": scene.intrinsics.cpu(),
        "poses": scene.poses.cpu(),
        "times": scene.times.cpu(),
        "depth": scene.depth[0].cpu().half(),
        "object_ids": scene.object_ids[0].cpu().to(torch.uint8),
        "query_tracks": scene.tracks[0, :, s // 2 :: s, s // 2 :: s].cpu().contiguous(),
        "query_visible": scene.visible[0, :, s // 2 :: s, s // 2 :: s].cpu().contiguous(),
    }
    metadata = {"format": "tracefield.synthetic", "seed": str(scene.seed), "camera_motion": scene.camera_motion,
                "config": json.dumps(asdict(config or SceneConfig(frames=len(scene.times), height=scene.depth.shape[1], width=scene.depth.shape[2]))),
                "query_stride": str(s)}
    with atomic_file(folder / GROUND_TRUTH_FILE) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return folder


def load_ground_truth(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata :func:`save_scene` wrote."""
    with safe_open(str(Path(folder) / GROUND_TRUTH_FILE), framework="pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}, dict(handle.metadata())
