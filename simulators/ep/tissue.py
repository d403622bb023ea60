"""Conductivities of the tissue, tuned to a target conduction velocity at a mesh resolution.

A P1 mesh too coarse to resolve the wavefront conducts slower than the continuum, so the
conductivity is tuned per resolution, as openCARP's tuneCV does (Costa et al., Comput Cardiol
2013;40:373-376): on a strand of tissue (here a bar of tetrahedra with the target mesh's edge
length) with the same ionic model and time stepping, conductivity is updated by
sigma <- sigma (CV_target / CV)^2 (since CV grows as sqrt(sigma)) until the measured velocity is
within 1% of the target. Tuning takes seconds, and meshes of one resolution differ in mean
edge length by hundredths of a millimetre from patient to patient, so conductivities are tuned
at the nodes of a 0.1 mm grid of edge lengths and interpolated (linearly in log sigma) between
the two nodes around a mesh's edge length; a simulator keeps the nodes it has tuned, so a
cohort meshed at one resolution is tuned twice, not once per patient. Interpolated values are
as close to their targets as directly tuned ones (within the 1% tolerance; checked in
``tests/test_reference_ep.py``).

The tuned value of healthy tissue over its physical conductivity, per direction, is the
mesh's correction factor: it makes up for the resolution and for the phenomenological ionic
model's upstroke. Any other conducting material in the tissue (an injected hydrogel) is
scaled by the same factors, so its current keeps its physical proportion to the tissue's and
its effect does not change with the mesh. Physical healthy conductivities are the monodomain
(harmonic-mean) values of Clerc's bidomain measurements (J Physiol 1976;255:335-346:
intracellular 0.174 / 0.019, extracellular 0.625 / 0.236 S/m along / across fibres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hydraopt.domain.mesh import box_tetrahedra
from hydraopt_simulators.ep.solver import Problem, diffusivity_m2_per_ms, solve_activation
from hydraopt_simulators.fem import lumped_mass, stiffness_matrix


def _harmonic_mean(intracellular: float, extracellular: float) -> float:
    return intracellular * extracellular / (intracellular + extracellular)


PHYSICAL_CONDUCTIVITY_S_PER_M = {
    "fibre": _harmonic_mean(0.174, 0.625),
    "cross": _harmonic_mean(0.019, 0.236),
}


@dataclass(frozen=True)
class TunedConductivity:
    """Conductivities [S/m] tuned at one mesh resolution, by target name (``remote_fibre``,
    ``remote_cross``, ``bz_fibre``, ``bz_cross``)."""

    edge_length_m: float
    conductivities_s_per_m: dict[str, float]

    def __getitem__(self, name: str) -> float:
        return self.conductivities_s_per_m[name]

    def correction(self, direction: str) -> float:
        """The mesh's correction factor along ``fibre`` or ``cross`` direction: tuned healthy
        conductivity over physical."""
        return self[f"remote_{direction}"] / PHYSICAL_CONDUCTIVITY_S_PER_M[direction]


def conductivity_tensors(
    fibres: np.ndarray, along_s_per_m: np.ndarray, across_s_per_m: np.ndarray
) -> np.ndarray:
    """Per-element diffusivity tensors [E, 3, 3] in m^2/ms:
    D = d_across I + (d_along - d_across) f f^T."""
    along = diffusivity_m2_per_ms(np.asarray(along_s_per_m, dtype=float))
    across = diffusivity_m2_per_ms(np.asarray(across_s_per_m, dtype=float))
    outer = np.einsum("ei,ej->eij", fibres, fibres)
    return across[:, None, None] * np.eye(3)[None] + (along - across)[:, None, None] * outer


def bar_velocity_m_per_s(conductivity_s_per_m: float, edge_length_m: float) -> float:
    """Conduction velocity along a bar of tissue with fibres along it, meshed at the given
    edge length and stimulated at one end."""
    spacing = edge_length_m / 1.3  # a cube split in six has mean edge ~1.3 x its side
    length = max(0.03, 25 * spacing)
    cells = (int(np.ceil(length / spacing)), 2, 2)
    points, tetrahedra, _ = box_tetrahedra(cells, (cells[0] * spacing, 2 * spacing, 2 * spacing))
    fibres = np.tile([1.0, 0.0, 0.0], (len(tetrahedra), 1))
    n = len(tetrahedra)
    tensors = conductivity_tensors(fibres, np.full(n, conductivity_s_per_m), np.full(n, 0.0))
    stiffness = stiffness_matrix(points, tetrahedra, tensors)
    x = points[:, 0]
    problem = Problem(
        mass=lumped_mass(points, tetrahedra),
        parts=[(stiffness, np.ones(1))],
        excitable=np.ones(len(points), dtype=bool),
        stimulus_ms=np.where(x <= spacing * 1.01, 0.0, np.inf),
    )
    times = solve_activation(problem, max_time_ms=400.0).times_ms[:, 0]
    middle = (x > 0.25 * x.max()) & (x < 0.75 * x.max()) & np.isfinite(times)
    if middle.sum() < 3:
        return 0.0
    slope = np.polyfit(times[middle], x[middle], 1)[0]  # m/ms
    return float(slope * 1000.0)


def tune_conductivity(
    target_m_per_s: float, edge_length_m: float, initial_s_per_m: float = 0.1, iterations: int = 40
) -> float:
    """The conductivity giving ``target_m_per_s`` along a bar at this resolution.

    tuneCV's fixed-point update sigma (target / CV)^2 until the target is bracketed, then
    bisection on log sigma: near propagation failure CV(sigma) is far from sqrt(sigma), and
    below some sigma the discrete wave stops altogether."""
    sigma, too_slow, too_fast = initial_s_per_m, 0.0, np.inf
    best = (np.inf, sigma, 0.0)
    for _ in range(iterations):
        velocity = bar_velocity_m_per_s(sigma, edge_length_m)
        error = abs(velocity - target_m_per_s) / target_m_per_s
        best = min(best, (error, sigma, velocity))
        if error < 0.01:
            return sigma
        if velocity < target_m_per_s:
            too_slow = max(too_slow, sigma)
        else:
            too_fast = min(too_fast, sigma)
        if too_slow > 0 and np.isfinite(too_fast):  # bracketed: bisect on log sigma
            sigma = np.sqrt(too_slow * too_fast)
        elif velocity <= 0:
            sigma *= 4.0
        else:
            sigma *= (target_m_per_s / velocity) ** 2
    if best[0] < 0.03:
        return best[1]
    raise ValueError(
        f"no conductivity gives {target_m_per_s} m/s at a {edge_length_m * 1000:.1f} mm edge "
        f"length (closest {best[2]:.3f} m/s); use a smaller mesh element size"
    )


def tune(edge_length_m: float, targets_m_per_s: dict[str, float]) -> TunedConductivity:
    """Tune every named target velocity at this resolution."""
    return TunedConductivity(
        edge_length_m,
        {
            name: tune_conductivity(target, edge_length_m)
            for name, target in targets_m_per_s.items()
        },
    )


# Spacing of the edge lengths conductivities are tuned at (see the module docstring).
TUNING_GRID_M = 1e-4


def tuning_nodes(edge_length_m: float) -> tuple[float, float]:
    """The grid's edge lengths around ``edge_length_m`` (equal when it is on the grid)."""
    position = edge_length_m / TUNING_GRID_M
    low, high = np.floor(position + 1e-9), np.ceil(position - 1e-9)
    return round(low * TUNING_GRID_M, 7), round(max(low, high) * TUNING_GRID_M, 7)


def interpolated(
    edge_length_m: float, low: TunedConductivity, high: TunedConductivity
) -> TunedConductivity:
    """Conductivities at ``edge_length_m`` between two tuned grid nodes, linear in log sigma."""
    span = high.edge_length_m - low.edge_length_m
    weight = 0.0 if span == 0 else (edge_length_m - low.edge_length_m) / span
    return TunedConductivity(
        edge_length_m,
        {
            name: float(np.exp((1 - weight) * np.log(low[name]) + weight * np.log(high[name])))
            for name in low.conductivities_s_per_m
        },
    )
