"""Clamped cubic B-splines: the one place trajectories are evaluated.

A pixel's trajectory is the cubic B-spline through its K control points over t in [0, 1];
its confidence is interpolated with the same basis. Knots:

* K = 3m + 1 (4, 7, 10, 13, ...): m cubic Bezier segments joined at j/m, i.e. interior knots
  of multiplicity 3 -- exactly the release's vectors for K = 4, 7 and 10;
* any other K >= 4: uniform clamped knots (interior knots j / (K - 3)).

The basis is built by Cox-de Boor recursion vectorised over times and control points (a
loop over the degree only) and applied as one contraction, so evaluating a whole field on
CPU or GPU is a single matrix product. Times outside [0, 1] are clamped to it.
"""

from __future__ import annotations

from typing import Optional

import torch

DEGREE = 3


def knot_vector(num_ctrl: int, device: Optional[torch.device] = None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The K + 4 knots of a clamped cubic B-spline with ``num_ctrl`` control points."""
    if num_ctrl < DEGREE + 1:
        raise ValueError(f"a cubic B-spline needs at least 4 control points, got {num_ctrl}")
    # Built on ``device`` from arange alone: no host-to-device copy, so it may run inside a CUDA graph capture.
    f64 = {"dtype": torch.float64, "device": device}
    if (num_ctrl - 1) % DEGREE == 0:
        segments = (num_ctrl - 1) // DEGREE
        interior = (torch.div(torch.arange(DEGREE * (segments - 1), **f64), DEGREE, rounding_mode="floor") + 1) / segments
    else:
        interior = torch.arange(1, num_ctrl - DEGREE, **f64) / (num_ctrl - DEGREE)
    knots = torch.cat([torch.zeros(DEGREE + 1, **f64), interior, torch.ones(DEGREE + 1, **f64)])
    return knots.to(dtype)


def basis(t: torch.Tensor, num_ctrl: int, derivative: int = 0) -> torch.Tensor:
    """Basis functions (or their ``derivative``-th derivative, 0..3) at times ``t`` ``[T]`` -> ``[T, K]``.

    At t = 1 the last basis function is 1 (the curve ends at its last control point).
    """
    if not 0 <= derivative <= DEGREE:
        raise ValueError(f"derivative must be in 0..{DEGREE}, got {derivative}")
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32
    t = t.to(dtype).reshape(-1).clamp(0.0, 1.0)
    knots = knot_vector(num_ctrl, device=t.device, dtype=dtype)
    # Degree 0: the indicator of the knot span holding t; the last real span is closed at 1.
    span = (torch.searchsorted(knots, t, right=True) - 1).clamp(DEGREE, num_ctrl - 1)
    values = torch.nn.functional.one_hot(span, len(knots) - 1).to(dtype)
    for degree in range(1, DEGREE + 1):
        if degree <= DEGREE - derivative:
            values = _cox_de_boor_step(values, t, knots, degree)
        else:
            values = _derivative_step(values, knots, degree)
    return values


def time_mean_weights(num_ctrl: int) -> torch.Tensor:
    """Weights ``[K]`` whose dot product with the control points is the curve's mean over t in [0, 1].

    The integral of a B-spline basis function of degree p over its support is
    (u[k+p+1] - u[k]) / (p + 1); the weights sum to 1 because the basis is a partition of unity.
    """
    knots = knot_vector(num_ctrl)
    return ((knots[DEGREE + 1 :] - knots[: num_ctrl]) / (DEGREE + 1)).float()


def _safe_ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator with 0/0 := 0 (repeated knots)."""
    zero = denominator == 0
    return torch.where(zero, torch.zeros_like(numerator), numerator / torch.where(zero, torch.ones_like(denominator), denominator))


def _cox_de_boor_step(lower: torch.Tensor, t: torch.Tensor, knots: torch.Tensor, degree: int) -> torch.Tensor:
    """Degree-(p-1) basis ``[T, n + 1]`` -> degree-p basis ``[T, n]``."""
    n = lower.shape[1] - 1
    u_i, u_ip, u_i1, u_ip1 = knots[:n], knots[degree : degree + n], knots[1 : n + 1], knots[degree + 1 : degree + 1 + n]
    left = _safe_ratio(t[:, None] - u_i, u_ip - u_i) * lower[:, :n]
    right = _safe_ratio(u_ip1 - t[:, None], u_ip1 - u_i1) * lower[:, 1:]
    return left + right


def _derivative_step(lower: torch.Tensor, knots: torch.Tensor, degree: int) -> torch.Tensor:
    """d/dt of the degree-p basis from the degree-(p-1) one: p/(u_{i+p}-u_i) N_i - p/(u_{i+p+1}-u_{i+1}) N_{i+1}."""
    n = lower.shape[1] - 1
    u_i, u_ip, u_i1, u_ip1 = knots[:n], knots[degree : degree + n], knots[1 : n + 1], knots[degree + 1 : degree + 1 + n]
    ones = torch.ones_like(u_i)
    return degree * (_safe_ratio(ones, u_ip - u_i) * lower[:, :n] - _safe_ratio(ones, u_ip1 - u_i1) * lower[:, 1:])


def evaluate(ctrl: torch.Tensor, t: torch.Tensor, dim: int = 0, derivative: int = 0) -> torch.Tensor:
    """Evaluate curves whose control points lie along axis ``dim`` of ``ctrl`` at times ``t`` ``[T]``.

    The K axis is replaced by a T axis: ``[K, H, W, 3]`` -> ``[T, H, W, 3]``, or with
    ``dim=1`` ``[N, K, H, W]`` -> ``[N, T, H, W]``. Works for points and confidences alike;
    half-precision inputs are evaluated in float32. ``derivative=1`` gives velocity (per
    unit of normalised time).
    """
    dim = dim % ctrl.dim()
    weights = basis(torch.as_tensor(t, device=ctrl.device), ctrl.shape[dim], derivative)
    work_dtype = torch.promote_types(ctrl.dtype, torch.float32)
    out = torch.tensordot(ctrl.to(work_dtype), weights.to(work_dtype), dims=([dim], [1]))
    return out.movedim(-1, dim)


def time_mean(ctrl: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """The curves' mean over t in [0, 1], the K axis ``dim`` contracted away (points and confidences alike)."""
    dim = dim % ctrl.dim()
    weights = time_mean_weights(ctrl.shape[dim]).to(ctrl.device)
    work_dtype = torch.promote_types(ctrl.dtype, torch.float32)
    return torch.tensordot(ctrl.to(work_dtype), weights.to(work_dtype), dims=([dim], [0]))


def evaluate_each(ctrl: torch.Tensor, t: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Item ``n`` of ``ctrl`` ``[N, K, ...]`` at its own time ``t[n]`` -> ``[N, ...]`` (batched products).

    E.g. every frame's points at that frame's own time: the scene as each frame saw it.
    Items go ``chunk`` at a time, so half-precision fields are widened to float32 a few
    frames at once rather than whole (a 30-frame 512x288 field would need 0.5 GB more).
    """
    weights = basis(torch.as_tensor(t, device=ctrl.device).reshape(-1), ctrl.shape[1])
    work_dtype = torch.promote_types(ctrl.dtype, torch.float32)
    flat = ctrl.reshape(ctrl.shape[0], ctrl.shape[1], -1)
    out = torch.empty((ctrl.shape[0], 1, flat.shape[2]), dtype=work_dtype, device=ctrl.device)
    for start in range(0, ctrl.shape[0], chunk):
        stop = start + chunk
        torch.bmm(weights[start:stop, None, :].to(work_dtype), flat[start:stop].to(work_dtype), out=out[start:stop])
    return out.reshape(ctrl.shape[:1] + ctrl.shape[2:])


def evaluate_points_and_conf(
    ctrl_pts3d: torch.Tensor, ctrl_conf: torch.Tensor, t: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The release's ``evaluate_bspline_conf``: ``[K, H, W, 3]``, ``[K, H, W]`` at ``[T]`` -> ``[T, H, W, 3]``, ``[T, H, W]``."""
    return evaluate(ctrl_pts3d, t, dim=0), evaluate(ctrl_conf, t, dim=0)
