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
    dt: float,
    max_time_ms: float,
    repolarise: bool,
    tau_in_ms: float,
    tau_out_ms: float,
    tau_open_ms: float,
    tau_close_ms: float,
    v_gate: float,
    activation_threshold: float,
    stimulus_duration_ms: float,
    stimulus_strength_per_ms: float,
    times: np.ndarray,
    repolarised: np.ndarray,
) -> float:
    """Integrate from rest; fill ``times`` and ``repolarised`` ``[nodes, designs]`` (inf where
    a node never crosses) and return the end time."""
    n_nodes, n_designs = times.shape
    n_parts = weights.shape[0]
    v = np.zeros((n_nodes, n_designs))
    v_new = np.zeros((n_nodes, n_designs))
    h = np.zeros((n_nodes, n_designs))
    diagonal = np.zeros((n_nodes, n_designs))
    for i in range(n_nodes):
        if excitable[i]:
            h[i, :] = 1.0
        for p in range(n_parts):
            for k in range(indptr[p, i], indptr[p, i + 1]):
                if indices[k] == i:
                    for d in range(n_designs):
                        diagonal[i, d] += weights[p, d] * data[k]
    open_decay = np.exp(-dt / tau_open_ms)
    close_decay = np.exp(-dt / tau_close_ms)
    check_every = max(1, int(1.0 / dt))
    acc = np.zeros(n_designs)
    part = np.zeros(n_designs)
    t = 0.0
    step = 0
    while t < max_time_ms:
        for i in range(n_nodes):
            # Each part's row is shared by every design (one coefficient times a contiguous
            # row of v); the designs' weights scale the parts' sums.
            acc[:] = 0.0
            for p in range(n_parts):
                part[:] = 0.0
                for k in range(indptr[p, i], indptr[p, i + 1]):
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
                else:  # passive: implicit in its own diagonal and leak
                    neighbours = acc[d] - diagonal[i, d] * old
                    new = (m * old - dt * neighbours) / (
                        m + dt * diagonal[i, d] + dt * m / tau_out_ms
                    )
                v_new[i, d] = new
                if new >= activation_threshold > old and times[i, d] == np.inf:
                    times[i, d] = t + dt * (activation_threshold - old) / (new - old)
                if (
                    repolarise
                    and new < v_gate <= old
                    and times[i, d] <= t
                    and repolarised[i, d] == np.inf
                ):
                    repolarised[i, d] = t + dt * (v_gate - old) / (new - old)
        v, v_new = v_new, v
        t += dt
        step += 1
        if step % check_every == 0:
            pending = repolarised if repolarise else times
            done = True
            for i in range(n_nodes):
                if excitable[i]:
                    for d in range(n_designs):
                        if pending[i, d] == np.inf:
                            done = False
                            break
                if not done:
                    break
            if done:
                break
    return t
