"""The second-order Runge-Kutta-Chebyshev scheme (RKC2) for the monodomain's time steps.

An explicit step of s stages whose real stability interval [-beta(s), 0] grows as about
0.65 s^2 (Sommeijer, Shampine & Verwer, J Comput Appl Math 1997;88:315-326; van der Houwen &
Sommeijer, ZAMM 1980;60:479-485): a diffusion-reaction problem whose stiffness comes from
diffusion (real eigenvalues, the largest set by the stiffest node) takes a step chosen for
accuracy, and pays for stiffness with a few more stages instead of many more steps. With
Y_0 = y_n and F_0 = F(t_n, Y_0):

    Y_1 = Y_0 + mu~_1 dt F_0
    Y_j = (1 - mu_j - nu_j) Y_0 + mu_j Y_{j-1} + nu_j Y_{j-2}
          + mu~_j dt F(t_n + c_{j-1} dt, Y_{j-1}) + gamma~_j dt F_0,     j = 2..s
    y_{n+1} = Y_s

with the damped Chebyshev coefficients below (damping epsilon = 2/13, which keeps the
amplification below about 0.95 inside the interval away from 0).
"""

from __future__ import annotations

from functools import cache

import numpy as np

DAMPING = 2.0 / 13.0
MAX_STAGES = 64


@cache
def coefficients(stages: int) -> np.ndarray:
    """``[5, stages + 1]``: rows mu, nu, mu~, gamma~ and c (the stage times over dt), column j
    for stage j (column 0 unused but for c_0 = 0; stage 1 has mu = nu = gamma~ = 0, so the
    general stage formula gives Y_1 = Y_0 + mu~_1 dt F_0)."""
    if stages < 2:
        raise ValueError(f"RKC2 needs at least 2 stages, got {stages}")
    s = stages
    w0, t, dt, d2t = _chebyshev(s)
    w1 = dt[s] / d2t[s]
    b = np.zeros(s + 1)
    b[2:] = d2t[2:] / dt[2:] ** 2
    b[0] = b[1] = b[2]
    a = 1.0 - b * t
    table = np.zeros((5, s + 1))
    mu, nu, mu_tilde, gamma_tilde, c = table
    mu_tilde[1] = b[1] * w1
    for j in range(2, s + 1):
        mu[j] = 2.0 * b[j] * w0 / b[j - 1]
        nu[j] = -b[j] / b[j - 2]
        mu_tilde[j] = 2.0 * b[j] * w1 / b[j - 1]
        gamma_tilde[j] = -a[j - 1] * mu_tilde[j]
    c[2:] = dt[s] * d2t[2:] / (d2t[s] * dt[2:])
    c[1] = c[2] / dt[2]
    table.flags.writeable = False
    return table


@cache
def stability_bound(stages: int) -> float:
    """beta(s): the scheme is stable for dt lambda in [-beta(s), 0]."""
    w0, _, dt, d2t = _chebyshev(stages)
    return float((1.0 + w0) * d2t[stages] / dt[stages])


def cheapest_step(
    largest_rate_per_ms: float, largest_step_ms: float, margin: float
) -> tuple[int, float]:
    """The stages and step [ms] that advance fastest per stage for a problem whose Jacobian's
    eigenvalues lie in [-largest_rate, 0] (a bound): each stage count's step is the smaller of
    ``largest_step_ms`` and ``margin`` beta(s) / largest_rate."""
    best_stages, best_step = 2, 0.0
    for stages in range(2, MAX_STAGES + 1):
        step = min(largest_step_ms, margin * stability_bound(stages) / largest_rate_per_ms)
        if step / stages > best_step / best_stages * (1.0 + 1e-12):
            best_stages, best_step = stages, step
        if step >= largest_step_ms:  # more stages buy no longer step
            break
    return best_stages, best_step


def _chebyshev(s: int) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """w0 = 1 + damping / s^2 and the Chebyshev polynomials T_j, T_j' and T_j'' at w0,
    j = 0..s."""
    w0 = 1.0 + DAMPING / s**2
    t, dt, d2t = np.zeros(s + 1), np.zeros(s + 1), np.zeros(s + 1)
    t[0], t[1], dt[1] = 1.0, w0, 1.0
    for j in range(2, s + 1):
        t[j] = 2.0 * w0 * t[j - 1] - t[j - 2]
        dt[j] = 2.0 * t[j - 1] + 2.0 * w0 * dt[j - 1] - dt[j - 2]
        d2t[j] = 4.0 * dt[j - 1] + 2.0 * w0 * d2t[j - 1] - d2t[j - 2]
    return w0, t, dt, d2t
