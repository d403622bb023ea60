"""The monodomain time loop, compiled: one pass over the nodes per time step, for a lane of
:data:`LANES` designs integrated together.

The step is the one :mod:`.solver` documents (forward Euler for v, Rush-Larsen for the gate,
point-implicit passive nodes, threshold crossings interpolated within the step). Each node's
row of the stiffness matrix, its reaction, its gate and its crossings are done together while
its values are in cache, for the lane's designs side by side (``v`` is ``[nodes, LANES]``).
The lane's width is a compile-time constant, so that the loop over its designs is unrolled
into straight vector code: with a width known only at run time, each of a row's dozen
coefficients pays for a loop set-up that costs more than its arithmetic. The sparse indices
are unsigned (:data:`.solver.INDEX_DTYPE`), so that no access pays for negative-index
wraparound. A lane holds few designs, so it keeps its own time step and stops when its own
designs have finished.

Most rows of a design's stiffness are the untreated tissue's, shared by every design; the rows
the gel touches hold each design's own coefficients (:meth:`.solver.Stiffness.lane`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hydraopt_simulators.mechanics.myocardium import FAST_MATH

LANES = 4  # designs integrated side by side: one 256-bit vector of float64


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def integrate(
    indptr: np.ndarray,
    indices: np.ndarray,
    shared: np.ndarray,
    own: np.ndarray,
    own_row: np.ndarray,
    mass: np.ndarray,
    excitable: np.ndarray,
    onset_ms: np.ndarray,
    fine_dt: float,
    plateau_dt: float,
    max_time_ms: float,
    repolarise: np.ndarray,
    tau_in_ms: float,
    tau_out_ms: float,
    tau_open_ms: float,
    tau_close_ms: float,
    v_gate: float,
    activation_threshold: float,
    stimulus_duration_ms: float,
    stimulus_strength_per_ms: float,
    quiescent_v: float,
    times: np.ndarray,
    repolarised: np.ndarray,
) -> float:
    """Integrate a lane of designs from rest; record threshold crossings in ``times`` and
    ``repolarised`` ``[nodes, LANES]`` (inf where a node has not crossed). Returns the time
    reached.

    The stiffness row of node i is ``shared[k]`` for k in ``indptr[i]:indptr[i + 1]`` (column
    ``indices[k]``; both unsigned), or, where ``own_row[i]``, each design's ``own[k, d]``.

    Stops once every design has finished, or at ``max_time_ms``. A design has finished once
    every excitable node has activated (and, with ``repolarise``, repolarised), or once its
    heart is quiescent: every stimulus over and every node below ``quiescent_v``, where the
    ionic current only repolarises, so nothing can activate any more.

    The step is ``fine_dt`` while an upstroke may be under way: before the last stimulus has
    ended and whenever a node not yet activated is above ``quiescent_v``; otherwise (the
    plateau and repolarisation) ``plateau_dt``."""
    n_nodes = times.shape[0]
    v = np.zeros((n_nodes, LANES))
    v_new = np.zeros((n_nodes, LANES))
    h = np.zeros((n_nodes, LANES))
    diagonal = np.zeros((n_nodes, LANES))
    last_stimulus_ms = 0.0
    for i in range(n_nodes):
        if excitable[i]:
            for d in range(LANES):
                h[i, d] = 1.0  # the inactivation gate starts open
            if onset_ms[i] < np.inf:
                last_stimulus_ms = max(last_stimulus_ms, onset_ms[i] + stimulus_duration_ms)
        for k in range(indptr[i], indptr[i + 1]):
            if indices[k] == i:
                for d in range(LANES):
                    diagonal[i, d] = own[k, d] if own_row[i] else shared[k]
    acc = np.zeros(LANES)
    inv_tau_in = 1.0 / tau_in_ms
    inv_tau_out = 1.0 / tau_out_ms
    t = 0.0
    dt = fine_dt
    next_check_ms = 1.0
    while t < max_time_ms:
        open_decay = np.exp(-dt / tau_open_ms)
        close_decay = np.exp(-dt / tau_close_ms)
        stirring = False  # a node not yet activated is above quiescent_v
        for i in range(n_nodes):
            for d in range(LANES):
                acc[d] = 0.0
            if own_row[i]:
                for k in range(indptr[i], indptr[i + 1]):
                    j = indices[k]
                    for d in range(LANES):
                        acc[d] += own[k, d] * v[j, d]
            else:
                for k in range(indptr[i], indptr[i + 1]):
                    j = indices[k]
                    coefficient = shared[k]
                    for d in range(LANES):
                        acc[d] += coefficient * v[j, d]
            m = mass[i]
            if excitable[i]:
                stimulus = 0.0
                if onset_ms[i] <= t < onset_ms[i] + stimulus_duration_ms:
                    stimulus = stimulus_strength_per_ms
                for d in range(LANES):
                    old = v[i, d]
                    gate = h[i, d]
                    rate = (
                        gate * old * old * (1.0 - old) * inv_tau_in
                        - old * inv_tau_out
                        - acc[d] / m
                        + stimulus
                    )
                    new = old + dt * rate
                    if old < v_gate:
                        h[i, d] = 1.0 - (1.0 - gate) * open_decay
                    else:
                        h[i, d] = gate * close_decay
                    v_new[i, d] = new
                    if times[i, d] == np.inf:
                        if new > quiescent_v:
                            stirring = True
                        if new >= activation_threshold > old:
                            times[i, d] = t + dt * (activation_threshold - old) / (new - old)
                    elif (
                        repolarise[d]
                        and new < v_gate <= old
                        and times[i, d] <= t
                        and repolarised[i, d] == np.inf
                    ):
                        repolarised[i, d] = t + dt * (v_gate - old) / (new - old)
            else:  # passive: implicit in its own diagonal and leak
                for d in range(LANES):
                    old = v[i, d]
                    neighbours = acc[d] - diagonal[i, d] * old
                    new = (m * old - dt * neighbours) / (
                        m + dt * diagonal[i, d] + dt * m * inv_tau_out
                    )
                    v_new[i, d] = new
                    if new >= activation_threshold > old and times[i, d] == np.inf:
                        times[i, d] = t + dt * (activation_threshold - old) / (new - old)
        v, v_new = v_new, v
        t += dt
        dt = fine_dt if stirring or t < last_stimulus_ms else plateau_dt
        if t >= next_check_ms:
            next_check_ms = t + 1.0
            if _finished(
                v, excitable, repolarise, times, repolarised, t >= last_stimulus_ms, quiescent_v
            ):
                break
    return t


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def _finished(
    v: np.ndarray,
    excitable: np.ndarray,
    repolarise: np.ndarray,
    times: np.ndarray,
    repolarised: np.ndarray,
    stimuli_over: bool,
    quiescent_v: float,
) -> bool:
    """Whether every design of the lane has finished."""
    n_nodes = v.shape[0]
    for d in range(LANES):
        pending = False
        highest = 0.0
        for i in range(n_nodes):
            highest = max(highest, v[i, d])
            if excitable[i] and (
                times[i, d] == np.inf or (repolarise[d] and repolarised[i, d] == np.inf)
            ):
                pending = True
        if pending and not (stimuli_over and highest < quiescent_v):
            return False
    return True
