"""A patient's infarcted heart: its wall from the mesh, calibrated to the patient's volumes.

The wall's patches (:mod:`.wall`) take their tissue volumes from the patient's mesh and their
properties from :mod:`.myocardium`, with the infarct as stiff as its age makes it. Three
parameters are then fitted so that the untreated heart, beating in Regazzoni et al.'s closed
loop, reaches the patient's measured end-diastolic and end-systolic volumes at a normal mean
arterial pressure: the remote myocardium's active stress SfAct, the reference cavity volume
V_ref (the cavity at the reference sarcomere length, 2.0 um: remodelling sets it), and the
systemic arterial resistance (the baroreflex holds arterial pressure near normal whatever the
stroke volume; without it a large stroke volume would meet the reference resistance at a
hypertensive pressure). Levenberg-Marquardt on the logarithms, with a finite-difference
Jacobian whose four evaluations integrate together.

A dilated heart holds more blood: the LV's extra volume over the reference heart's (136.85 mL)
is added to the circulating blood, in the systemic veins (volume overload of heart failure).
The fit must stay physiological: SfAct within :data:`ACTIVE_STRESS_RANGE_PA`, the resistance
within :data:`RESISTANCE_SCALE_RANGE` of the reference and the end-diastolic pressure within
:data:`EDP_RANGE_MMHG`; a patient outside them, or whose volumes the model cannot reach, is a
clear error naming the patient and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hydraopt.domain import Patient
from hydraopt.domain.mesh import PatientMesh
from hydraopt.errors import DataError
from hydraopt_simulators.hydrogel import DAYS_PER_WEEK
from hydraopt_simulators.mechanics.closed_loop import (
    STATE_NAMES,
    SYSTEMIC,
    BeatRecord,
    initial_state,
    integrate_beats,
)
from hydraopt_simulators.mechanics.myocardium import (
    BORDER_ZONE_CONTRACTILITY,
    SF_ACTIVE_REFERENCE_PA,
    infarct_stiffness_ratio,
)
from hydraopt_simulators.mechanics.timing import CardiacTiming
from hydraopt_simulators.mechanics.wall import NEWTON_ITERATIONS, PatchVolumes, Wall

REFERENCE_EDV_ML = 136.85  # Regazzoni et al.'s reference heart
# A quarter to two and a half times CircAdapt's reference ventricular active stress (84 kPa):
# assumed bounds for remote myocardium, wide around the fitted human values (Genet et al., J
# Appl Physiol 2014;117:142: normal 143 +/- 11 kPa; Wenk et al. 2012: remote 109.5 kPa).
ACTIVE_STRESS_RANGE_PA = (0.25 * SF_ACTIVE_REFERENCE_PA, 2.5 * SF_ACTIVE_REFERENCE_PA)
# LV end-diastolic pressure of patients, normal to decompensated heart failure (assumed).
EDP_RANGE_MMHG = (2.0, 40.0)
# Mean arterial pressure the calibrated heart is held at: a typical adult value (assumed;
# 120/75 mmHg; patients' records here carry no blood pressure).
MEAN_ARTERIAL_PRESSURE_MMHG = 90.0
# Systemic arterial resistance over Regazzoni et al.'s: from vasodilated to the doubled
# resistance of severe heart failure (assumed bounds).
RESISTANCE_SCALE_RANGE = (0.4, 2.5)


@dataclass(frozen=True)
class Integration:
    """How finely and how long to integrate: step, beats (fixed, or until EDV and ESV change
    by less than ``tolerance_ml`` per beat) and the valve law (see closed_loop)."""

    dt_s: float
    min_beats: int
    max_beats: int
    tolerance_ml: float
    valve_law: str = "smooth"
    newton_iterations: int = NEWTON_ITERATIONS


def steady_state(
    wall: Wall,
    state: np.ndarray,
    integration: Integration,
    timing: CardiacTiming,
    resistance_scale: float | np.ndarray = 1.0,
) -> tuple[np.ndarray, BeatRecord, np.ndarray]:
    """Beat at least ``min_beats`` and then until EDV and ESV settle (at most ``max_beats``).
    Returns the state at the start of the next beat, the last beat's record and, per heart,
    the largest change of EDV or ESV over the last beat [mL]."""

    def beats(n: int) -> list[BeatRecord]:
        run = integration
        return integrate_beats(
            wall,
            state,
            n,
            run.dt_s,
            timing,
            run.valve_law,
            run.newton_iterations,
            resistance_scale,
        )[1]

    records = beats(max(integration.min_beats, 2))
    previous, record = records[-2:]
    count = len(records)
    while True:
        change = np.maximum(
            np.abs(record.edv_ml - previous.edv_ml), np.abs(record.esv_ml - previous.esv_ml)
        )
        settled = np.all(change[np.isfinite(change)] < integration.tolerance_ml)
        if count >= integration.max_beats or settled:
            return state, record, np.where(np.isfinite(change), change, np.inf)
        previous, (record,) = record, beats(1)
        count += 1


@dataclass(frozen=True)
class PatientHeart:
    """The calibrated untreated heart of one patient and how to build its treated walls."""

    patient_id: str
    volumes: PatchVolumes
    myocardium_m3: float
    active_stress_pa: float
    reference_cavity_ml: float
    infarct_age_days: float
    timing: CardiacTiming
    extra_blood_ml: float
    resistance_scale: float
    baseline: BeatRecord
    starts: dict = field(default_factory=dict, compare=False)

    def wall(
        self,
        coverage_index: np.ndarray,
        gel_ratio: np.ndarray,
        gel_modulus_kpa: np.ndarray,
        weeks: float,
    ) -> Wall:
        """Walls for designs with the given coverage (global index), gel volume over the
        treated myocardium's and gel modulus, ``weeks`` after the injection."""
        return build_wall(
            self.volumes,
            self.myocardium_m3,
            np.full(len(coverage_index), self.active_stress_pa),
            np.full(len(coverage_index), self.reference_cavity_ml),
            infarct_stiffness_ratio(self.infarct_age_days + DAYS_PER_WEEK * weeks),
            np.asarray(coverage_index),
            np.asarray(gel_ratio, dtype=float),
            np.asarray(gel_modulus_kpa, dtype=float) * 1e3,
        )

    def blood(self, n: int) -> np.ndarray:
        """The reference state for ``n`` hearts with this patient's circulating blood."""
        return with_extra_blood(initial_state(n), self.extra_blood_ml)

    def report(self) -> dict[str, float]:
        """The calibrated parameters and the untreated beat, with units in the names."""
        b = self.baseline
        return {
            "active_stress_kpa": self.active_stress_pa / 1e3,
            "active_stress_over_reference": self.active_stress_pa / SF_ACTIVE_REFERENCE_PA,
            "reference_cavity_volume_ml": self.reference_cavity_ml,
            "infarct_age_days": self.infarct_age_days,
            "infarct_stiffness_ratio": float(infarct_stiffness_ratio(self.infarct_age_days)),
            "extra_blood_ml": self.extra_blood_ml,
            "systemic_resistance_over_reference": self.resistance_scale,
            "mean_arterial_pressure_mmhg": float(b.mean_arterial_mmhg[0]),
            "heart_rate_bpm": self.timing.heart_rate_bpm,
            "edv_ml": float(b.edv_ml[0]),
            "esv_ml": float(b.esv_ml[0]),
            "ef_pct": float(b.ef_pct[0]),
            "edp_mmhg": float(b.edp_mmhg[0]),
            "esp_mmhg": float(b.esp_mmhg[0]),
            "peak_lv_pressure_mmhg": float(b.peak_p_lv_mmhg[0]),
        }


def build_wall(
    volumes: PatchVolumes,
    myocardium_m3: float,
    active_stress_pa: np.ndarray,
    reference_cavity_ml: np.ndarray,
    scar_stiffness: float,
    coverage_index: np.ndarray,
    gel_ratio: np.ndarray,
    gel_modulus_pa: np.ndarray,
) -> Wall:
    """Walls [n] from the patient's patch volumes (rows picked by coverage)."""
    remote = volumes.remote[coverage_index] * myocardium_m3
    border_zone = volumes.border_zone[coverage_index] * myocardium_m3
    scar = volumes.scar[coverage_index] * myocardium_m3
    viable = remote + border_zone
    contractility = np.divide(
        remote + BORDER_ZONE_CONTRACTILITY * border_zone,
        viable,
        out=np.zeros_like(viable),
        where=viable > 0,
    )
    # Reference mid-wall area: the sphere through the mid-wall at the reference cavity,
    # shared among patches by their myocardium (the wall is of even thickness).
    mid_volume = reference_cavity_ml * 1e-6 + 0.5 * myocardium_m3
    area = (36.0 * np.pi * mid_volume**2) ** (1.0 / 3.0)
    fraction = volumes.myocardium[coverage_index]
    gel = gel_ratio[:, None] * volumes.treated[coverage_index] * myocardium_m3
    wall = Wall(
        reference_area_m2=area[:, None] * fraction,
        viable_m3=viable,
        contractility=contractility,
        border_zone_m3=border_zone,
        scar_m3=scar,
        scar_stiffness=np.full_like(scar, scar_stiffness),
        gel_m3=gel,
        gel_modulus_pa=np.where(gel > 0, gel_modulus_pa[:, None], 0.0),
        active_stress_pa=np.asarray(active_stress_pa, dtype=float),
    )
    return wall


def with_extra_blood(state: np.ndarray, extra_ml: float) -> np.ndarray:
    state[STATE_NAMES.index("p_VEN_SYS")] += extra_ml / SYSTEMIC["C_VEN"]
    return state


def calibrate(
    patient: Patient,
    mesh: PatientMesh,
    integration: Integration,
    timing: CardiacTiming,
    max_iterations: int = 40,
) -> PatientHeart:
    """Fit SfAct, V_ref and the systemic resistance so that the untreated heart has the
    patient's EDV and ESV at the target mean arterial pressure."""
    volumes = PatchVolumes.from_mesh(mesh)
    myocardium = mesh.myocardial_volume_ml() * 1e-6
    stiffness = float(infarct_stiffness_ratio(patient.infarct_age_days))
    extra_blood = patient.edv_ml - REFERENCE_EDV_ML
    target = np.array([patient.edv_ml, patient.esv_ml, MEAN_ARTERIAL_PRESSURE_MMHG])
    tolerance = np.array([max(0.5, 0.005 * patient.edv_ml)] * 2 + [0.5])
    step = 0.02
    trials = np.vstack([np.zeros(3), step * np.eye(3)])

    def evaluate(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, BeatRecord]:
        """Residual (EDV, ESV, MAP) - target at x, its Jacobian in the logarithms of (SfAct,
        V_ref, resistance), and the beat at x; the four trials integrate together."""
        points = np.exp(x + trials)
        wall = build_wall(
            volumes,
            myocardium,
            points[:, 0],
            points[:, 1],
            stiffness,
            np.zeros(4, dtype=int),
            np.zeros(4),
            np.zeros(4),
        )
        state = with_extra_blood(initial_state(4), extra_blood)
        _, record, _ = steady_state(wall, state, integration, timing, points[:, 2])
        found = np.stack([record.edv_ml, record.esv_ml, record.mean_arterial_mmhg], axis=1)
        first = BeatRecord(**{key: value[:1] for key, value in vars(record).items()})
        if not np.all(np.isfinite(found)):
            return np.full(3, np.inf), np.eye(3), first
        return found[0] - target, (found[1:] - found[0]).T / step, first

    x = np.log([SF_ACTIVE_REFERENCE_PA, 0.5 * patient.edv_ml, 1.0])
    residual, jacobian, record = evaluate(x)
    damping = 0.0
    for iteration in range(max_iterations + 1):
        if np.all(np.abs(residual) < tolerance):
            break
        if iteration == max_iterations or not np.all(np.isfinite(jacobian)):
            raise DataError(
                f"patient {patient.patient_id!r}: the reference mechanics cannot reach EDV "
                f"{patient.edv_ml:g} mL and ESV {patient.esv_ml:g} mL at a mean arterial "
                f"pressure of {MEAN_ARTERIAL_PRESSURE_MMHG:g} mmHg (closest: "
                f"{residual[0] + target[0]:.1f} and {residual[1] + target[1]:.1f} mL); the "
                "scar and border zone leave too little contracting myocardium for this "
                "ejection fraction, or the volumes are outside what the closed loop can hold"
            )
        # Residuals in units of their tolerances, so volumes and pressure weigh alike.
        scaled = jacobian / tolerance[:, None]
        normal = scaled.T @ scaled
        move = np.linalg.solve(
            normal + damping * np.diag(np.diag(normal)) + 1e-12 * np.eye(3),
            -scaled.T @ (residual / tolerance),
        )
        candidate = x + np.clip(move, -0.5, 0.5)
        new = evaluate(candidate)
        if np.abs(new[0] / tolerance).max() < np.abs(residual / tolerance).max():
            x, (residual, jacobian, record) = candidate, new
            damping /= 3.0
        else:
            damping = max(4.0 * damping, 1e-2)
    heart = PatientHeart(
        patient_id=patient.patient_id,
        volumes=volumes,
        myocardium_m3=myocardium,
        active_stress_pa=float(np.exp(x[0])),
        reference_cavity_ml=float(np.exp(x[1])),
        infarct_age_days=patient.infarct_age_days,
        timing=timing,
        extra_blood_ml=extra_blood,
        resistance_scale=float(np.exp(x[2])),
        baseline=record,
    )
    _check_physiological(patient, heart)
    return heart


def _check_physiological(patient: Patient, heart: PatientHeart) -> None:
    """Every fitted or resulting value within its physiological range, or a clear error."""
    volumes = f"EDV {patient.edv_ml:g} mL and ESV {patient.esv_ml:g} mL"
    pressure = f"a mean arterial pressure of {MEAN_ARTERIAL_PRESSURE_MMHG:g} mmHg"
    checks = (
        (
            heart.active_stress_pa / 1e3,
            np.divide(ACTIVE_STRESS_RANGE_PA, 1e3),
            f"reaching {volumes} needs a remote active stress of",
            " kPa",
        ),
        (
            heart.resistance_scale,
            RESISTANCE_SCALE_RANGE,
            f"holding {pressure} needs a systemic resistance, over the reference, of",
            "",
        ),
        (
            float(heart.baseline.edp_mmhg[0]),
            EDP_RANGE_MMHG,
            "the calibrated heart fills at an end-diastolic pressure of",
            " mmHg",
        ),
    )
    for value, (low, high), what, unit in checks:
        if not low <= value <= high:
            raise DataError(
                f"patient {patient.patient_id!r}: {what} {value:.3g}{unit}, outside the "
                f"physiological {low:g}-{high:g}{unit}: the model cannot represent this patient"
            )
