"""The second-order Runge-Kutta-Chebyshev scheme the monodomain steps with."""

from __future__ import annotations

import numpy as np
import pytest

from hydraopt_simulators.ep import rkc


def _step(rate, t: float, y: float, dt: float, stages: int) -> float:
    """One RKC2 step of y' = rate(t, y), as the compiled loop combines its stages."""
    mu, nu, mu_tilde, gamma_tilde, c = rkc.coefficients(stages)
    start = rate(t, y)
    before, current = y, y + mu_tilde[1] * dt * start
    for j in range(2, stages + 1):
        after = (
            (1 - mu[j] - nu[j]) * y
            + mu[j] * current
            + nu[j] * before
            + mu_tilde[j] * dt * rate(t + c[j - 1] * dt, current)
            + gamma_tilde[j] * dt * start
        )
        before, current = current, after
    return current


@pytest.mark.parametrize("stages", [2, 3, 5, 9])
def test_rkc2_is_stable_exactly_on_its_interval(stages):
    """|R(z)| <= 1 for z in [-beta(s), 0] (beta about 0.65 s^2), and beyond it the scheme
    amplifies somewhere."""
    beta = rkc.stability_bound(stages)
    # Verwer's estimate for the damped scheme, 2/3 (s^2 - 1)(1 - 2 epsilon / 15)
    assert beta == pytest.approx(2 / 3 * (stages**2 - 1) * (1 - 2 / 15 * rkc.DAMPING), rel=0.01)
    inside = [abs(_step(lambda t, y, z=z: z * y, 0.0, 1.0, 1.0, stages)) for z in
              np.linspace(-beta, 0.0, 801)]  # fmt: skip
    assert max(inside) <= 1.0 + 1e-9
    outside = [abs(_step(lambda t, y, z=z: z * y, 0.0, 1.0, 1.0, stages)) for z in
               np.linspace(-1.3 * beta, -1.01 * beta, 60)]  # fmt: skip
    assert max(outside) > 1.0


@pytest.mark.parametrize("stages", [2, 4])
def test_rkc2_is_second_order(stages):
    """Halving the step quarters the error on a nonlinear, time-dependent problem."""

    def rate(t, y):
        return -y * y + np.cos(t)

    exact = 0.5
    for k in range(20000):  # a fine classical RK4 reference
        t, h = k * 1e-4, 1e-4
        k1 = rate(t, exact)
        k2 = rate(t + h / 2, exact + h / 2 * k1)
        k3 = rate(t + h / 2, exact + h / 2 * k2)
        k4 = rate(t + h, exact + h * k3)
        exact += h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    errors = []
    for n in (20, 40, 80):
        y, dt = 0.5, 2.0 / n
        for k in range(n):
            y = _step(rate, k * dt, y, dt, stages)
        errors.append(abs(y - exact))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((orders > 1.8) & (orders < 2.3))


def test_the_cheapest_step_buys_stability_with_stages():
    """A stiffer problem keeps the accuracy step with more stages; a mild one needs two."""
    stages, step = rkc.cheapest_step(6.0, 0.4, 0.9)
    assert stages == 2 and step == pytest.approx(0.9 * rkc.stability_bound(2) / 6.0)
    stages, step = rkc.cheapest_step(300.0, 0.4, 0.9)
    assert step * 300.0 <= 0.9 * rkc.stability_bound(stages) + 1e-9
    assert 8 <= stages <= 20
