"""The monodomain time loop, compiled: one pass over the nodes per time step.

The step is the one :mod:`.solver` documents (forward Euler for v, Rush-Larsen for the gate,
point-implicit passive nodes, threshold crossings interpolated within the step). Written as
numpy array expressions it makes a dozen passes over ``[nodes, designs]`` arrays per step and
is bound by memory traffic; here each node's row of the stiffness matrix, its reaction, its
gate and its crossings are done together while its values are in cache. Each design's
stiffness K = sum_p w_p K_p is never assembled: a part's row is shared by every design, so its
coefficients are read once per step for the whole batch and the weights scale the sums.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sparse
from numba import njit

from hydraopt_simulators.mechanics.myocardium import FAST_MATH


def stacked_parts(
    parts: list[tuple[sparse.csr_matrix, np.ndarray]], n_nodes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The parts' CSR arrays stacked (row pointers ``[parts, nodes + 1]`` into shared column
    and value arrays) and their weights ``[parts, designs]``."""
    indptr = np.zeros((len(parts), n_nodes + 1), dtype=np.int64)
    indices, data = [], []
    offset = 0
    for p, (matrix, _) in enumerate(parts):
        matrix = sparse.csr_matrix(matrix)
        matrix.sum_duplicates()
        matrix.eliminate_zeros()  # scar's elements: structurally present, conducting nothing
        indptr[p] = matrix.indptr + offset
        indices.append(matrix.indices.astype(np.int64))
        data.append(matrix.data.astype(np.float64))
        offset += matrix.nnz
    weights = np.stack([np.asarray(w, dtype=np.float64) for _, w in parts])
    return indptr, np.concatenate(indices), np.concatenate(data), weights


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def integrate(
    indptr: np.ndarray,
    indices: np.ndarray,
    data: np.ndarray,
    weights: np.ndarray,
    mass: np.ndarray,
    excitable: np.ndarray,
    onset_ms: np.ndarray,
    fine_dt: float,
    plateau_dt: float,
    dt: float,
    start_ms: float,
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
    v_state: np.ndarray,
    h: np.ndarray,
    times: np.ndarray,
    repolarised: np.ndarray,
    done: np.ndarray,
    return_after: int,
) -> tuple[float, float]:
    """Integrate from ``start_ms`` with the state ``v_state`` and ``h`` ``[nodes, designs]``
    (updated in place); record crossings in ``times`` and ``repolarised`` (inf where a node
    has not crossed).

    Stops at ``max_time_ms``, or once ``return_after`` designs have finished (``done``), so
    that the caller can drop them from the batch. A design has finished once every excitable
    node has activated (and, with ``repolarise``, repolarised), or once its heart is
    quiescent: every stimulus over and every node below ``quiescent_v``, where the ionic
    current only repolarises, so nothing can activate any more.

    The step is ``fine_dt`` while an upstroke may be under way: before the last stimulus has
    ended and whenever a node not yet activated is above ``quiescent_v``; otherwise (the
    plateau and repolarisation) ``plateau_dt``. ``dt`` is the step to start with. Returns the
    time reached and the step in use."""
    n_nodes, n_designs = times.shape
    n_parts = weights.shape[0]
    v = v_state
    v_new = np.empty_like(v_state)
    swaps = 0
    diagonal = np.zeros((n_nodes, n_designs))
    last_stimulus_ms = 0.0
    for i in range(n_nodes):
        if excitable[i] and onset_ms[i] < np.inf:
            last_stimulus_ms = max(last_stimulus_ms, onset_ms[i] + stimulus_duration_ms)
        for p in range(n_parts):
            for k in range(indptr[p, i], indptr[p, i + 1]):
                if indices[k] == i:
                    for d in range(n_designs):
                        diagonal[i, d] += weights[p, d] * data[k]
    acc = np.zeros(n_designs)
    part = np.zeros(n_designs)
    highest = np.zeros(n_designs)
    t = start_ms
    next_check_ms = start_ms + 1.0
    while t < max_time_ms:
        open_decay = np.exp(-dt / tau_open_ms)
        close_decay = np.exp(-dt / tau_close_ms)
        stirring = False  # a node not yet activated is above quiescent_v
        for i in range(n_nodes):
            # Each part's row is shared by every design (one coefficient times a contiguous
            # row of v); the designs' weights scale the parts' sums. Most rows are empty in
            # most parts (a part covers its own elements only).
            acc[:] = 0.0
            for p in range(n_parts):
                first, last = indptr[p, i], indptr[p, i + 1]
                if first == last:
                    continue
                part[:] = 0.0
                for k in range(first, last):
                    coefficient = data[k]
                    j = indices[k]
                    for d in range(n_designs):
                        part[d] += coefficient * v[j, d]
                for d in range(n_designs):
                    acc[d] += weights[p, d] * part[d]
            m = mass[i]
            stimulus = 0.0
            if onset_ms[i] <= t < onset_ms[i] + stimulus_duration_ms:
                stimulus = stimulus_strength_per_ms
            for d in range(n_designs):
                old = v[i, d]
                if excitable[i]:
                    gate = h[i, d]
                    rate = (
                        gate * old * old * (1.0 - old) / tau_in_ms
                        - old / tau_out_ms
                        - acc[d] / m
                        + stimulus
                    )
                    new = old + dt * rate
                    if old < v_gate:
                        h[i, d] = 1.0 - (1.0 - gate) * open_decay
                    else:
                        h[i, d] = gate * close_decay
                    if new > quiescent_v and times[i, d] == np.inf:
                        stirring = True
                else:  # passive: implicit in its own diagonal and leak
                    neighbours = acc[d] - diagonal[i, d] * old
                    new = (m * old - dt * neighbours) / (
                        m + dt * diagonal[i, d] + dt * m / tau_out_ms
                    )
                v_new[i, d] = new
                if new >= activation_threshold > old and times[i, d] == np.inf:
                    times[i, d] = t + dt * (activation_threshold - old) / (new - old)
                if (
                    repolarise[d]
                    and new < v_gate <= old
                    and times[i, d] <= t
                    and repolarised[i, d] == np.inf
                ):
                    repolarised[i, d] = t + dt * (v_gate - old) / (new - old)
        v, v_new = v_new, v
        swaps += 1
        t += dt
        dt = fine_dt if stirring or t < last_stimulus_ms else plateau_dt
        if t >= next_check_ms:
            next_check_ms = t + 1.0
            over = t >= last_stimulus_ms
            finished = _finished(
                v, excitable, repolarise, times, repolarised, done, over, quiescent_v, highest
            )
            if finished >= return_after or finished == n_designs:
                break
    if swaps % 2 == 1:  # the latest state is in the scratch array
        v_state[:, :] = v
    return t, dt


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def _finished(
    v: np.ndarray,
    excitable: np.ndarray,
    repolarise: np.ndarray,
    times: np.ndarray,
    repolarised: np.ndarray,
    done: np.ndarray,
    stimuli_over: bool,
    quiescent_v: float,
    highest: np.ndarray,
) -> int:
    """Mark the designs that have finished in ``done``; return how many have."""
    n_nodes, n_designs = times.shape
    highest[:] = 0.0
    for i in range(n_nodes):
        for d in range(n_designs):
            highest[d] = max(highest[d], v[i, d])
    count = 0
    for d in range(n_designs):
        if not done[d]:
            pending = False
            for i in range(n_nodes):
                if excitable[i] and (
                    times[i, d] == np.inf or (repolarise[d] and repolarised[i, d] == np.inf)
                ):
                    pending = True
                    break
            if not pending or (stimuli_over and highest[d] < quiescent_v):
                done[d] = True
        count += done[d]
    return count
