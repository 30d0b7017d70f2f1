"""Camera frustums, one per frame, with the frame's image: where each frame was filmed from.

Poses come from the field itself (:mod:`tracefield.geometry.calibration`: focal length from
frame 0, PnP per frame), computed after the viewer is ready because they take a moment.
A frame whose pose cannot be estimated gets no frustum (and a log line). The frustum of the
frame on screen is highlighted. Clicking a frustum's image picks that pixel (see
:mod:`viewer.picking`).
"""

from __future__ import annotations

import logging
from typing import Callable, Optional

import numpy as np
import viser
import viser.transforms as vtf

from tracefield.errors import TracefieldError
from viewer.notices import guarded
from viewer.picking import FrustumGeometry, ray_to_pixel
from viewer.scene import Scene

log = logging.getLogger(__name__)

THUMBNAIL_WIDTH = 256
FRUSTUM_SCALE = 0.035  # of the median depth
COLOR = (120, 120, 120)
HIGHLIGHT = (255, 60, 40)

PixelCallback = Callable[[int, float, float], None]  # frame, x, y (network pixels)


class FrustumLayer:
    def __init__(self, server: viser.ViserServer, scene: Scene, on_pixel: PixelCallback) -> None:
        self.server, self.scene, self.on_pixel = server, scene, on_pixel
        self.nodes: dict[int, viser.CameraFrustumHandle] = {}
        self.geometry: dict[int, FrustumGeometry] = {}
        self.highlighted: Optional[int] = None

    def build(self, progress: Optional[Callable[[int, int], None]] = None) -> int:
        """Estimate the cameras and add the frustums; returns how many frames got one."""
        from tracefield.geometry.calibration import estimate_intrinsics, estimate_poses

        field = self.scene.field
        try:
            intrinsics = estimate_intrinsics(field)
        except TracefieldError as exc:
            log.warning("no camera frustums: %s", exc)
            return 0
        height, width = field.hw
        fov = 2.0 * float(np.arctan2(height / 2.0, intrinsics.focal))
        scale = FRUSTUM_SCALE * self.scene.scale.depth
        for frame in range(field.num_frames):
            try:
                camera = estimate_poses(field, intrinsics, [frame])[0]
            except TracefieldError as exc:
                log.info("frame %d: no frustum (%s)", frame, exc)
                continue
            rotation = camera.rotation.T  # camera -> world
            self.geometry[frame] = FrustumGeometry(rotation, camera.centre, fov, width / height, scale)
            self.nodes[frame] = self._add(frame, self.geometry[frame])
            if progress is not None:
                progress(frame + 1, field.num_frames)
        return len(self.nodes)

    def _add(self, frame: int, geometry: FrustumGeometry) -> viser.CameraFrustumHandle:
        node = self.server.scene.add_camera_frustum(
            f"/cameras/frame{frame:03d}", fov=geometry.fov, aspect=geometry.aspect, scale=geometry.scale,
            thickness=1.5, thickness_units="screen", color=COLOR, image=self._thumbnail(frame), format="jpeg", jpeg_quality=80,
            wxyz=vtf.SO3.from_matrix(geometry.rotation).wxyz, position=geometry.centre,
        )

        @node.on_click
        @guarded
        def _(event: viser.SceneNodePointerEvent) -> None:
            pixel = ray_to_pixel(geometry, np.asarray(event.ray_origin), np.asarray(event.ray_direction), self.scene.field.hw)
            if pixel is not None:
                self.on_pixel(frame, *pixel)

        return node

    def _thumbnail(self, frame: int) -> np.ndarray:
        import cv2

        image = self.scene.field.images[frame].numpy()
        height, width = image.shape[:2]
        if width <= THUMBNAIL_WIDTH:
            return image
        return cv2.resize(image, (THUMBNAIL_WIDTH, round(height * THUMBNAIL_WIDTH / width)), interpolation=cv2.INTER_AREA)

    def highlight(self, frame: int) -> None:
        if frame == self.highlighted:
            return
        with self.server.atomic():
            if self.highlighted in self.nodes:
                self.nodes[self.highlighted].color = COLOR
            if frame in self.nodes:
                self.nodes[frame].color = HIGHLIGHT
        self.highlighted = frame

    def set_visible(self, visible: bool) -> None:
        for node in list(self.nodes.values()):  # build() may still be adding frustums
            node.visible = visible
