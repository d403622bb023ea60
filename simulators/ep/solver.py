"""Monodomain reaction-diffusion with Mitchell-Schaeffer kinetics, P1 elements, lumped mass.

    dv/dt = div(D grad v) + J_in + J_out + J_stim,    D = sigma / (beta C_m)
    J_in  = h v^2 (1 - v) / tau_in,    J_out = -v / tau_out
    dh/dt = (1 - h) / tau_open  if v < v_gate,  -h / tau_close  otherwise

(Mitchell & Schaeffer, Bull Math Biol 2003;65:767-793; v is the normalised transmembrane
potential, 0 at rest and 1 at the plateau.) Space: P1 tetrahedra with the lumped (row-summed)
mass matrix, so the diffusion update needs no linear solve; time: forward Euler for v and the
exact exponential (Rush-Larsen) update for the gate h, with a step below both the reaction's
accuracy limit and the diffusion's stability limit 2 / lambda_max(M^-1 K).

Many designs are solved together: v is ``[nodes, designs]`` and each design's stiffness is
K = A + (1 - phi) B + phi sigma_gel C, the untreated tissue, the treated tissue and the gel
(isotropic) parts, so one sparse-times-dense product per part serves the whole batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sparse

# Mitchell & Schaeffer 2003, Table 1 (ms).
TAU_IN_MS = 0.3
TAU_OUT_MS = 6.0
TAU_OPEN_MS = 120.0
TAU_CLOSE_MS = 150.0
V_GATE = 0.13
ACTIVATION_THRESHOLD = 0.5
# Surface-to-volume ratio and membrane capacitance (openCARP defaults: 0.14 um^-1, 1 uF/cm^2).
BETA_PER_M = 1.4e5
MEMBRANE_CAPACITANCE_F_PER_M2 = 1e-2
REACTION_STEP_MS = 0.1
STIMULUS_DURATION_MS = 2.0
STIMULUS_STRENGTH_PER_MS = 0.5


def diffusivity_m2_per_ms(conductivity_s_per_m: float | np.ndarray) -> float | np.ndarray:
    """D = sigma / (beta C_m), in m^2/ms."""
    return conductivity_s_per_m / (BETA_PER_M * MEMBRANE_CAPACITANCE_F_PER_M2) * 1e-3


@dataclass
class Problem:
    """A batch of designs on one mesh: stiffness parts, per-design weights, lumped mass."""

    mass: np.ndarray  # [nodes]
    parts: list[tuple[sparse.csr_matrix, np.ndarray]]  # (K_part, weight per design [designs])
    excitable: np.ndarray  # [nodes] bool: nodes with an ionic current
    stimulated: np.ndarray  # [nodes] bool

    @property
    def n_designs(self) -> int:
        return len(self.parts[0][1])

    def stable_step_ms(self) -> float:
        """Largest stable explicit step for the stiffest design (Gershgorin bound)."""
        bound = np.zeros(len(self.mass))
        for matrix, weights in self.parts:
            bound += np.asarray(abs(matrix).sum(axis=1)).ravel() * max(weights.max(), 0.0)
        lam = (bound / self.mass).max()
        return float(min(REACTION_STEP_MS, 0.9 * 2.0 / lam)) if lam > 0 else REACTION_STEP_MS


@dataclass
class Activation:
    """Activation times [nodes, designs] in ms (inf: never activated) and the end time."""

    times_ms: np.ndarray
    end_ms: float


def solve_activation(problem: Problem, max_time_ms: float) -> Activation:
    """Integrate from rest with the stimulus at t = 0 until every excitable node of every
    design has activated, or ``max_time_ms``."""
    n_nodes, n_designs = len(problem.mass), problem.n_designs
    dt = problem.stable_step_ms()
    v = np.zeros((n_nodes, n_designs))
    h = np.ones((n_nodes, n_designs))
    h[~problem.excitable] = 0.0  # no inward current where there are no myocytes
    times = np.full((n_nodes, n_designs), np.inf)
    inverse_mass = (1.0 / problem.mass)[:, None]
    stimulus = problem.stimulated[:, None] * STIMULUS_STRENGTH_PER_MS
    open_decay = np.exp(-dt / TAU_OPEN_MS)
    close_decay = np.exp(-dt / TAU_CLOSE_MS)
    excitable = problem.excitable[:, None]
    t = 0.0
    check_every = max(1, int(1.0 / dt))
    step = 0
    while t < max_time_ms:
        diffusion = np.zeros_like(v)
        for matrix, weights in problem.parts:
            diffusion += matrix @ (v * weights[None, :])
        rate = h * v * v * (1.0 - v) / TAU_IN_MS - v / TAU_OUT_MS - diffusion * inverse_mass
        if t < STIMULUS_DURATION_MS:
            rate += stimulus
        v_new = v + dt * rate
        h = np.where(v < V_GATE, 1.0 - (1.0 - h) * open_decay, h * close_decay)
        h = np.where(excitable, h, 0.0)
        crossed = (v_new >= ACTIVATION_THRESHOLD) & (v < ACTIVATION_THRESHOLD) & np.isinf(times)
        if crossed.any():
            fraction = (ACTIVATION_THRESHOLD - v[crossed]) / (v_new[crossed] - v[crossed])
            times[crossed] = t + dt * fraction
        v = v_new
        t += dt
        step += 1
        if step % check_every == 0 and np.isfinite(times[problem.excitable]).all():
            break
    return Activation(times, t)


def node_mask_of_elements(
    tetrahedra: np.ndarray, element_mask: np.ndarray, n_nodes: int, require_all: bool
) -> np.ndarray:
    """Nodes touching any (or only, with ``require_all``) masked elements."""
    touched = np.zeros(n_nodes, dtype=np.int64)
    total = np.zeros(n_nodes, dtype=np.int64)
    np.add.at(touched, tetrahedra[element_mask].ravel(), 1)
    np.add.at(total, tetrahedra.ravel(), 1)
    return touched == total if require_all else touched > 0
