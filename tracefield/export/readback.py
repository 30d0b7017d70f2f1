"""What each consumer computes from an export folder, through our readers of its loading code.

Tests and benchmarks check exports this way (against the clip's ground truth), never by
reading back our own writer's arrays.
"""

from __future__ import annotations

from pathlib import Path

from tracefield.export.conditions import ConsumerView
from tracefield.export.formats.ati import ati_view, read_run_list
from tracefield.export.formats.comfyui import comfyui_view
from tracefield.export.formats.wanmove import wanmove_view
from tracefield.export.formats.worldcanvas import worldcanvas_view


def consumer_view(fmt: str, folder: Path, name: str) -> ConsumerView:
    """The tracks of export ``name`` in ``folder`` as the consumer of ``fmt`` would use them (ComfyUI at its 832x480, 81 frames)."""
    if fmt == "ati":
        entry = read_run_list(folder / f"{name}.yaml")[0]
        return ati_view(entry.array, entry.image.shape[1], entry.image.shape[0])
    if fmt == "worldcanvas":
        return worldcanvas_view(folder / f"{name}.json")
    if fmt == "comfyui":
        return comfyui_view(folder / f"{name}.json")
    if fmt == "wanmove":
        return wanmove_view(folder / name, folder / f"{name}.png")
    raise ValueError(f"no consumer reader for format {fmt!r}")
