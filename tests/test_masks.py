"""Automatic foreground masks: the release's rule, checked against an independent Otsu and the release's own calls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tracefield.masks import control_point_spread, foreground_masks, motion_threshold, motion_thresholds


def otsu_by_hand(values: np.ndarray, bins: int = 256) -> float:
    """Between-class variance maximised over the histogram's bin centres."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    best, best_score = centres[0], -1.0
    for i in range(bins - 1):
        w0, w1 = hist[: i + 1].sum(), hist[i + 1 :].sum()
        if w0 == 0 or w1 == 0:
            continue
        m0 = (hist[: i + 1] * centres[: i + 1]).sum() / w0
        m1 = (hist[i + 1 :] * centres[i + 1 :]).sum() / w1
        score = w0 * w1 * (m0 - m1) ** 2
        if score > best_score:
            best, best_score = centres[i], score
    return float(best)


def moving_square_field(frames: int = 2, k: int = 10, hw=(48, 64), box=(10, 30, 20, 50), noise=1e-3, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w = hw
    pts = (torch.rand(1, 1, h, w, 3, generator=g) * 4 + 2).expand(frames, k, h, w, 3).clone()
    pts += torch.randn(frames, k, h, w, 3, generator=g) * noise
    y0, y1, x0, x1 = box
    pts[:, :, y0:y1, x0:x1, 0] += torch.linspace(0, 0.5, k)[None, :, None, None]
    truth = np.zeros(hw, bool)
    truth[y0:y1, x0:x1] = True
    return pts, truth


def test_moving_region_is_found():
    pts, truth = moving_square_field()
    masks = foreground_masks(pts)
    assert masks.shape == (2, 48, 64) and masks.dtype == torch.bool
    for mask in masks.numpy():
        assert (mask & truth).sum() / (mask | truth).sum() > 0.97


def test_threshold_is_release_rule():
    pts, _ = moving_square_field(noise=5e-2, seed=3)
    spread = control_point_spread(pts)[0].numpy().astype(np.float64)
    thr = float(np.exp(otsu_by_hand(np.log(spread + 1e-9))))
    lo, hi = np.quantile(spread, [0.40, 0.95])
    assert motion_threshold(spread) == np.float64(min(max(thr, lo), hi))


def test_small_movers_keep_at_least_the_top_five_percent():
    """The 95th-percentile clamp: a tiny moving blob cannot pull the threshold above it."""
    pts, truth = moving_square_field(box=(0, 3, 0, 3))
    masks = foreground_masks(pts).numpy()
    assert masks[0][truth].all()
    assert 0.04 < masks[0].mean() < 0.06


def test_static_frame_does_not_crash():
    pts = torch.ones(1, 4, 8, 8, 3)
    masks = foreground_masks(pts)
    assert masks.shape == (1, 8, 8) and not masks.any()


def test_a_frame_otsu_cannot_split_takes_the_midpoint_of_the_65th_and_80th_percentiles():
    """Spreads far below the log's 1e-9 floor (a still camera's rounding noise) all take the same log,
    so Otsu has nothing to split: the threshold is then numpy's 65th and 80th percentiles, averaged."""
    spread = np.linspace(0.0, 1e-26, 12 * 16).reshape(12, 16)
    assert np.unique(np.log(spread + 1e-9)).size == 1  # the case the fallback is for
    expected = (np.quantile(spread, 0.65) + np.quantile(spread, 0.80)) / 2
    assert motion_threshold(spread) == pytest.approx(expected, rel=1e-12)
    assert (spread > motion_threshold(spread)).mean() == pytest.approx(0.275, abs=1 / spread.size)


def test_objects_are_numbered_by_decreasing_area():
    """Connected regions (8-connected) of a mask: 1 the largest, then smaller ones; regions under min_area are dropped."""
    from tracefield.masks import mask_objects

    mask = np.zeros((20, 30), bool)
    mask[1:4, 1:4] = True  # 9 pixels
    mask[4, 4] = True  # touches the first one diagonally: the same region (10 pixels)
    mask[10:18, 10:20] = True  # 80 pixels
    mask[0, 29] = True  # 1 pixel: noise
    labels = mask_objects(mask, min_area=5)
    assert labels[12, 12] == 1 and labels[2, 2] == 2 and labels[4, 4] == 2
    assert labels[0, 29] == 0 and (labels[~mask] == 0).all()
    assert sorted(np.unique(labels)) == [0, 1, 2]


def release_threshold(spread: np.ndarray) -> float:
    """The release's threshold, with its own calls: numpy quantiles and scikit-image's Otsu, one frame at a time."""
    from skimage.filters import threshold_otsu

    spread = spread.astype(np.float64)
    log_spread = np.log(spread + 1e-9)
    lo, hi = np.quantile(spread, [0.40, 0.95])
    if np.ptp(log_spread) == 0:
        return float(np.mean(np.quantile(spread, [0.65, 0.80])))
    return float(min(max(np.exp(threshold_otsu(log_spread, nbins=256)), lo), hi))


def test_all_frames_at_once_equal_the_release_frame_by_frame():
    """Smooth, heavy-tailed, tied (few distinct values), half-static and flat frames: bit-identical thresholds."""
    rng = np.random.default_rng(0)
    frames = [rng.random((37, 61)) ** 4, np.exp(rng.normal(-6, 3, (37, 61))), rng.integers(0, 4, (37, 61)) * 1e-3,
              np.concatenate([np.full((18, 61), 1e-6), rng.random((19, 61)) * 0.1]), np.full((37, 61), 0.25)]
    spread = torch.from_numpy(np.stack(frames).astype(np.float32))
    expected = [release_threshold(frame) for frame in spread.numpy()]
    assert motion_thresholds(spread).tolist() == expected


def test_masks_are_the_release_rule_frame_by_frame():
    pts, _ = moving_square_field(frames=3, noise=5e-2, seed=3)
    spread = control_point_spread(pts).numpy()
    expected = np.stack([frame > release_threshold(frame) for frame in spread])
    np.testing.assert_array_equal(foreground_masks(pts).numpy(), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_thresholds_on_the_gpu_are_the_cpu_ones():
    """Inference computes masks on the network's GPU: the same thresholds as on the CPU (up to an ulp of
    a logarithm moving a value across a histogram edge, which would move a threshold by at most a bin)."""
    rng = np.random.default_rng(1)
    spread = torch.from_numpy((rng.random((12, 96, 160)) ** 4).astype(np.float32))
    on_cpu, on_gpu = motion_thresholds(spread), motion_thresholds(spread.cuda()).cpu()
    torch.testing.assert_close(on_gpu, on_cpu, rtol=0.05, atol=0)
    assert (on_gpu == on_cpu).float().mean() >= 0.9
    pts, truth = moving_square_field(frames=3)
    np.testing.assert_array_equal(foreground_masks(pts.cuda()).cpu().numpy(), foreground_masks(pts).numpy())


def test_regions_of_exactly_min_area_are_objects():
    """'Regions smaller than min_area pixels are noise': a region of min_area pixels is an object, one pixel fewer is not."""
    from tracefield.masks import mask_objects

    mask = np.zeros((10, 20), bool)
    mask[1:3, 1:4] = True  # 6 pixels
    mask[6:8, 10:13] = True
    mask[7, 12] = False  # 5 pixels
    labels = mask_objects(mask, min_area=6)
    assert labels[1, 1] == 1 and (labels[1:3, 1:4] == 1).all()
    assert (labels[6:8, 10:13] == 0).all() and sorted(np.unique(labels)) == [0, 1]
    assert sorted(np.unique(mask_objects(mask, min_area=5))) == [0, 1, 2]
