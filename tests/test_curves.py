"""tracefield.curves against an independent, scalar Cox-de Boor evaluation."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from tracefield import curves

RELEASE_KNOTS = {
    4: [0, 0, 0, 0, 1, 1, 1, 1],
    7: [0, 0, 0, 0, 0.5, 0.5, 0.5, 1, 1, 1, 1],
    10: [0, 0, 0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1],
}


def cox_de_boor(i: int, p: int, t: float, knots: list[float]) -> float:
    """Textbook recursion on one basis function, with the last span closed at the end."""
    if p == 0:
        last_span = knots[i + 1] == knots[-1] and knots[i] < knots[i + 1]
        return 1.0 if knots[i] <= t < knots[i + 1] or (last_span and t == knots[-1]) else 0.0
    left = 0.0 if knots[i + p] == knots[i] else (t - knots[i]) / (knots[i + p] - knots[i]) * cox_de_boor(i, p - 1, t, knots)
    right = 0.0 if knots[i + p + 1] == knots[i + 1] else (knots[i + p + 1] - t) / (knots[i + p + 1] - knots[i + 1]) * cox_de_boor(i + 1, p - 1, t, knots)
    return left + right


def reference_basis(ts: np.ndarray, knots: list[float]) -> np.ndarray:
    k = len(knots) - 4
    return np.array([[cox_de_boor(i, 3, float(t), knots) for i in range(k)] for t in ts])


@pytest.mark.parametrize("k", sorted(RELEASE_KNOTS))
def test_release_knots_exact(k):
    assert curves.knot_vector(k, dtype=torch.float32).tolist() == torch.tensor(RELEASE_KNOTS[k], dtype=torch.float32).tolist()


@pytest.mark.parametrize("k", [4, 5, 6, 7, 8, 9, 10, 11, 13, 16])
def test_basis_matches_cox_de_boor(k):
    knots = curves.knot_vector(k).tolist()
    ts = np.concatenate([np.linspace(0, 1, 37), np.unique(knots)])
    got = curves.basis(torch.tensor(ts, dtype=torch.float64), k).numpy()
    np.testing.assert_allclose(got, reference_basis(ts, knots), atol=1e-12)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-12)  # partition of unity
    assert got[-1, -1] == pytest.approx(1.0) and got[0, 0] == pytest.approx(1.0)  # clamped ends


def test_uniform_knots_for_other_counts():
    assert curves.knot_vector(6).tolist() == pytest.approx([0, 0, 0, 0, 1 / 3, 2 / 3, 1, 1, 1, 1])
    assert curves.knot_vector(13).tolist()[4:13] == pytest.approx([Fraction(j, 4) for j in (1, 1, 1, 2, 2, 2, 3, 3, 3)])
    with pytest.raises(ValueError):
        curves.knot_vector(3)


@pytest.mark.parametrize("k", [4, 7, 10, 6])
def test_velocity_matches_finite_differences(k):
    g = torch.Generator().manual_seed(k)
    ctrl = torch.randn(k, 5, 3, dtype=torch.float64, generator=g)
    knots = curves.knot_vector(k).tolist()
    inner = [t for t in np.linspace(0.01, 0.99, 23) if min(abs(t - u) for u in knots) > 1e-3]
    t = torch.tensor(inner, dtype=torch.float64)
    h = 1e-6
    numeric = (curves.evaluate(ctrl, t + h) - curves.evaluate(ctrl, t - h)) / (2 * h)
    torch.testing.assert_close(curves.evaluate(ctrl, t, derivative=1), numeric, rtol=1e-6, atol=1e-6)


def test_second_derivative_of_a_cubic_bezier():
    """K = 4 is one Bezier segment: x''(t) = 6[(1-t)(p0 - 2p1 + p2) + t(p1 - 2p2 + p3)]."""
    p = torch.tensor([0.0, 1.0, 3.0, 2.0], dtype=torch.float64)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    expected = 6 * ((1 - t) * (p[0] - 2 * p[1] + p[2]) + t * (p[1] - 2 * p[2] + p[3]))
    torch.testing.assert_close(curves.evaluate(p, t, derivative=2), expected)


def test_evaluate_layouts_and_endpoints():
    g = torch.Generator().manual_seed(0)
    field = torch.randn(3, 10, 4, 6, 3, generator=g)  # [N, K, H, W, 3]
    conf = torch.rand(3, 10, 4, 6, generator=g) + 1
    t = torch.tensor([0.0, 0.3, 1.0])
    pts = curves.evaluate(field, t, dim=1)
    assert pts.shape == (3, 3, 4, 6, 3)
    torch.testing.assert_close(pts[:, 0], field[:, 0])  # curve starts at the first control point
    torch.testing.assert_close(pts[:, -1], field[:, -1])  # and ends at the last
    assert curves.evaluate(conf, t, dim=1).shape == (3, 3, 4, 6)
    single, single_conf = curves.evaluate_points_and_conf(field[1], conf[1], t)
    torch.testing.assert_close(single, pts[1])
    torch.testing.assert_close(single_conf, curves.evaluate(conf, t, dim=1)[1])


def test_half_precision_and_clamped_times():
    ctrl = torch.randn(7, 8, 3).half()
    out = curves.evaluate(ctrl, torch.tensor([-0.5, 1.5]))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[0], ctrl[0].float())
    torch.testing.assert_close(out[1], ctrl[-1].float())


@pytest.mark.gpu
def test_cuda_matches_cpu():
    ctrl = torch.randn(2, 10, 16, 16, 3)
    t = torch.linspace(0, 1, 9)
    torch.testing.assert_close(curves.evaluate(ctrl.cuda(), t.cuda(), dim=1).cpu(), curves.evaluate(ctrl, t, dim=1), rtol=1e-5, atol=1e-5)


def test_evaluate_each_takes_every_item_at_its_own_time_across_chunks():
    """19 items, each at its own time, evaluated in chunks of 8 (the last one short): every item equals the scalar
    Cox-de Boor sum at its time, so no chunk reuses another's times or leaves items unwritten."""
    k, n = 7, 19
    g = torch.Generator().manual_seed(3)
    ctrl = torch.randn(n, k, 2, 3, 3, dtype=torch.float64, generator=g)
    t = torch.rand(n, dtype=torch.float64, generator=g)
    got = curves.evaluate_each(ctrl, t, chunk=8)
    knots = curves.knot_vector(k).tolist()
    weights = reference_basis(t.numpy(), knots)  # [n, K]
    expected = np.einsum("nk,nk...->n...", weights, ctrl.numpy())
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-10)
