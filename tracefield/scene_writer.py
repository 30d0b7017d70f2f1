"""Writing a traced scene's folder: the field file, frames and masks as PNGs, the preview, output.pt on request.

What a scene writes is computed first, where the network ran (:func:`scene_output`: casts,
log-confidences and the preview on the GPU, then one copy to the host), and written here
from plain host data, so writing runs on threads beside the network: the folder on one
thread, its PNGs on a pool with zlib level 1 (a third of Pillow's default time for 5% more
bytes). The folder appears atomically (:func:`tracefield.io.atomic.atomic_dir`): a failed or
killed write leaves the previous result, or nothing.
"""

from __future__ import annotations

import logging
import shutil
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from tracefield.field import TraceField, write_field_file
from tracefield.io.atomic import atomic_dir, remove_leftovers
from tracefield.preview import field_preview
from tracefield.scene_folder import SceneFolder

log = logging.getLogger(__name__)

PNG_LEVEL = 1  # zlib level of every PNG a scene writes (Pillow's default is 6)


@dataclass
class SceneOutput:
    """Everything one scene folder holds, as host data ready to write."""

    name: str
    field_tensors: dict[str, torch.Tensor]
    field_metadata: dict[str, str]
    images: np.ndarray  # uint8 [N, H, W, 3], the frames the network saw
    masks: np.ndarray  # bool [N, H, W], automatic foreground
    preview: Image.Image
    release: Optional[dict] = None  # the release's output.pt content, when asked for
    caveat: Optional[str] = None  # what its network can do, when worth saying (TraceField.caveat)

    @property
    def num_frames(self) -> int:
        return len(self.images)

    @property
    def hw(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3])


def scene_output(field: TraceField, name: str, field_dtype: torch.dtype = torch.float16, release: bool = False) -> SceneOutput:
    """The outputs of ``field`` (on any device), computed there and copied to the host in one go."""
    tensors = field.file_tensors(field_dtype)
    host = _to_host(tensors)
    return SceneOutput(
        name=name,
        field_tensors=host,
        field_metadata=field.file_metadata(),
        images=host["images"].numpy(),
        masks=host["fg_mask"].numpy(),
        preview=field_preview(field),
        release=field.release_output() if release else None,
        caveat=field.caveat,
    )


ALIGN = 256  # bytes between the starts of the tensors in a pinned block: any dtype's alignment


def pinned_bytes(num_views: int, hw: tuple[int, int], num_ctrl_pts: int, dtype: torch.dtype, local: bool) -> int:
    """Bytes of the pinned block :func:`scene_output` copies a scene's field into on a GPU: what
    :meth:`TraceField.file_tensors` computes there (points and log-confidences in ``dtype``, twice with a
    local head; times, time steps, masks; the frames stay on the host), known from the plan alone so
    that the block can be made ready before the network runs (:mod:`tracefield.primer`)."""
    pixels = num_views * hw[0] * hw[1]
    points = [pixels * num_ctrl_pts * 3 * dtype.itemsize, pixels * num_ctrl_pts * dtype.itemsize] * (2 if local else 1)
    return sum(_aligned(n) for n in [*points, num_views * 4, num_views * 4, pixels])


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


def packed_bytes(tensors: dict[str, torch.Tensor]) -> int:
    """Bytes of a block that :func:`copy_into` lays ``tensors`` out in."""
    return sum(_aligned(t.nbytes) for t in tensors.values())


def _to_host(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Host copies: CUDA tensors into one pinned block, one synchronisation for all.

    One block, not one per tensor: PyTorch's caching host allocator keeps it for the next scene
    of the same size, and a fresh process finds it already made by the primer (pinning 450 MB
    took 0.3-0.5 s the first time on the H200 machine, nothing after).
    """
    on_gpu = {key: t for key, t in tensors.items() if t.is_cuda}
    copies = {}
    if on_gpu:
        copies = copy_into(torch.empty(packed_bytes(on_gpu), dtype=torch.uint8, pin_memory=True), on_gpu)
        torch.cuda.synchronize()
    return {key: copies[key] if key in copies else t.contiguous() for key, t in tensors.items()}


def copy_into(block: torch.Tensor, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies of ``tensors`` laid out one after another in the bytes of ``block`` (uint8, at least
    the sum of their sizes aligned to :data:`ALIGN`); asynchronous where ``block`` is pinned."""
    copies, offset = {}, 0
    for key, t in tensors.items():
        copies[key] = block[offset : offset + t.nbytes].view(t.dtype).view(t.shape)
        copies[key].copy_(t, non_blocking=True)
        offset += _aligned(t.nbytes)
    return copies


def write_scene(output: SceneOutput, scene_dir: Path, pngs: Optional[Executor] = None) -> Path:
    """Write ``output`` into ``scene_dir`` atomically; PNGs on ``pngs`` (a thread pool) when given.

    A user's masks (``masks/NNN_user.png``) in an earlier result are carried over.
    """
    remove_leftovers(scene_dir)  # temporary folders of a killed run
    with atomic_dir(scene_dir) as tmp:
        new = SceneFolder(tmp)
        new.images.mkdir()
        new.masks.mkdir()
        jobs = [(new.image(i), image) for i, image in enumerate(output.images)]
        jobs += [(new.mask(i), mask.astype(np.uint8) * 255) for i, mask in enumerate(output.masks)]
        jobs.append((new.preview, np.asarray(output.preview)))
        pending = [pngs.submit(save_png, path, array) for path, array in jobs] if pngs is not None else []
        if pngs is None:
            for path, array in jobs:
                save_png(path, array)
        write_field_file(new.field_file, output.field_tensors, output.field_metadata)
        if output.release is not None:
            torch.save(output.release, new.release_file)
        _keep_user_masks(SceneFolder(scene_dir), new, output)
        for job in pending:
            job.result()
    return scene_dir


def save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, compress_level=PNG_LEVEL)


def _keep_user_masks(old: SceneFolder, new: SceneFolder, output: SceneOutput) -> None:
    """Carry a user's hand-made masks over a re-run; if they no longer fit, keep the old folder aside."""
    user = old.user_masks()
    if not user:
        return
    fits = len(user) == output.num_frames and all(Image.open(p).size == output.hw[::-1] for p in user)
    if fits:
        for p in user:
            shutil.copy2(p, new.masks / p.name)
        log.info("%s: kept %d user masks from the previous run", old.name, len(user))
        return
    backup = old.root.with_name(old.root.name + ".previous")
    shutil.rmtree(backup, ignore_errors=True)
    shutil.copytree(old.root, backup)
    log.warning("%s: user masks do not fit the new frames; the previous result is kept in %s", old.name, backup)

