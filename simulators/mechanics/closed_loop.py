"""The closed-loop circulation of Regazzoni et al. (2022), integrated for many hearts at once.

Regazzoni F, Salvador M, Africa PC, Fedele M, Dedè L, Quarteroni A. A cardiac electromechanics
model coupled with a lumped-parameter model for closed-loop blood circulation.
J Comput Phys 2022;457:111083. The parameters, equations, valve law and activation function are
those of the maintained implementation ``circulation.regazzoni2020`` (Finsberg et al.), which a
test reproduces; only the left ventricle is replaced, by any model that gives the LV pressure
from its volume at time t (here, :mod:`.regional_lv`).

States (12): chamber volumes V_LA, V_LV, V_RA, V_RV [mL]; arterial and venous pressures
p_AR_SYS, p_VEN_SYS, p_AR_PUL, p_VEN_PUL [mmHg]; flows Q_AR_SYS, Q_VEN_SYS, Q_AR_PUL,
Q_VEN_PUL [mL/s]. With chamber pressures p = E(t) (V - V0) and valve flows
Q = (p_up - p_down) / R(p_up, p_down):

    dV_LA/dt = Q_VEN_PUL - Q_MV          C_AR_SYS dp_AR_SYS/dt = Q_AV - Q_AR_SYS
    dV_LV/dt = Q_MV - Q_AV               C_VEN_SYS dp_VEN_SYS/dt = Q_AR_SYS - Q_VEN_SYS
    dV_RA/dt = Q_VEN_SYS - Q_TV          C_AR_PUL dp_AR_PUL/dt = Q_PV - Q_AR_PUL
    dV_RV/dt = Q_TV - Q_PV               C_VEN_PUL dp_VEN_PUL/dt = Q_AR_PUL - Q_VEN_PUL
    L_AR_SYS dQ_AR_SYS/dt = p_AR_SYS - p_VEN_SYS - R_AR_SYS Q_AR_SYS   (and alike for the
    systemic veins into the RA, pulmonary arteries, pulmonary veins into the LA)

Valve resistance R = 10^(log10 Rmin + (log10 Rmax - log10 Rmin) H(p_down - p_up)) with the
smooth step H(x) = arctan(100 pi x) / pi + 1/2. Elastance E(t) = EB + EA e(t), e(t) a
raised-cosine contraction over TC and relaxation over TR from the onset tC (Blanco & Feijóo
2010), periodic with RR = 1/HR.

Time stepping (all hearts of a batch together, NumPy arrays of shape [n]): the LV-aortic pair is
the stiff part (time constant R_AV / E_LV ~ 2 ms), so V_LV and p_AR_SYS are advanced implicitly
(a 2x2 linear solve per heart, valve resistances frozen over the step) and every other state
explicitly (forward Euler, as the reference implementation does). The scheme is first order
and stable for steps of several milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Regazzoni et al. 2022, Table 1 / circulation.regazzoni2020.default_parameters().
# Units: elastance mmHg/mL, times s, volumes mL, resistance mmHg s/mL, compliance mL/mmHg,
# inertance mmHg s^2/mL.
HEART_RATE_HZ = 1.25
CHAMBERS = {
    "LA": {"EA": 0.07, "EB": 0.18, "TC": 0.17, "TR": 0.17, "tC": 0.9, "V0": 4.0},
    "LV": {"EA": 4.482, "EB": 0.170, "TC": 0.25, "TR": 0.4, "tC": 0.1, "V0": 42.0},
    "RA": {"EA": 0.06, "EB": 0.07, "TC": 0.17, "TR": 0.17, "tC": 0.9, "V0": 4.0},
    "RV": {"EA": 0.200, "EB": 0.029, "TC": 0.25, "TR": 0.4, "tC": 0.1, "V0": 16.0},
}
VALVE_R_MIN = 0.0075  # mmHg s/mL, all four valves
VALVE_R_MAX = 75006.2
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
# A state on the limit cycle of the default parameters (start of a beat).
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
VALVE_STEEPNESS = 200.0


def activation(t: np.ndarray | float, tC: float, TC: float, TR: float, RR: float) -> np.ndarray:
    """Blanco & Feijóo's raised-cosine activation e(t) in [0, 1], periodic with RR."""
    since_onset = np.mod(t - tC, RR)
    since_relax = np.mod(t - tC - TC, RR)
    contracting = 0.5 * (1 - np.cos(np.pi / TC * since_onset)) * (since_onset < TC)
    relaxing = 0.5 * (1 + np.cos(np.pi / TR * since_relax)) * (since_relax < TR)
    return np.clip(contracting + relaxing, 0.0, 1.0)


def elastance(chamber: str, t: float, RR: float) -> float:
    c = CHAMBERS[chamber]
    return c["EB"] + c["EA"] * float(activation(t, c["tC"], c["TC"], c["TR"], RR))


def valve_conductance(p_up: np.ndarray, p_down: np.ndarray) -> np.ndarray:
    """1 / R of the smoothly switching valve (open when p_up > p_down)."""
    step = np.arctan(np.pi / 2 * VALVE_STEEPNESS * (p_down - p_up)) / np.pi + 0.5
    return (VALVE_R_MIN * (VALVE_R_MAX / VALVE_R_MIN) ** step) ** -1.0


class LeftVentricle:
    """What the closed loop needs of an LV model, for a batch of hearts.

    ``compliance(t)`` is the LV's chamber compliance dV/dp at time t [mL/mmHg], shape [n], and
    ``v0`` its unloaded volume [mL]: p_LV = (V_LV - v0) / compliance(t). A model whose pressure
    is not of this form would need a nonlinear solve in the implicit step.
    """

    v0: np.ndarray

    def compliance(self, t: float) -> np.ndarray: ...


@dataclass
class BeatRecord:
    """Per heart, over one beat: end-diastolic (maximum) and end-systolic (minimum) LV volume
    and the time and pressure at each, and the peak LV pressure."""

    edv_ml: np.ndarray
    esv_ml: np.ndarray
    p_ed_mmhg: np.ndarray
    p_es_mmhg: np.ndarray
    t_ed_s: np.ndarray
    t_es_s: np.ndarray
    peak_p_lv_mmhg: np.ndarray

    @property
    def ef_pct(self) -> np.ndarray:
        return 100.0 * (self.edv_ml - self.esv_ml) / self.edv_ml


def initial_state(n: int) -> np.ndarray:
    """The reference limit-cycle state for ``n`` hearts, shape [12, n]."""
    return np.repeat(np.array(list(INITIAL_STATE.values()))[:, None], n, axis=1)


def integrate_beats(
    lv: LeftVentricle,
    state: np.ndarray,
    n_beats: int,
    dt_s: float,
    valve_law: str = "smooth",
) -> tuple[np.ndarray, list[BeatRecord]]:
    """Advance ``state`` ([12, n], modified in place) by ``n_beats`` beats; return the final
    state and one :class:`BeatRecord` per beat.

    ``valve_law`` "smooth" is the reference law above; "ideal" switches between Rmin and Rmax
    at equal pressures, its limit (the smooth step is 0.01 mmHg wide), at a fraction of the
    cost, for screening."""
    RR = 1.0 / HEART_RATE_HZ
    steps = round(RR / dt_s)
    dt = RR / steps
    n = state.shape[1]
    (V_LA, V_LV, V_RA, V_RV, p_ars, p_vens, p_arp, p_venp, Q_ars, Q_vens, Q_arp, Q_venp) = state
    s, p = SYSTEMIC, PULMONARY
    la, ra, rv = CHAMBERS["LA"], CHAMBERS["RA"], CHAMBERS["RV"]
    times = np.arange(steps + 1) * dt
    # Everything that depends on time alone, once per call rather than once per step.
    E_LA, E_RA, E_RV = (np.array([elastance(c, t, RR) for t in times]) for c in ("LA", "RA", "RV"))
    compliance = np.stack([lv.compliance(t) for t in times])  # [steps + 1, n]
    elastance_lv = 1.0 / compliance
    conductance = valve_conductance if valve_law == "smooth" else ideal_valve_conductance
    v0 = lv.v0
    volume_trace = np.empty((steps, n))
    pressure_trace = np.empty((steps, n))
    records = []
    for _beat in range(n_beats):
        for k in range(steps):
            p_LA = E_LA[k] * (V_LA - la["V0"])
            p_RA = E_RA[k] * (V_RA - ra["V0"])
            p_RV = E_RV[k] * (V_RV - rv["V0"])
            p_LV = (V_LV - v0) * elastance_lv[k]
            volume_trace[k] = V_LV
            pressure_trace[k] = p_LV
            G_MV = conductance(p_LA, p_LV)
            G_AV = conductance(p_LV, p_ars)
            Q_TV = (p_RA - p_RV) * conductance(p_RA, p_RV)
            Q_PV = (p_RV - p_arp) * conductance(p_RV, p_arp)
            # Implicit LV-aorta block: unknowns V_LV', p_AR_SYS' (valves frozen over the step),
            # with p_LV' = E' (V_LV' - v0) and E' the LV elastance at the end of the step.
            E_next = elastance_lv[k + 1]
            dt_G_AV = dt * G_AV
            a11 = 1.0 + dt * E_next * (G_MV + G_AV)
            a21 = -dt_G_AV * E_next / s["C_AR"]
            a22 = 1.0 + dt_G_AV / s["C_AR"]
            b1 = V_LV + dt * (p_LA * G_MV + v0 * E_next * (G_MV + G_AV))
            b2 = p_ars - dt / s["C_AR"] * (Q_ars + v0 * E_next * G_AV)
            det = a11 * a22 + dt_G_AV * a21  # a12 = -dt G_AV
            V_LV_new = (b1 * a22 + dt_G_AV * b2) / det
            p_ars_new = (a11 * b2 - a21 * b1) / det
            # The LA loses exactly what the LV receives, so blood volume is conserved.
            Q_MV = (p_LA - (V_LV_new - v0) * E_next) * G_MV
            # Forward Euler for the other volumes and pressures, as the reference does.
            V_LA += dt * (Q_venp - Q_MV)
            V_RA += dt * (Q_vens - Q_TV)
            V_RV += dt * (Q_TV - Q_PV)
            p_vens += dt / s["C_VEN"] * (Q_ars - Q_vens)
            p_arp += dt / p["C_AR"] * (Q_PV - Q_arp)
            p_venp += dt / p["C_VEN"] * (Q_arp - Q_venp)
            # Flows through the inertances: L dQ/dt = dp - R Q, with the R/L decay (as fast
            # as 1.6 ms in the systemic veins) taken implicitly.
            _inertance_step(Q_ars, p_ars - p_vens, s["R_AR"], s["L_AR"], dt)
            _inertance_step(Q_vens, p_vens - p_RA, s["R_VEN"], s["L_VEN"], dt)
            _inertance_step(Q_arp, p_arp - p_venp, p["R_AR"], p["L_AR"], dt)
            _inertance_step(Q_venp, p_venp - p_LA, p["R_VEN"], p["L_VEN"], dt)
            V_LV[:] = V_LV_new
            p_ars[:] = p_ars_new
        records.append(_record(times[:-1], volume_trace, pressure_trace))
    return state, records


def ideal_valve_conductance(p_up: np.ndarray, p_down: np.ndarray) -> np.ndarray:
    """The valve law's limit: open (1/Rmin) when p_up > p_down, closed (1/Rmax) otherwise."""
    return np.where(p_up > p_down, 1.0 / VALVE_R_MIN, 1.0 / VALVE_R_MAX)


def _record(times: np.ndarray, volume: np.ndarray, pressure: np.ndarray) -> BeatRecord:
    columns = np.arange(volume.shape[1])
    ed, es = volume.argmax(axis=0), volume.argmin(axis=0)
    return BeatRecord(
        edv_ml=volume[ed, columns],
        esv_ml=volume[es, columns],
        p_ed_mmhg=pressure[ed, columns],
        p_es_mmhg=pressure[es, columns],
        t_ed_s=times[ed],
        t_es_s=times[es],
        peak_p_lv_mmhg=pressure.max(axis=0),
    )


def _inertance_step(Q: np.ndarray, dp: np.ndarray, R: float, L: float, dt: float) -> None:
    """Q <- Q + dt/L (dp - R Q_new), solved for Q_new, in place."""
    Q += dt / L * dp
    Q /= 1.0 + dt * R / L
