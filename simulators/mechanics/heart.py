"""A patient's untreated infarcted heart, calibrated to the patient's volumes.

The regional LV of :mod:`.regional_lv` takes its region sizes from the patient's mesh. Its
healthy-myocardium elastances EA (active) and EB (passive) are then fitted so that the
untreated heart, beating in Regazzoni et al.'s closed loop, reaches the patient's measured
end-diastolic and end-systolic volumes (Gauss-Newton on log EA, log EB, with a
finite-difference Jacobian, damped Levenberg-Marquardt style when a step overshoots; the three
evaluations of each step integrate together). The unloaded volume V0 scales with the EDV from
the reference heart's (42 mL at 136.9 mL), and stays below 60% of the ESV so that high
ejection fractions remain reachable.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hydraopt.domain import Patient
from hydraopt.domain.mesh import REGION_BORDER_ZONE, REGION_SCAR, PatientMesh
from hydraopt.errors import DataError
from hydraopt_simulators.mechanics.closed_loop import (
    CHAMBERS,
    STATE_NAMES,
    SYSTEMIC,
    BeatRecord,
    LeftVentricle,
    initial_state,
    integrate_beats,
)
from hydraopt_simulators.mechanics.regional_lv import (
    BZ_TREATED,
    BZ_UNTREATED,
    REMOTE,
    SCAR,
    TissueProperties,
    build_regional_lv,
)

REFERENCE_EDV_ML = 136.85  # the reference heart's EDV with Regazzoni's default parameters
MMHG_TO_KPA = 0.133322


@dataclass(frozen=True)
class Integration:
    """How finely and how long to integrate: step, beats (fixed, or until EDV and ESV change
    by less than ``tolerance_ml`` per beat) and the valve law (see closed_loop)."""

    dt_s: float
    min_beats: int
    max_beats: int
    tolerance_ml: float
    valve_law: str = "smooth"


def steady_state(
    lv: LeftVentricle, state: np.ndarray, integration: Integration
) -> tuple[np.ndarray, BeatRecord, np.ndarray]:
    """Beat at least ``min_beats`` and then until EDV and ESV settle (at most ``max_beats``).
    Returns the state at the start of the next beat, the last beat's record and, per heart,
    the largest change of EDV or ESV over the last beat [mL]."""
    state, records = integrate_beats(
        lv, state, max(integration.min_beats, 2), integration.dt_s, integration.valve_law
    )
    previous, record = records[-2:]
    beats = len(records)
    while True:
        change = np.maximum(
            np.abs(record.edv_ml - previous.edv_ml), np.abs(record.esv_ml - previous.esv_ml)
        )
        if beats >= integration.max_beats or np.all(change < integration.tolerance_ml):
            return state, record, change
        previous = record
        state, (record,) = integrate_beats(lv, state, 1, integration.dt_s, integration.valve_law)
        beats += 1


@dataclass(frozen=True)
class PatientHeart:
    """The calibrated untreated heart of one patient."""

    patient_id: str
    region_fractions: dict[str, float]
    wall_volume_ml: float
    elastance_active: float
    elastance_passive: float
    v0_ml: float
    tissue: TissueProperties
    state: np.ndarray
    baseline: BeatRecord
    stress_scale: float

    def weights(self, bz_treated_share: np.ndarray) -> np.ndarray:
        """Region weights [n, 4] for designs covering the given share of the border zone."""
        bz = self.region_fractions["bz"]
        weights = np.zeros((len(bz_treated_share), 4))
        weights[:, REMOTE] = self.region_fractions["remote"]
        weights[:, BZ_TREATED] = bz * bz_treated_share
        weights[:, BZ_UNTREATED] = bz * (1.0 - bz_treated_share)
        weights[:, SCAR] = self.region_fractions["scar"]
        return weights


def region_fractions(mesh: PatientMesh) -> dict[str, float]:
    scar = mesh.region_volume_fraction(REGION_SCAR)
    bz = mesh.region_volume_fraction(REGION_BORDER_ZONE)
    return {"remote": 1.0 - scar - bz, "bz": bz, "scar": scar}


def calibrate(
    patient: Patient,
    mesh: PatientMesh,
    tissue: TissueProperties,
    integration: Integration,
    max_iterations: int = 30,
) -> PatientHeart:
    """Fit EA and EB so the untreated heart has the patient's EDV and ESV."""
    fractions = region_fractions(mesh)
    weights = np.tile([fractions["remote"], fractions["bz"], 0.0, fractions["scar"]], (3, 1))
    v0 = min(CHAMBERS["LV"]["V0"] * patient.edv_ml / REFERENCE_EDV_ML, 0.6 * patient.esv_ml)
    target = np.array([patient.edv_ml, patient.esv_ml])
    tolerance_ml = max(0.5, 0.005 * patient.edv_ml)
    x = np.log([CHAMBERS["LV"]["EA"], CHAMBERS["LV"]["EB"] * REFERENCE_EDV_ML / patient.edv_ml])
    # Remodelled, dilated hearts hold more blood: the extra LV volume is added to the
    # circulating volume (in the systemic veins), as in volume-overloaded heart failure.
    extra_blood = np.zeros((len(STATE_NAMES), 1))
    extra_blood[STATE_NAMES.index("p_VEN_SYS")] = (patient.edv_ml - REFERENCE_EDV_ML) / SYSTEMIC[
        "C_VEN"
    ]
    step = 0.02

    def evaluate(x: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Residual (EDV, ESV) - target at x, its Jacobian in (log EA, log EB), and states."""
        trial = x + np.array([[0.0, 0.0], [step, 0.0], [0.0, step]])
        state, record, _ = steady_state(_lv_for(weights, trial, v0, tissue), state, integration)
        volumes = np.stack([record.edv_ml, record.esv_ml], axis=1)  # [3, 2]
        return volumes[0] - target, (volumes[1:] - volumes[0]).T / step, state

    # Levenberg-Marquardt: Gauss-Newton steps, damped when a step makes things worse.
    residual, jacobian, state = evaluate(x, initial_state(3) + extra_blood)
    damping = 0.0
    for iteration in range(max_iterations + 1):
        if np.abs(residual).max() < tolerance_ml:
            break
        if iteration == max_iterations:
            volumes = residual + target
            raise DataError(
                f"patient {patient.patient_id!r}: the reference mechanics cannot reach "
                f"EDV {patient.edv_ml:g} mL and ESV {patient.esv_ml:g} mL (closest: "
                f"{volumes[0]:.1f} and {volumes[1]:.1f} mL); the scar and border zone leave too "
                "little contracting myocardium for this ejection fraction, or the volumes "
                "are outside what the closed loop can hold"
            )
        normal = jacobian.T @ jacobian
        move = np.linalg.solve(
            normal + damping * np.diag(np.diag(normal)) + 1e-12 * np.eye(2), -jacobian.T @ residual
        )
        candidate = x + np.clip(move, -0.5, 0.5)
        new_residual, new_jacobian, new_state = evaluate(
            candidate, np.repeat(state[:, :1], 3, axis=1)
        )
        if np.abs(new_residual).max() < np.abs(residual).max():
            x, residual, jacobian, state = candidate, new_residual, new_jacobian, new_state
            damping /= 3.0
        else:
            damping = max(4.0 * damping, 1e-2)
    lv = _lv_for(weights[:1], x[None, :], v0, tissue)
    final_state, baseline, _ = steady_state(lv, state[:, :1].copy(), integration)
    wall_volume = mesh.myocardial_volume_ml()
    remote_stress = (
        baseline.p_es_mmhg[0] * MMHG_TO_KPA * (1.0 + 3.0 * baseline.esv_ml[0] / wall_volume)
    )
    return PatientHeart(
        patient_id=patient.patient_id,
        region_fractions=fractions,
        wall_volume_ml=wall_volume,
        elastance_active=float(np.exp(x[0])),
        elastance_passive=float(np.exp(x[1])),
        v0_ml=v0,
        tissue=tissue,
        state=final_state[:, 0],
        baseline=baseline,
        stress_scale=patient.healthy_stress_kpa / remote_stress,
    )


def _lv_for(weights: np.ndarray, log_elastances: np.ndarray, v0: float, tissue: TissueProperties):
    """Regional LVs whose healthy elastances differ per heart (calibration trials)."""
    lv = build_regional_lv(weights, 1.0, 1.0, v0, tissue)
    ea = np.exp(log_elastances[:, 0])[:, None]
    eb = np.exp(log_elastances[:, 1])[:, None]
    lv.passive_mmhg_per_ml = eb * tissue.stiffness()[None, :]
    lv.active_mmhg_per_ml = ea * tissue.contractility()[None, :]
    return lv
