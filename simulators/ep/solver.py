"""Monodomain reaction-diffusion with Mitchell-Schaeffer kinetics, P1 elements, lumped mass.

    dv/dt = div(D grad v) + J_in + J_out + J_stim,    D = sigma / (beta C_m)
    J_in  = h v^2 (1 - v) / tau_in,    J_out = -v / tau_out
    dh/dt = (1 - h) / tau_open  if v < v_gate,  -h / tau_close  otherwise

(Mitchell & Schaeffer, Bull Math Biol 2003;65:767-793; v is the normalised transmembrane
potential, 0 at rest and 1 at the plateau.) Space: P1 tetrahedra with the lumped (row-summed)
mass matrix, so the diffusion update needs no linear solve. Time: the second-order
Runge-Kutta-Chebyshev scheme for v (:mod:`.rkc`), with a step chosen for accuracy (short while
an upstroke may be under way, long over the plateau and repolarisation) and as many stages as
its stability needs: the Jacobian's eigenvalues lie within [-(lambda_max(M^-1 K) + the
reaction's stiffest rate), 0] over the excitable nodes; the gate h by its exact exponential
(Rush-Larsen) update. Passive nodes (inside scar: no ionic current, a tenth of the
capacitance) are updated point-implicitly over each stage's share of the step, implicit in
their own diagonal and leak, explicit in their neighbours: a conductive gel makes them
electrotonically fast (time constants far below a millisecond) without them setting the
stiffness for the whole heart.

Many designs are solved together, a lane of a few at a time (:mod:`.kernel`): each design's
stiffness is a weighted sum of parts (the untreated tissue, the treated tissue and the gel),
and on the rows where no part's weight differs between a lane's designs they share one set
of coefficients.

A node activates when v rises through 0.5 and repolarises when it falls back through the
gate's threshold V_gate = 0.13 (-70 mV on the -86.2 to 40 mV scale openCARP's
Mitchell-Schaeffer model is mapped to: Gillette et al., Med Image Anal 2021;71:102080).
Each node may be stimulated from a time of its own (the fast endocardial layer's activation,
:mod:`.purkinje`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sparse
from scipy.sparse.csgraph import reverse_cuthill_mckee

from hydraopt_simulators.ep import rkc

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
# The largest step while an upstroke may be under way (tau_in = 0.3 ms): total activation
# within 0.6-2.8 ms of the converged solution, closer than forward Euler's 0.1 ms step
# (docs/physics.md 3.1, measured).
UPSTROKE_STEP_MS = 0.4
# Once no upstroke is under way there is only the plateau and repolarisation left (tau_out =
# 6 ms, tau_close = 150 ms): repolarisation within 4.8 ms (p99) of the converged solution, as
# forward Euler's 0.25 ms step was (docs/physics.md 3.1, measured).
PLATEAU_STEP_MS = 2.0
# The reaction's stiffest rate, |dJ/dv| <= 1 / tau_in + 1 / tau_out (at v = 1 with the gate
# open: the top of an upstroke), added to the diffusion's in the stability bound.
REACTION_RATE_BOUND_PER_MS = 1.0 / TAU_IN_MS + 1.0 / TAU_OUT_MS
# Steps stay within this share of the stability limit.
STABILITY_MARGIN = 0.9
# A beat is over once every node is below this potential (and every stimulus is over): there
# the ionic current h v^2 (1 - v) / tau_in - v / tau_out repolarises whatever the gate h <= 1
# (it does for v < tau_in / tau_out), so no node can activate any more. Half that bound, as a
# margin for the P1 discretisation, which does not guarantee a discrete maximum principle
# (assumed margin).
QUIESCENT_V = 0.5 * TAU_IN_MS / TAU_OUT_MS
STIMULUS_DURATION_MS = 2.0
STIMULUS_STRENGTH_PER_MS = 0.5
# The compiled loop's sparse index types: unsigned, so that no access pays for Python's
# negative-index wraparound (a fifth of the loop's time).
INDEX_DTYPE = np.uint32
INDPTR_DTYPE = np.uint64


def diffusivity_m2_per_ms(conductivity_s_per_m: float | np.ndarray) -> float | np.ndarray:
    """D = sigma / (beta C_m), in m^2/ms."""
    return conductivity_s_per_m / (BETA_PER_M * MEMBRANE_CAPACITANCE_F_PER_M2) * 1e-3


@dataclass
class Problem:
    """A batch of designs on one mesh: stiffness parts, per-design weights, lumped mass."""

    mass: np.ndarray  # [nodes]
    parts: list[tuple[sparse.csr_matrix, np.ndarray]]  # (K_part, weight per design [designs])
    excitable: np.ndarray  # [nodes] bool: nodes with an ionic current
    stimulus_ms: np.ndarray  # [nodes] onset of each node's stimulus; inf: never stimulated
    # The largest step while an upstroke may be under way (per design, or one for all).
    step_ms: float | np.ndarray = UPSTROKE_STEP_MS
    # The largest step once none is; None: step_ms.
    plateau_step_ms: float | np.ndarray | None = PLATEAU_STEP_MS
    # Per design: a bound on the largest eigenvalue of M^-1 K over the excitable nodes
    # [1/ms]; None: the Gershgorin bound of the weighted parts.
    eigenvalue_bounds: np.ndarray | None = None

    @property
    def n_designs(self) -> int:
        return len(self.parts[0][1])

    def largest_eigenvalues(self) -> np.ndarray:
        """Each design's bound on the largest eigenvalue of M^-1 K over the excitable nodes
        (passive nodes are point-implicit) [1/ms]."""
        if self.eigenvalue_bounds is not None:
            return np.broadcast_to(
                np.asarray(self.eigenvalue_bounds, dtype=float), (self.n_designs,)
            )
        bound = np.zeros((len(self.mass), self.n_designs))
        for matrix, weights in self.parts:
            rows = np.asarray(abs(matrix).sum(axis=1)).ravel()
            bound += rows[:, None] * np.maximum(np.asarray(weights, dtype=float), 0.0)[None, :]
        return (bound / self.mass[:, None])[self.excitable].max(axis=0)

    def steps_ms(self) -> tuple[np.ndarray, np.ndarray]:
        """Each design's largest step while an upstroke may be under way, and after."""
        n = self.n_designs
        step = np.broadcast_to(np.asarray(self.step_ms, dtype=float), (n,))
        plateau = step if self.plateau_step_ms is None else self.plateau_step_ms
        plateau = np.broadcast_to(np.asarray(plateau, dtype=float), (n,))
        return np.array(step), np.array(plateau)


def time_stepping(largest_eigenvalue: float, largest_step_ms: float) -> tuple[int, float]:
    """RKC2's stages and step [ms] for a bound on the largest eigenvalue of M^-1 K [1/ms]
    and an accuracy limit on the step: the cheapest per millisecond within
    :data:`STABILITY_MARGIN` of the stability limit, the reaction's stiffest rate added to the
    diffusion's (:func:`.rkc.cheapest_step`)."""
    return rkc.cheapest_step(
        largest_eigenvalue + REACTION_RATE_BOUND_PER_MS, largest_step_ms, STABILITY_MARGIN
    )


@dataclass
class Activation:
    """Activation and repolarisation times [nodes, designs] in ms (inf: never) and the end
    time of the simulation (the latest of any design)."""

    times_ms: np.ndarray
    repolarisation_ms: np.ndarray
    end_ms: float


class Stiffness:
    """A problem's stiffness parts on their union's sparsity pattern, nodes in reverse
    Cuthill-McKee order (neighbours close in memory: the time loop reads each node's
    neighbours' values, and nearby rows share the cache)."""

    def __init__(self, problem: Problem) -> None:
        n = len(problem.mass)
        matrices = [sparse.csr_matrix(matrix) for matrix, _ in problem.parts]
        union = sum((abs(m) for m in matrices), sparse.csr_matrix((n, n))).tocsr()
        self.order = reverse_cuthill_mckee(union, symmetric_mode=True)
        pattern = union[self.order][:, self.order].tocsr()
        pattern.eliminate_zeros()  # scar's elements: structurally present, conducting nothing
        pattern.sort_indices()
        self.indptr = pattern.indptr.astype(INDPTR_DTYPE)
        self.indices = pattern.indices.astype(INDEX_DTYPE)
        self.row_lengths = np.diff(pattern.indptr).astype(np.int64)
        rows = np.repeat(np.arange(n), self.row_lengths)
        keys = rows * n + self.indices  # increasing: rows in order, columns sorted
        # Each part's coefficients on the pattern [parts, nnz], and its rows [parts, nodes].
        self.coefficients = np.zeros((len(matrices), len(keys)))
        self.part_rows = np.zeros((len(matrices), n), dtype=bool)
        for p, matrix in enumerate(matrices):
            entries = matrix[self.order][:, self.order].tocoo()
            nonzero = entries.data != 0
            row, col = entries.row[nonzero].astype(np.int64), entries.col[nonzero]
            np.add.at(
                self.coefficients[p], np.searchsorted(keys, row * n + col), entries.data[nonzero]
            )
            self.part_rows[p, row] = True
        self.weights = np.stack([np.asarray(w, dtype=float) for _, w in problem.parts])

    def lane(self, designs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Coefficients of a lane of designs: shared by all where no part's weight differs
        between them, and each design's own on the rows where one does."""
        weights = self.weights[:, designs]  # [parts, lane]
        shared = weights[:, 0] @ self.coefficients
        varies = np.ptp(weights, axis=1) > 0
        own_row = self.part_rows[varies].any(axis=0)
        own = np.zeros((len(shared), len(designs)))
        entries = np.repeat(own_row, self.row_lengths)
        own[entries] = self.coefficients[:, entries].T @ weights
        return shared, own, own_row


def solve_activation(
    problem: Problem, max_time_ms: float, repolarise: bool | np.ndarray = False
) -> Activation:
    """Integrate each design from rest until every excitable node has activated (and, where
    ``repolarise``, per design, repolarised), until the heart is quiescent (no node can
    activate any more: block), or until ``max_time_ms``. The loop is compiled
    (:mod:`.kernel`) and integrates lanes of a few designs, each lane with its own steps and
    stages (:func:`time_stepping`, for the stiffest of its designs) and its own end. A lane
    lasts as long as its longest beat at its cheapest steps, so designs share lanes with their
    likes: full beats with full beats, then by stiffness, then in the order given."""
    from hydraopt_simulators.ep.kernel import LANES, integrate

    n_nodes, n_designs = len(problem.mass), problem.n_designs
    stiffness = Stiffness(problem)
    order = stiffness.order
    steps, plateau_steps = problem.steps_ms()
    largest = problem.largest_eigenvalues()
    excitable = np.asarray(problem.excitable, dtype=bool)[order]
    mass = np.asarray(problem.mass, dtype=float)[order]
    onset_ms = np.asarray(problem.stimulus_ms, dtype=float)[order]
    repolarise = np.broadcast_to(np.asarray(repolarise, dtype=bool), (n_designs,))
    times = np.full((n_nodes, n_designs), np.inf)
    repolarised = np.full((n_nodes, n_designs), np.inf)
    end_ms = 0.0
    alike = np.lexsort((np.arange(n_designs), -plateau_steps, -steps, largest, ~repolarise))
    for first in range(0, n_designs, LANES):
        members = alike[first : first + LANES]
        lane = np.resize(members, LANES)  # a short lane repeats its designs
        shared, own, own_row = stiffness.lane(lane)
        upstroke_stages, upstroke_ms = time_stepping(largest[lane].max(), steps[lane].min())
        plateau_stages, plateau_ms = time_stepping(largest[lane].max(), plateau_steps[lane].min())
        at = np.full((n_nodes, LANES), np.inf)
        rt = np.full((n_nodes, LANES), np.inf)
        t = integrate(
            stiffness.indptr,
            stiffness.indices,
            shared,
            own,
            own_row,
            mass,
            excitable,
            onset_ms,
            upstroke_ms,
            rkc.coefficients(upstroke_stages),
            plateau_ms,
            rkc.coefficients(plateau_stages),
            float(max_time_ms),
            repolarise[lane],
            TAU_IN_MS,
            TAU_OUT_MS,
            TAU_OPEN_MS,
            TAU_CLOSE_MS,
            V_GATE,
            ACTIVATION_THRESHOLD,
            STIMULUS_DURATION_MS,
            STIMULUS_STRENGTH_PER_MS,
            QUIESCENT_V,
            at,
            rt,
        )
        end_ms = max(end_ms, t)
        times[np.ix_(order, members)] = at[:, : len(members)]
        repolarised[np.ix_(order, members)] = rt[:, : len(members)]
    return Activation(times, repolarised, end_ms)


def node_mask_of_elements(
    tetrahedra: np.ndarray, element_mask: np.ndarray, n_nodes: int, require_all: bool
) -> np.ndarray:
    """Nodes touching any (or only, with ``require_all``) masked elements."""
    touched = np.zeros(n_nodes, dtype=np.int64)
    total = np.zeros(n_nodes, dtype=np.int64)
    np.add.at(touched, tetrahedra[element_mask].ravel(), 1)
    np.add.at(total, tetrahedra.ravel(), 1)
    return touched == total if require_all else touched > 0
