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


def grey_field(levels, hw=(64, 128)):
    """Frames of one grey level each and no foreground anywhere (of the automatic masks)."""
    field = random_field(n=len(levels), k=4, hw=hw)
    for i, level in enumerate(levels):
        field.images[i] = level
    field.fg_masks[:] = False
    return field


def test_rows_are_the_first_last_and_evenly_spaced_frames_tinted_where_the_user_says():
    """Five frames, three rows: frames 0, 2 and 4 (their own grey levels, picked evenly, the last included). The user's
    masks (right half) win over the automatic ones (none): tinted there as 0.55 frame + 0.45 tint, untouched elsewhere.
    Each frame's pixels travel ``travel[i]`` over the clip (frame 2 straight away from the camera, frame 4 diagonally
    in x and depth): the rows' travel (0, 1, 4 on one 0-4 scale) is matplotlib's magma at 0, 1/4 and 1, the 3D travel
    of the frames shown and of no others."""
    import matplotlib

    levels, travel = [20, 60, 100, 140, 180], [0.0, 3.0, 1.0, 2.0, 4.0]
    field = grey_field(levels)
    field.user_masks = torch.zeros(5, 64, 128, dtype=torch.bool)
    field.user_masks[:, :, 64:] = True
    directions = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0], [0.6, 0, 0.8]])
    for i, distance in enumerate(travel):
        for j in range(4):  # K = 4: control points at t = j / 3, a straight line at constant speed
            field.ctrl_pts[i, j] = torch.tensor([0.0, 0.0, 3.0]) + directions[i] * distance * j / 3
    sheet = np.asarray(field_preview(field, rows=3)).astype(float)
    tile_h = 64 * TILE_WIDTH // 128
    magma = matplotlib.colormaps["magma"]
    for row, (frame, scaled) in enumerate(zip([0, 2, 4], [0.0, 0.25, 1.0])):
        tile = sheet[row * tile_h : (row + 1) * tile_h, :TILE_WIDTH]
        np.testing.assert_allclose(tile[tile_h // 2, 40], [levels[frame]] * 3, atol=1)
        np.testing.assert_allclose(tile[tile_h // 2, TILE_WIDTH - 40], 0.55 * levels[frame] + 0.45 * np.array([255, 64, 32]), atol=1.5)
        moved = sheet[row * tile_h : (row + 1) * tile_h, 2 * TILE_WIDTH :]
        np.testing.assert_allclose(moved[tile_h // 2, TILE_WIDTH // 2], np.array(magma(scaled)[:3]) * 255, atol=2, err_msg=f"row {row}")


def test_depth_is_each_pixels_z_at_its_own_time_in_turbo():
    """Depth 2 in the top half, 6 in the bottom half at each frame's predicted time, whatever x (a left-right ramp) and
    wherever the curves go at other times (z drifts by column, so the time given to the frame shows a slope). The
    colours are matplotlib's turbo at both ends of the 2nd-98th percentile scale: rows flat, top turbo(0), bottom turbo(1)."""
    import matplotlib

    h, w, k = 64, 128, 4
    field = grey_field([0, 0, 0], hw=(h, w))
    field.times, field.time_steps = torch.tensor([0.3, 0.8, 0.6]), torch.tensor([0.0, 0.5, 1.0])
    xi = torch.arange(k, dtype=torch.float32) / (k - 1)  # K = 4: control points at t = k / 3
    x = torch.linspace(-1, 1, w).view(1, w).expand(h, w)
    z = torch.where(torch.arange(h).view(h, 1) < h // 2, 2.0, 6.0).expand(h, w)
    vz = torch.linspace(-5, 5, w).view(1, w).expand(h, w)
    for i, own in enumerate(field.times):
        for j in range(k):
            field.ctrl_pts[i, j] = torch.stack([x, torch.full((h, w), 0.3), z + vz * (xi[j] - own)], dim=-1)
    sheet = np.asarray(field_preview(field, rows=3)).astype(float)
    tile_h = h * TILE_WIDTH // w
    turbo = matplotlib.colormaps["turbo"]
    near, far = np.array(turbo(0.0)[:3]) * 255, np.array(turbo(1.0)[:3]) * 255
    for row in range(3):
        depth = sheet[row * tile_h : (row + 1) * tile_h, TILE_WIDTH : 2 * TILE_WIDTH]
        for col in (20, TILE_WIDTH // 2, TILE_WIDTH - 20):
            np.testing.assert_allclose(depth[tile_h // 4, col], near, atol=2, err_msg=f"row {row} col {col}")
            np.testing.assert_allclose(depth[3 * tile_h // 4, col], far, atol=2, err_msg=f"row {row} col {col}")


def test_travel_is_from_the_clips_start_to_its_end():
    """Left half: curves that go out and come back (control points 0, d, d, 0: they end where they started, so they
    travel nothing over the clip); right half: a straight move by d. The travel column shows the left half in
    matplotlib's magma at 0 and the right half at 1, in every row (half-way through the clip the left half is
    the farther out)."""
    import matplotlib

    h, w = 64, 128
    field = grey_field([0, 0, 0], hw=(h, w))
    out = torch.tensor([0.0, 1.0, 0.0])
    for i in range(3):
        for j, (back, straight) in enumerate(zip([0, 1, 1, 0], [0, 1 / 3, 2 / 3, 1])):
            field.ctrl_pts[i, j, :, : w // 2] = torch.tensor([0.0, 0.0, 4.0]) + out * back
            field.ctrl_pts[i, j, :, w // 2 :] = torch.tensor([0.0, 0.0, 4.0]) + out * straight
    sheet = np.asarray(field_preview(field, rows=3)).astype(float)
    tile_h = h * TILE_WIDTH // w
    magma = matplotlib.colormaps["magma"]
    for row in range(3):
        moved = sheet[row * tile_h : (row + 1) * tile_h, 2 * TILE_WIDTH :]
        np.testing.assert_allclose(moved[tile_h // 2, 30], np.array(magma(0.0)[:3]) * 255, atol=2, err_msg=f"row {row}")
        np.testing.assert_allclose(moved[tile_h // 2, TILE_WIDTH - 30], np.array(magma(1.0)[:3]) * 255, atol=2, err_msg=f"row {row}")
