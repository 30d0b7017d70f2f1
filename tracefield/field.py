"""``TraceField``: the trajectory field every consumer (viewer, export, eval) reads.

It holds, for N frames of H x W pixels: K control points and confidences per pixel (one
cubic B-spline each, see :mod:`tracefield.curves`), the predicted and input time of each
frame, the frames the network saw, foreground masks, and the preprocessing transform that
maps every pixel back to the original video.

Two files hold it:

* ``field.safetensors`` (ours): control points in float16, log-confidences in float16
  (confidences reach 1e5 and beyond, past float16's range; their logarithm does not),
  times in float32, frames as uint8, masks as bool, and JSON metadata (transform, frame
  names and indices, fps, model). Memory-mapped, no pickle, ~10x smaller than output.pt.
* ``output.pt`` (the release's layout, ``{"preds": [...], "views": [...]}``): read with
  ``weights_only=True``; files that still carry the release's evaluated tracks are fine.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import mmap
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from tracefield import curves
from tracefield.errors import TracefieldError, short_reason
from tracefield.io.atomic import atomic_file
from tracefield.io.preprocess import Preprocess, from_network_input, to_network_input
from tracefield.provenance import model_caveat
from tracefield.scene_folder import SceneFolder

log = logging.getLogger(__name__)

FIELD_FORMAT = "tracefield.field"
FIELD_VERSION = 1


@dataclass
class FrameInfo:
    """Where the frames came from: the source, each frame's name and index in it, and its fps."""

    source: str = ""
    names: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    fps: Optional[float] = None


@dataclass
class TraceField:
    ctrl_pts: torch.Tensor  # [N, K, H, W, 3], first camera's frame (x right, y down, z forward)
    ctrl_conf: torch.Tensor  # [N, K, H, W], >= 1
    times: torch.Tensor  # [N] time predicted for each frame, in (0, 1)
    time_steps: torch.Tensor  # [N] time each frame was given, in [0, 1]
    images: torch.Tensor  # uint8 [N, H, W, 3], the frames the network saw
    fg_masks: torch.Tensor  # bool [N, H, W], automatic foreground (moving pixels)
    transform: Preprocess
    frames: FrameInfo = field(default_factory=FrameInfo)
    model: dict[str, Any] = field(default_factory=dict)  # config source, checkpoint, untrained flag
    user_masks: Optional[torch.Tensor] = None  # bool [N, H, W] drawn by a user; wins over fg_masks
    ctrl_pts_local: Optional[torch.Tensor] = None  # local head, each frame's own camera
    ctrl_conf_local: Optional[torch.Tensor] = None

    # ------------------------------------------------------------------ shape
    @property
    def num_frames(self) -> int:
        return self.ctrl_pts.shape[0]

    @property
    def num_ctrl(self) -> int:
        return self.ctrl_pts.shape[1]

    @property
    def hw(self) -> tuple[int, int]:
        return tuple(self.ctrl_pts.shape[2:4])

    @property
    def masks(self) -> torch.Tensor:
        """Foreground per frame: the user's mask where given, else the automatic one."""
        return self.user_masks if self.user_masks is not None else self.fg_masks

    # ------------------------------------------------------------------ curves
    def points_at(self, t: Any, frames: Optional[Sequence[int]] = None) -> torch.Tensor:
        """3D positions at times ``t`` ``[T]`` of the pixels of ``frames`` -> ``[n, T, H, W, 3]`` float32."""
        ctrl = self.ctrl_pts if frames is None else self.ctrl_pts[list(frames)]
        return curves.evaluate(ctrl, torch.as_tensor(t, dtype=torch.float32).reshape(-1), dim=1)

    def points_at_own_time(self, frames: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Each frame's points at that frame's predicted time (what it saw) -> ``[n, H, W, 3]`` float32."""
        return self._own_time_points if frames is None else self._own_time_points[list(frames)]

    def conf_at_own_time(self, frames: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Confidences of :meth:`points_at_own_time` -> ``[n, H, W]`` float32."""
        return self._own_time_conf if frames is None else self._own_time_conf[list(frames)]

    @functools.cached_property
    def _own_time_points(self) -> torch.Tensor:  # cameras, masks and occlusion all start from these
        return curves.evaluate_each(self.ctrl_pts, self.times)

    @functools.cached_property
    def _own_time_conf(self) -> torch.Tensor:
        return curves.evaluate_each(self.ctrl_conf, self.times)

    def conf_at(self, t: Any, frames: Optional[Sequence[int]] = None) -> torch.Tensor:
        """Confidences at times ``t`` ``[T]`` -> ``[n, T, H, W]`` float32."""
        conf = self.ctrl_conf if frames is None else self.ctrl_conf[list(frames)]
        return curves.evaluate(conf, torch.as_tensor(t, dtype=torch.float32).reshape(-1), dim=1)

    # ------------------------------------------------------------------ our file
    def file_tensors(self, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
        """The tensors of ``field.safetensors``, computed where the field lives (the GPU right after inference)."""
        tensors = {
            "ctrl_pts3d": self.ctrl_pts.to(dtype).contiguous(),
            "ctrl_conf_log": self.ctrl_conf.float().log().to(dtype).contiguous(),
            "time": self.times.float().contiguous(),
            "time_step": self.time_steps.float().contiguous(),
            "images": self.images.contiguous(),
            "fg_mask": self.fg_masks.bool().contiguous(),
        }
        if self.ctrl_pts_local is not None:
            tensors["ctrl_pts3d_local"] = self.ctrl_pts_local.to(dtype).contiguous()
            tensors["ctrl_conf_local_log"] = self.ctrl_conf_local.float().log().to(dtype).contiguous()
        return tensors

    def file_metadata(self) -> dict[str, str]:
        return {
            "format": FIELD_FORMAT,
            "version": str(FIELD_VERSION),
            "transform": json.dumps(self.transform.to_dict()),
            "frames": json.dumps(asdict(self.frames)),
            "model": json.dumps(self.model),
        }

    def save(self, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
        """Write ``field.safetensors`` atomically; ``dtype`` float16 (default) or float32 for points."""
        return write_field_file(path, self.file_tensors(dtype), self.file_metadata())

    @property
    def caveat(self) -> Optional[str]:
        """What to tell whoever looks at this field about the network that made it (None: nothing)."""
        return model_caveat(self.model)

    @staticmethod
    def caveat_of(path: str | Path) -> Optional[str]:
        """:attr:`caveat` of the field in ``path`` (a scene folder or a field file), from its header only."""
        source = SceneFolder.field_source(path)
        if source.suffix == ".pt":
            return None  # the release's file does not say which network made it
        with safe_open(str(source), framework="pt") as handle:
            return model_caveat(json.loads((handle.metadata() or {}).get("model", "{}")))

    @classmethod
    def load(cls, path: str | Path, release_points: torch.dtype = torch.float16) -> "TraceField":
        """Read a field from a scene folder, a ``field.safetensors`` or a release ``output.pt``.

        User masks (``masks/NNN_user.png`` beside the file) are picked up when present.
        ``release_points``: the precision control points of an ``output.pt`` are read into;
        float16 (the default, what ``field.safetensors`` stores) halves the memory of a large
        file (a 200-frame output.pt: 1.8 instead of 3.5 GB), float32 keeps its values exactly.
        """
        path = SceneFolder.field_source(path)
        loaded = cls._read_release(path, release_points) if path.suffix == ".pt" else cls._read_ours(path)
        user = read_user_masks(SceneFolder.of(path), loaded.num_frames, loaded.hw)
        if user is not None:
            loaded.user_masks = user
        return loaded

    @classmethod
    def _read_ours(cls, path: Path) -> "TraceField":
        """Points, frames and masks stay memory-mapped (safetensors reads without copying); only the
        confidences are made, frame by frame, from their stored logarithms."""
        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                t = {key: handle.get_tensor(key) for key in handle.keys()}
        except Exception as exc:  # damaged header or not safetensors at all
            raise TracefieldError(f"{path}: not a readable field file ({exc}); run `tracefield infer` again") from exc
        if meta.get("format") != FIELD_FORMAT:
            raise TracefieldError(f"{path}: not a tracefield field (format {meta.get('format')!r}); pass a field.safetensors")
        if int(meta.get("version", 0)) > FIELD_VERSION:
            raise TracefieldError(f"{path}: field version {meta['version']} is newer than this tracefield; upgrade it")
        local = "ctrl_pts3d_local" in t
        return cls(
            ctrl_pts=t["ctrl_pts3d"],
            ctrl_conf=_conf_from_log(t.pop("ctrl_conf_log")),
            times=t["time"],
            time_steps=t["time_step"],
            images=t["images"],
            fg_masks=t["fg_mask"],
            transform=Preprocess.from_dict(json.loads(meta["transform"])),
            frames=FrameInfo(**json.loads(meta.get("frames", "{}"))),
            model=json.loads(meta.get("model", "{}")),
            ctrl_pts_local=t["ctrl_pts3d_local"] if local else None,
            ctrl_conf_local=_conf_from_log(t.pop("ctrl_conf_local_log")) if local else None,
        )

    # ------------------------------------------------------------------ the release's file
    def release_output(self) -> dict:
        """The release's ``{"preds", "views"}`` dict (fp32, no evaluated tracks)."""
        imgs = to_network_input(self.images.cpu())
        preds, views = [], []
        for i in range(self.num_frames):
            pred = {
                "time": self.times[i : i + 1].float().cpu(),
                "ctrl_pts3d": self.ctrl_pts[i].float().cpu(),
                "ctrl_conf": self.ctrl_conf[i].float().cpu(),
                "fg_mask": self.fg_masks[i].bool().cpu(),
            }
            if self.user_masks is not None:
                pred["fg_mask_user"] = self.user_masks[i].bool().cpu()
            if self.ctrl_pts_local is not None:
                pred["ctrl_pts3d_local"] = self.ctrl_pts_local[i].float().cpu()
                pred["ctrl_conf_local"] = self.ctrl_conf_local[i].float().cpu()
            preds.append(pred)
            views.append({"img": imgs[i : i + 1], "time_step": float(self.time_steps[i])})
        return {"preds": preds, "views": views}

    def save_release_output(self, path: str | Path) -> Path:
        path = Path(path)
        with atomic_file(path) as tmp:
            torch.save(self.release_output(), tmp)
        return path

    @classmethod
    def _read_release(cls, path: Path, points: torch.dtype = torch.float16) -> "TraceField":
        """The release's file, memory-mapped and copied frame by frame into the field's tensors.

        Each frame's pages of the mapping are handed back to the system once copied, so the
        file is never held twice (the release's viewer peaks at 10.6 GB on 200 frames).
        """
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            preds, views = data["preds"], data["views"]
        except Exception as exc:  # refused pickle, damaged zip, wrong layout
            raise TracefieldError(
                f"{path}: not a readable Trace Anything output.pt ({short_reason(exc, typed=True)}); "
                "re-run inference"
            ) from exc

        def stack(items: Sequence[dict], key: str, dtype: Optional[torch.dtype] = None, convert=None) -> torch.Tensor:
            first = torch.as_tensor(items[0][key])
            first = convert(first) if convert is not None else first
            out = torch.empty((len(items), *first.shape), dtype=dtype or first.dtype)
            for i, item in enumerate(items):
                value = torch.as_tensor(item[key])
                out[i] = convert(value) if convert is not None else value
                _release_pages(value)
            return out

        has_user = all(p.get("fg_mask_user") is not None for p in preds)
        has_local = all("ctrl_pts3d_local" in p for p in preds)
        try:
            ctrl = stack(preds, "ctrl_pts3d", points)
            loaded = cls(
                ctrl_pts=ctrl,
                ctrl_conf=stack(preds, "ctrl_conf", torch.float32),
                times=torch.stack([torch.as_tensor(p["time"], dtype=torch.float32).reshape(()) for p in preds]),
                time_steps=torch.tensor([float(v["time_step"]) for v in views], dtype=torch.float32),
                images=stack(views, "img", convert=lambda img: torch.from_numpy(from_network_input(img))[0]),
                fg_masks=stack(preds, "fg_mask", torch.bool) if all("fg_mask" in p for p in preds) else _automatic_masks(ctrl, path),
                transform=Preprocess.identity(*ctrl.shape[2:4]),
                frames=FrameInfo(source=str(path), names=[f"{i:03d}" for i in range(len(preds))], indices=list(range(len(preds)))),
                user_masks=stack(preds, "fg_mask_user", torch.bool) if has_user else None,
                ctrl_pts_local=stack(preds, "ctrl_pts3d_local", points) if has_local else None,
                ctrl_conf_local=stack(preds, "ctrl_conf_local", torch.float32) if has_local else None,
            )
        except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as exc:  # frames of different sizes, missing entries
            raise TracefieldError(f"{path}: not a consistent Trace Anything output.pt ({short_reason(exc, typed=True)}); re-run inference") from exc
        return loaded


def write_field_file(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write :meth:`TraceField.file_tensors` and :meth:`TraceField.file_metadata` to ``path`` atomically."""
    path = Path(path)
    with atomic_file(path) as tmp:
        save_file({k: v.cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    return path


def _automatic_masks(ctrl: torch.Tensor, path: Path) -> torch.Tensor:
    """Masks for a release file written without them (older releases): computed as inference does."""
    from tracefield.masks import foreground_masks

    log.warning("%s: no fg_mask in the file; computing the automatic foreground masks", path)
    return foreground_masks(ctrl)


def _conf_from_log(log_conf: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Stored log-confidences -> confidences (float32), ``chunk`` frames at a time, each chunk's mapped pages
    handed back once read (the whole stored tensor is never held twice)."""
    conf = torch.empty(log_conf.shape, dtype=torch.float32)
    for start in range(0, len(log_conf), chunk):
        part = log_conf[start : start + chunk]
        torch.exp(part.to(torch.float32), out=conf[start : start + chunk])
        _release_pages(part)
    return conf


_MADV_PAGEOUT = 21  # Linux >= 5.4; older kernels refuse it and nothing happens


def _release_pages(tensor: torch.Tensor) -> None:
    """Ask the system to reclaim the whole memory pages under ``tensor`` (Linux; elsewhere nothing happens).

    For tensors read from a memory-mapped file: pages of a mapped file count in a process's
    resident memory once read, so copying a large file into the field's own tensors would
    hold it twice. Reclaiming never loses data: clean file pages are read again from the
    file if ever touched, and anonymous memory stays where it is.
    """
    if _LIBC is None or tensor.device.type != "cpu":
        return
    page = mmap.PAGESIZE
    start = tensor.data_ptr()
    end = start + tensor.numel() * tensor.element_size()
    first, last = -(-start // page) * page, end // page * page  # whole pages inside the tensor only
    if last > first:
        _LIBC.madvise(ctypes.c_void_p(first), ctypes.c_size_t(last - first), _MADV_PAGEOUT)


def _libc() -> Optional[ctypes.CDLL]:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc() if sys.platform.startswith("linux") else None


def read_user_masks(folder: SceneFolder, num_frames: int, hw: tuple[int, int]) -> Optional[torch.Tensor]:
    """``masks/NNN_user.png`` for every frame, or None when any is missing."""
    paths = [folder.user_mask(i) for i in range(num_frames)]
    if not all(p.is_file() for p in paths):
        return None
    masks = []
    for p in paths:
        mask = np.asarray(Image.open(p).convert("L")) > 127
        if mask.shape != tuple(hw):
            raise TracefieldError(f"{p}: user mask is {mask.shape[1]}x{mask.shape[0]}, frames are {hw[1]}x{hw[0]}; redraw it at frame size")
        masks.append(torch.from_numpy(mask))
    return torch.stack(masks)
