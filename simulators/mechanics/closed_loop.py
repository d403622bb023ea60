"""The closed-loop circulation of Regazzoni et al. (2022), integrated for many hearts at once.

Regazzoni F, Salvador M, Africa PC, Fedele M, Dedè L, Quarteroni A. A cardiac electromechanics
model coupled with a lumped-parameter model for closed-loop blood circulation.
J Comput Phys 2022;457:111083. The parameters, equations and valve law are those of the
maintained implementation ``circulation.regazzoni2020`` (Finsberg et al.), which a test
reproduces; the left ventricle is the patch wall of :mod:`.wall`, and the chambers' timing
comes from :mod:`.timing`.

States (12): chamber volumes V_LA, V_LV, V_RA, V_RV [mL]; arterial and venous pressures
p_AR_SYS, p_VEN_SYS, p_AR_PUL, p_VEN_PUL [mmHg]; flows Q_AR_SYS, Q_VEN_SYS, Q_AR_PUL,
Q_VEN_PUL [mL/s]. With atrial and right-ventricular pressures p = E(t) (V - V0), the LV
pressure from its wall, and valve flows Q = (p_up - p_down) / R(p_up, p_down):

    dV_LA/dt = Q_VEN_PUL - Q_MV          C_AR_SYS dp_AR_SYS/dt = Q_AV - Q_AR_SYS
    dV_LV/dt = Q_MV - Q_AV               C_VEN_SYS dp_VEN_SYS/dt = Q_AR_SYS - Q_VEN_SYS
    dV_RA/dt = Q_VEN_SYS - Q_TV          C_AR_PUL dp_AR_PUL/dt = Q_PV - Q_AR_PUL
    dV_RV/dt = Q_TV - Q_PV               C_VEN_PUL dp_VEN_PUL/dt = Q_AR_PUL - Q_VEN_PUL
    L_AR_SYS dQ_AR_SYS/dt = p_AR_SYS - p_VEN_SYS - R_AR_SYS Q_AR_SYS   (and alike for the
    systemic veins into the RA, pulmonary arteries, pulmonary veins into the LA)

Valve resistance R = 10^(log10 Rmin + (log10 Rmax - log10 Rmin) H(p_down - p_up)) with the
smooth step H(x) = arctan(100 pi x) / pi + 1/2 ("smooth"), or its limit, Rmin when open and
Rmax when closed ("ideal", for screening). Chamber elastance E(t) = EB + EA e(t).

Time stepping, per heart: the LV-aortic pair is the stiff part (time constant R_AV / E_LV of a
few ms), so V_LV and p_AR_SYS are advanced implicitly (a 2x2 linear solve, valve resistances
frozen over the step) with the LV pressure linearised about the step's start, p_LV' =
p(V_LV, t') + dp/dV (V_LV' - V_LV), from the wall solved at the end-of-step activation; every
other state advances by forward Euler, as the reference implementation does, and the
inertances' R/L decay is taken implicitly. First order, stable for steps of several ms.

Beat events come from the valves, not from volume extrema: end-diastole is the mitral valve's
closure (the last before the aortic valve opens), end-systole the aortic valve's closure.
A beat starts at atrial activation (:mod:`.timing`), so both fall inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from hydraopt_simulators.mechanics.myocardium import FAST_MATH
from hydraopt_simulators.mechanics.timing import CardiacTiming
from hydraopt_simulators.mechanics.wall import MMHG_PA, NEWTON_ITERATIONS, Wall, solve_wall

# Regazzoni et al. 2022, Table 1 / circulation.regazzoni2020.default_parameters().
# Units: elastance mmHg/mL, volume mL, resistance mmHg s/mL, compliance mL/mmHg,
# inertance mmHg s^2/mL. Timing is in :mod:`.timing`.
CHAMBERS = {
    "LA": {"EA": 0.07, "EB": 0.18, "V0": 4.0},
    "LV": {"EA": 4.482, "EB": 0.170, "V0": 42.0},
    "RA": {"EA": 0.06, "EB": 0.07, "V0": 4.0},
    "RV": {"EA": 0.200, "EB": 0.029, "V0": 16.0},
}
VALVE_R_MIN = 0.0075  # mmHg s/mL, all four valves
VALVE_R_MAX = 75006.2
VALVE_STEEPNESS = 200.0
SYSTEMIC = {
    "R_AR": 0.733,
    "C_AR": 1.372,
    "R_VEN": 0.32,
    "C_VEN": 11.363,
    "L_AR": 0.005,
    "L_VEN": 0.0005,
}
PULMONARY = {
    "R_AR": 0.046,
    "C_AR": 20.0,
    "R_VEN": 0.0015,
    "C_VEN": 16.0,
    "L_AR": 0.0005,
    "L_VEN": 0.0005,
}
# A state on the limit cycle of the reference parameters.
INITIAL_STATE = {
    "V_LA": 87.183,
    "V_LV": 118.520,
    "V_RA": 86.833,
    "V_RV": 166.177,
    "p_AR_SYS": 87.675,
    "p_VEN_SYS": 35.898,
    "p_AR_PUL": 19.545,
    "p_VEN_PUL": 15.004,
    "Q_AR_SYS": 71.104,
    "Q_VEN_SYS": 94.039,
    "Q_AR_PUL": 94.084,
    "Q_VEN_PUL": 473.279,
}
STATE_NAMES = tuple(INITIAL_STATE)
VALVE_LAWS = ("smooth", "ideal")
_CIRCULATION = np.array(
    [SYSTEMIC[k] for k in ("R_AR", "C_AR", "R_VEN", "C_VEN", "L_AR", "L_VEN")]
    + [PULMONARY[k] for k in ("R_AR", "C_AR", "R_VEN", "C_VEN", "L_AR", "L_VEN")]
    + [CHAMBERS[c]["V0"] for c in ("LA", "RA", "RV")]
)


@dataclass
class BeatRecord:
    """Per heart, over one beat: volume, pressure, time and patch stretches [n, P] at
    end-diastole (mitral closure) and end-systole (aortic closure), the ventricular activation
    at end-systole, the peak LV pressure, the mean systemic arterial pressure, and whether the
    heart ejected at all."""

    edv_ml: np.ndarray
    esv_ml: np.ndarray
    edp_mmhg: np.ndarray
    esp_mmhg: np.ndarray
    t_ed_s: np.ndarray
    t_es_s: np.ndarray
    stretch_ed: np.ndarray
    stretch_es: np.ndarray
    activation_es: np.ndarray
    peak_p_lv_mmhg: np.ndarray
    mean_arterial_mmhg: np.ndarray
    ejected: np.ndarray

    @property
    def ef_pct(self) -> np.ndarray:
        return 100.0 * (self.edv_ml - self.esv_ml) / self.edv_ml


def initial_state(n: int) -> np.ndarray:
    """The reference limit-cycle state for ``n`` hearts, shape [12, n]."""
    return np.repeat(np.array(list(INITIAL_STATE.values()))[:, None], n, axis=1)


def integrate_beats(
    wall: Wall,
    state: np.ndarray,
    n_beats: int,
    dt_s: float,
    timing: CardiacTiming,
    valve_law: str = "smooth",
    newton_iterations: int = NEWTON_ITERATIONS,
    resistance_scale: float | np.ndarray = 1.0,
) -> tuple[np.ndarray, list[BeatRecord]]:
    """Advance ``state`` ([12, n], modified in place) by ``n_beats`` beats; return it and one
    :class:`BeatRecord` per beat. The wall is solved with at most ``newton_iterations`` Newton
    steps per time step (see :mod:`.wall`); the systemic arterial resistance is Regazzoni's
    times ``resistance_scale`` (one for all hearts, or one per heart)."""
    if valve_law not in VALVE_LAWS:
        raise ValueError(f"valve_law must be one of {VALVE_LAWS}, got {valve_law!r}")
    steps = round(timing.period_s / dt_s)
    dt = timing.period_s / steps
    times = np.arange(steps + 1) * dt
    chambers = np.stack(
        [
            CHAMBERS[c]["EB"] + CHAMBERS[c]["EA"] * timing.atria.activation(times, timing.period_s)
            for c in ("LA", "RA")
        ]
        + [
            CHAMBERS["RV"]["EB"]
            + CHAMBERS["RV"]["EA"] * timing.ventricles.activation(times, timing.period_s),
            timing.ventricles.activation(times, timing.period_s),
        ]
    )
    n, n_patches = wall.reference_area_m2.shape
    scalars = np.full((9, n_beats, n), np.nan)
    circulation = np.repeat(_CIRCULATION[:, None], n, axis=1)
    circulation[0] *= resistance_scale
    stretches = np.full((2, n_beats, n, n_patches), np.nan)
    _integrate(
        state,
        wall.arrays(),
        wall.stretch,
        wall.tension,
        chambers,
        circulation,
        dt,
        n_beats,
        valve_law == "smooth",
        newton_iterations,
        scalars,
        stretches,
    )
    records = [
        BeatRecord(
            edv_ml=scalars[0, b],
            esv_ml=scalars[1, b],
            edp_mmhg=scalars[2, b],
            esp_mmhg=scalars[3, b],
            t_ed_s=scalars[4, b],
            t_es_s=scalars[5, b],
            stretch_ed=stretches[0, b],
            stretch_es=stretches[1, b],
            activation_es=scalars[6, b],
            peak_p_lv_mmhg=scalars[7, b],
            mean_arterial_mmhg=scalars[8, b],
            ejected=np.isfinite(scalars[1, b]) & np.isfinite(scalars[0, b]),
        )
        for b in range(n_beats)
    ]
    return state, records


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def _conductance(p_up: float, p_down: float, smooth: bool) -> float:
    """1 / R of a valve: the smooth law, or its ideal limit."""
    if not smooth:
        return 1.0 / VALVE_R_MIN if p_up > p_down else 1.0 / VALVE_R_MAX
    step = np.arctan(np.pi / 2.0 * VALVE_STEEPNESS * (p_down - p_up)) / np.pi + 0.5
    return 1.0 / (VALVE_R_MIN * (VALVE_R_MAX / VALVE_R_MIN) ** step)


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def _inertance(flow: float, dp: float, resistance: float, inertance: float, dt: float) -> float:
    """Q' from L dQ/dt = dp - R Q', implicit in the R/L decay."""
    return (flow + dt / inertance * dp) / (1.0 + dt * resistance / inertance)


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def _lv_pressure(volume_ml, activation, j, solver, iterations):
    """LV pressure [mmHg] and dp/dV [mmHg/mL] from the wall."""
    arrays, stretch, tension, work = solver
    p, dpdv = solve_wall(
        volume_ml * 1e-6, activation, j, arrays, stretch, tension, iterations, work
    )
    return p / MMHG_PA, dpdv / MMHG_PA * 1e-6


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def _integrate(
    state,
    arrays,
    stretch,
    tension,
    chambers,
    c,
    dt,
    n_beats,
    smooth,
    iterations,
    scalars,
    stretches,
):
    """One heart at a time through all beats; see the module docstring for the scheme."""
    # Circulation parameters [15, n]: the same for every heart but the systemic resistance.
    c_ars, r_vens, c_vens, l_ars, l_vens = c[1, 0], c[2, 0], c[3, 0], c[4, 0], c[5, 0]
    r_arp, c_arp, r_venp, c_venp, l_arp, l_venp = c[6:12, 0]
    v0_la, v0_ra, v0_rv = c[12, 0], c[13, 0], c[14, 0]
    steps = chambers.shape[1] - 1
    e_la, e_ra, e_rv, act = chambers[0], chambers[1], chambers[2], chambers[3]
    solver = (arrays, stretch, tension, np.empty((2, stretch.shape[1])))
    for j in range(state.shape[1]):
        r_ars = c[0, j]
        v_la, v_lv, v_ra, v_rv = state[0, j], state[1, j], state[2, j], state[3, j]
        p_ars, p_vens, p_arp, p_venp = state[4, j], state[5, j], state[6, j], state[7, j]
        q_ars, q_vens, q_arp, q_venp = state[8, j], state[9, j], state[10, j], state[11, j]
        p_lv = _lv_pressure(v_lv, act[0], j, solver, NEWTON_ITERATIONS)[0]
        # The previous step's LV volume, pressure, activation and valve pressure gaps
        # (upstream minus downstream: a valve is open while its gap is positive).
        previous = (v_lv, p_lv, act[0], e_la[0] * (v_la - v0_la) - p_lv, p_lv - p_ars)
        for beat in range(n_beats):
            av_opened = False
            peak = -np.inf
            arterial = 0.0
            for k in range(steps):
                p_la = e_la[k] * (v_la - v0_la)
                p_ra = e_ra[k] * (v_ra - v0_ra)
                p_rv = e_rv[k] * (v_rv - v0_rv)
                mitral, aortic = p_la - p_lv, p_lv - p_ars
                peak = max(peak, p_lv)
                arterial += p_ars
                current = (v_lv, p_lv, act[k], mitral, aortic)
                if aortic > 0.0 and previous[4] <= 0.0:
                    av_opened = True
                if previous[3] > 0.0 and mitral <= 0.0 and not av_opened:  # end-diastole
                    _event(0, 3, previous, current, k, dt, beat, j, solver, scalars, stretches)
                if previous[4] > 0.0 and aortic <= 0.0:  # end-systole
                    _event(1, 4, previous, current, k, dt, beat, j, solver, scalars, stretches)
                previous = current
                g_mv = _conductance(p_la, p_lv, smooth)
                g_av = _conductance(p_lv, p_ars, smooth)
                q_tv = (p_ra - p_rv) * _conductance(p_ra, p_rv, smooth)
                q_pv = (p_rv - p_arp) * _conductance(p_rv, p_arp, smooth)
                # LV pressure at the end of the step, linearised in the end-of-step volume.
                p_next, e_next = _lv_pressure(v_lv, act[k + 1], j, solver, iterations)
                v0 = v_lv - p_next / e_next
                dt_g_av = dt * g_av
                a11 = 1.0 + dt * e_next * (g_mv + g_av)
                a21 = -dt_g_av * e_next / c_ars
                a22 = 1.0 + dt_g_av / c_ars
                b1 = v_lv + dt * (p_la * g_mv + v0 * e_next * (g_mv + g_av))
                b2 = p_ars - dt / c_ars * (q_ars + v0 * e_next * g_av)
                det = a11 * a22 + dt_g_av * a21
                v_lv_new = (b1 * a22 + dt_g_av * b2) / det
                p_ars_new = (a11 * b2 - a21 * b1) / det
                p_lv_new = p_next + e_next * (v_lv_new - v_lv)
                # The LA loses exactly what the LV receives: blood volume is conserved.
                q_mv = (p_la - p_lv_new) * g_mv
                v_la += dt * (q_venp - q_mv)
                v_ra += dt * (q_vens - q_tv)
                v_rv += dt * (q_tv - q_pv)
                p_vens += dt / c_vens * (q_ars - q_vens)
                p_arp += dt / c_arp * (q_pv - q_arp)
                p_venp += dt / c_venp * (q_arp - q_venp)
                q_ars = _inertance(q_ars, p_ars - p_vens, r_ars, l_ars, dt)
                q_vens = _inertance(q_vens, p_vens - p_ra, r_vens, l_vens, dt)
                q_arp = _inertance(q_arp, p_arp - p_venp, r_arp, l_arp, dt)
                q_venp = _inertance(q_venp, p_venp - p_la, r_venp, l_venp, dt)
                v_lv, p_ars, p_lv = v_lv_new, p_ars_new, p_lv_new
            scalars[7, beat, j] = peak
            scalars[8, beat, j] = arterial / steps
        state[0, j], state[1, j], state[2, j], state[3, j] = v_la, v_lv, v_ra, v_rv
        state[4, j], state[5, j], state[6, j], state[7, j] = p_ars, p_vens, p_arp, p_venp
        state[8, j], state[9, j], state[10, j], state[11, j] = q_ars, q_vens, q_arp, q_venp


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def _event(event, gap, before, after, k, dt, beat, j, solver, scalars, stretches):
    """Store an end-diastolic (event 0: the mitral gap, index 3) or end-systolic (1: the
    aortic gap, 4) point, interpolated linearly to where the valve's pressure gap crosses
    zero between the previous step and this one, with the patch stretches solved there."""
    fraction = before[gap] / (before[gap] - after[gap])
    volume = before[0] + fraction * (after[0] - before[0])
    activation = before[2] + fraction * (after[2] - before[2])
    arrays, stretch, tension, work = solver
    solve_wall(volume * 1e-6, activation, j, arrays, stretch, tension, NEWTON_ITERATIONS, work)
    scalars[event, beat, j] = volume
    scalars[2 + event, beat, j] = before[1] + fraction * (after[1] - before[1])
    scalars[4 + event, beat, j] = (k - 1 + fraction) * dt
    if event == 1:
        scalars[6, beat, j] = activation
    stretches[event, beat, j, :] = stretch[j, :]
