"""ATI's sampling schedules, on diffusers' flow-matching solvers.

ATI builds its solvers with ``shift=1`` and passes the shift when it sets the steps, over
its own sigma grids. diffusers' defaults differ (``linspace(1, 0.001)`` less 1e-6 for UniPC:
every timestep one higher), and the weights were trained and tuned with ATI's, so the grids
here are ATI's and diffusers' schedulers only do the arithmetic:

* ``unipc``: ``s = linspace(0.999, 0, N + 1)[:-1]`` (0.999 as the float32 it is in ATI's
  scheduler, in float64), shifted ``shift * s / (1 + (shift - 1) * s)``;
  multistep UniPC, order 2, bh2, flow prediction, lower-order final step, final sigma 0;
* ``dpm++``: ``s = linspace(1, 0, N + 1)[:-1]`` shifted the same way; DPM-Solver++ order 2
  (midpoint), flow prediction, final sigma 0.

Timesteps are ``int64(sigma * 1000)``, truncated, as ATI's transformer receives them.
"""

from __future__ import annotations

import numpy as np
import torch

from tracefield.errors import TracefieldError
from tracefield.generate import SOLVERS

TRAIN_TIMESTEPS = 1000
UNIPC_SIGMA_MAX = float(np.float32(1 - 1 / TRAIN_TIMESTEPS))  # 0.9990000128746033: ATI's sigma grid starts here


def base_sigmas(solver: str, steps: int) -> np.ndarray:
    """ATI's unshifted sigma grid of ``steps`` values (the final 0 excluded)."""
    if steps < 1:
        raise TracefieldError(f"--steps {steps}: needs at least 1 sampling step (ATI uses 40)")
    start = UNIPC_SIGMA_MAX if solver == "unipc" else 1.0
    return np.linspace(start, 0, steps + 1)[:-1].copy()


def make_scheduler(solver: str, steps: int, shift: float, device: torch.device | str = "cpu"):
    """A diffusers scheduler set to ATI's ``steps`` sigmas for ``solver`` and ``shift``."""
    from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

    if solver not in SOLVERS:
        raise TracefieldError(f"--solver {solver}: unknown; use one of {', '.join(SOLVERS)}")
    if not shift > 0:
        raise TracefieldError(f"--shift {shift}: must be positive (ATI uses 5.0)")
    common = dict(num_train_timesteps=TRAIN_TIMESTEPS, solver_order=2, prediction_type="flow_prediction", use_flow_sigmas=True,
                  flow_shift=shift, lower_order_final=True, final_sigmas_type="zero")
    if solver == "unipc":
        scheduler = UniPCMultistepScheduler(solver_type="bh2", predict_x0=True, **common)
    else:
        scheduler = DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_type="midpoint", **common)
    # ATI's grid, set as its ``retrieve_timesteps`` / ``set_timesteps(shift=...)`` leave it.
    scheduler.set_timesteps(steps, device=device)
    s = base_sigmas(solver, steps)
    sigma = shift * s / (1 + (shift - 1) * s)
    scheduler.sigmas = torch.from_numpy(np.concatenate([sigma, [0.0]]).astype(np.float32))
    scheduler.timesteps = torch.from_numpy(sigma * TRAIN_TIMESTEPS).to(device=device, dtype=torch.int64)
    return scheduler
