"""preview.png: foreground tinted where the mask says, depth and travel coloured per pixel."""

from __future__ import annotations

import numpy as np
import torch

from tracefield.preview import TILE_WIDTH, field_preview

from test_field import random_field


def test_preview_layout_and_tint():
    field = random_field(n=5, k=4, hw=(64, 128))
    field.images[:] = 0
    field.fg_masks[:] = False
    field.fg_masks[:, :, :64] = True  # left half moves
    field.ctrl_pts[:, :, :, 64:] = torch.tensor([0.0, 0.0, 5.0])  # right half: static, depth 5
    sheet = np.asarray(field_preview(field, rows=3))
    tile_h = 64 * TILE_WIDTH // 128
    assert sheet.shape == (3 * tile_h, 3 * TILE_WIDTH, 3)
    frame_tile = sheet[tile_h : 2 * tile_h, :TILE_WIDTH]
    assert frame_tile[tile_h // 2, 20, 0] > 100 and frame_tile[tile_h // 2, TILE_WIDTH - 20].max() == 0
    travel_tile = sheet[:tile_h, 2 * TILE_WIDTH :]
    static_colour = travel_tile[tile_h // 2, TILE_WIDTH - 20]
    assert (travel_tile[tile_h // 2, TILE_WIDTH - 40] == static_colour).all()  # no travel: one colour
