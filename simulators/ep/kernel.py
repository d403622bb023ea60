"""The monodomain time loop, compiled: one pass over the nodes per stage of a time step, for a
lane of :data:`LANES` designs integrated together.

The step is the one :mod:`.solver` documents: the second-order Runge-Kutta-Chebyshev scheme
(:mod:`.rkc`) for v, the gate by its exact exponential (Rush-Larsen) update, passive nodes
point-implicitly over each stage's share of the step, threshold crossings interpolated within
the step. Each node's row of the stiffness matrix, its reaction, its gate and its crossings
are done together while its values are in cache, for the lane's designs side by side (``v``
is ``[nodes, LANES]``). The lane's width is a compile-time constant, so that the loop over its
designs is unrolled into straight vector code: with a width known only at run time, each of a
row's dozen coefficients pays for a loop set-up that costs more than its arithmetic. The
sparse indices are unsigned (:data:`.solver.INDEX_DTYPE`), so that no access pays for
negative-index wraparound. A lane holds few designs, so it keeps its own steps and stages and
stops when its own designs have finished.

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
    upstroke_dt: float,
    upstroke_scheme: np.ndarray,
    plateau_dt: float,
    plateau_scheme: np.ndarray,
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

    While an upstroke may be under way (before the last stimulus has ended, and whenever a
    node not yet activated is above ``quiescent_v``) a step is ``upstroke_dt`` long,
    otherwise (the plateau and repolarisation) ``plateau_dt``, each with its RKC2 scheme
    (:func:`.rkc.coefficients`: ``[5, stages + 1]``)."""
    n_nodes = times.shape[0]
    v = np.zeros((n_nodes, LANES))
    v_new = np.zeros((n_nodes, LANES))
    rate_start = np.zeros((n_nodes, LANES))  # F(Y_0), used by every stage
    stage = np.zeros((3, n_nodes, LANES))  # Y_{j-2}, Y_{j-1} and Y_j rotate through these
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
    matrix = (indptr, indices, shared, own, own_row, diagonal, mass, excitable, onset_ms)
    kinetics = (
        tau_in_ms,
        tau_out_ms,
        tau_open_ms,
        tau_close_ms,
        v_gate,
        activation_threshold,
        stimulus_duration_ms,
        stimulus_strength_per_ms,
        quiescent_v,
    )
    t = 0.0
    upstroke = True
    next_check_ms = 1.0
    while t < max_time_ms:
        dt = upstroke_dt if upstroke else plateau_dt
        scheme = upstroke_scheme if upstroke else plateau_scheme
        mu, nu, mu_tilde, gamma_tilde, c = scheme[0], scheme[1], scheme[2], scheme[3], scheme[4]
        stages = scheme.shape[1] - 1
        # Stage j from Y_{j-1} and Y_{j-2} (Y_0 = Y_{-1} = v); stage 1's row of the table
        # has mu = nu = gamma~ = 0, so it is Y_1 = v + mu~_1 dt F(v), keeping F(v).
        previous = v
        current = v
        free = 0
        stirring = False
        for j in range(1, stages + 1):
            last = j == stages
            target = v_new if last else stage[free]
            stirring = _stage(matrix, kinetics, current, v, previous, rate_start, target, h, t,
                              t + c[j - 1] * dt, dt, 1.0 - mu[j] - nu[j], mu[j], nu[j],
                              mu_tilde[j], gamma_tilde[j], j == 1, (c[j] - c[j - 1]) * dt, last,
                              repolarise, times, repolarised)  # fmt: skip
            previous = current
            current = target
            free = (free + 1) % 3  # the buffer holding neither Y_{j-1} nor Y_j
        v, v_new = v_new, v
        t += dt
        upstroke = stirring or t < last_stimulus_ms
        if t >= next_check_ms:
            next_check_ms = t + 1.0
            if _finished(
                v, excitable, repolarise, times, repolarised, t >= last_stimulus_ms, quiescent_v
            ):
                break
    return t


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def _stage(
    matrix: tuple,
    kinetics: tuple,
    x: np.ndarray,
    v: np.ndarray,
    before: np.ndarray,
    rate_start: np.ndarray,
    out: np.ndarray,
    h: np.ndarray,
    t: float,
    t_stage: float,
    dt: float,
    weight_start: float,
    weight_x: float,
    weight_before: float,
    weight_rate: float,
    weight_rate_start: float,
    keep_rate: bool,
    passive_dt: float,
    last: bool,
    repolarise: np.ndarray,
    times: np.ndarray,
    repolarised: np.ndarray,
) -> bool:
    """One pass over the nodes: on excitable nodes ``out = weight_start v + weight_x x +
    weight_before before + dt (weight_rate F(x) + weight_rate_start F(v))``, F the right-hand
    side at ``t_stage`` (with ``keep_rate``, F(x) is stored as ``rate_start``); on passive
    nodes a point-implicit step of ``passive_dt`` from ``x``. In a step's ``last`` stage, also
    the gate's update over the step from ``v`` (the step's start, at ``t``) and the crossings
    between ``v`` and ``out``. Returns whether a node not yet activated is above quiescent_v
    (an upstroke may be under way)."""
    indptr, indices, shared, own, own_row, diagonal, mass, excitable, onset_ms = matrix
    (
        tau_in_ms,
        tau_out_ms,
        tau_open_ms,
        tau_close_ms,
        v_gate,
        activation_threshold,
        stimulus_duration_ms,
        stimulus_strength_per_ms,
        quiescent_v,
    ) = kinetics
    n_nodes = x.shape[0]
    acc = np.zeros(LANES)
    inv_tau_in = 1.0 / tau_in_ms
    inv_tau_out = 1.0 / tau_out_ms
    open_decay = np.exp(-dt / tau_open_ms)
    close_decay = np.exp(-dt / tau_close_ms)
    stirring = False
    for i in range(n_nodes):
        for d in range(LANES):
            acc[d] = 0.0
        if own_row[i]:
            for k in range(indptr[i], indptr[i + 1]):
                j = indices[k]
                for d in range(LANES):
                    acc[d] += own[k, d] * x[j, d]
        else:
            for k in range(indptr[i], indptr[i + 1]):
                j = indices[k]
                coefficient = shared[k]
                for d in range(LANES):
                    acc[d] += coefficient * x[j, d]
        m = mass[i]
        if excitable[i]:
            stimulus = 0.0
            if onset_ms[i] <= t_stage < onset_ms[i] + stimulus_duration_ms:
                stimulus = stimulus_strength_per_ms
            inv_m = 1.0 / m
            for d in range(LANES):
                now = x[i, d]
                rate = (
                    h[i, d] * now * now * (1.0 - now) * inv_tau_in
                    - now * inv_tau_out
                    - acc[d] * inv_m
                    + stimulus
                )
                if keep_rate:
                    rate_start[i, d] = rate
                out[i, d] = (
                    weight_start * v[i, d]
                    + weight_x * now
                    + weight_before * before[i, d]
                    + dt * (weight_rate * rate + weight_rate_start * rate_start[i, d])
                )
        else:  # passive: implicit in its own diagonal and leak
            for d in range(LANES):
                now = x[i, d]
                neighbours = acc[d] - diagonal[i, d] * now
                out[i, d] = (m * now - passive_dt * neighbours) / (
                    m + passive_dt * diagonal[i, d] + passive_dt * m * inv_tau_out
                )
        if last:
            for d in range(LANES):
                old = v[i, d]
                new = out[i, d]
                if excitable[i]:
                    gate = h[i, d]
                    if old < v_gate:
                        h[i, d] = 1.0 - (1.0 - gate) * open_decay
                    else:
                        h[i, d] = gate * close_decay
                    if times[i, d] == np.inf:
                        if new > quiescent_v:
                            stirring = True
                    elif (
                        repolarise[d]
                        and new < v_gate <= old
                        and times[i, d] <= t
                        and repolarised[i, d] == np.inf
                    ):
                        repolarised[i, d] = t + dt * (v_gate - old) / (new - old)
                if new >= activation_threshold > old and times[i, d] == np.inf:
                    times[i, d] = t + dt * (activation_threshold - old) / (new - old)
    return stirring


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
