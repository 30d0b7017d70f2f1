"""Cameras from the field (intrinsics, per-frame poses), user camera paths, and occlusion."""

from tracefield.geometry.calibration import FilmedCameras, estimate_intrinsics, estimate_poses, principal_point
from tracefield.geometry.camera import Camera, Intrinsics
from tracefield.geometry.occlusion import DepthMaps, build_depth_maps
from tracefield.geometry.paths import CameraPath, load_camera_path

__all__ = [
    "Camera", "CameraPath", "DepthMaps", "FilmedCameras", "Intrinsics", "build_depth_maps",
    "estimate_intrinsics", "estimate_poses", "load_camera_path", "principal_point",
]
