"""The ``reference-mechanics`` simulator: hydrogel designs on a patient's infarcted heart.

For each design and follow-up time, the patient's wall (:mod:`.heart`, :mod:`.wall`) with the
gel as it is at that time (:mod:`hydraopt_simulators.hydrogel`) and the infarct as healed as
it is by then beats in the closed loop (:mod:`.closed_loop`) from the untreated heart's
steady beat at that time. All designs of a batch integrate together, and beside them the
untreated heart with each coverage pattern's patches, so that no gel means no effect to the
last bit. See docs/physics.md for every equation, parameter and source.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from hydraopt import hookimpl
from hydraopt.domain import DesignBatch, Outcomes, OutputSpec, Patient
from hydraopt.domain.mesh import PatientMesh
from hydraopt.plugin_types import PluginSettings, SimulatorPlugin

# 2.1: a patient the model cannot represent marks every design failed instead of raising.
VERSION = "2.1"
BATCH = 4096
# Screening: time step, and beats of the first follow-up and of each later one.
SCREENING_STEP_S = 8e-3
SCREENING_BEATS = (2, 2)
# A heart whose EDV still moves by more than this fraction over its last beat is unstable.
SETTLED_FRACTION = 0.01


class ReferenceMechanicsSettings(PluginSettings):
    fidelity: Literal["screening", "validation"] = Field(
        "screening",
        description="'screening': 8 ms steps, ideal valves, 4 beats per follow-up; "
        "'validation': 1 ms steps, smooth valves, until the beat settles.",
    )
    followup_weeks: list[float] = Field(
        default_factory=lambda: [1.0, 4.0, 12.0, 26.0],
        min_length=1,
        description="Follow-up times of the delta-EF trajectory, weeks after injection.",
    )
    endpoint_weeks: float = Field(
        12.0, description="Follow-up time of the scalar outputs; one of followup_weeks."
    )
    heart_rate_bpm: float = Field(
        75.0, ge=40.0, le=150.0, description="Heart rate; chamber timings scale with it."
    )

    @model_validator(mode="after")
    def _endpoint_is_a_followup(self) -> ReferenceMechanicsSettings:
        if self.endpoint_weeks not in self.followup_weeks:
            raise ValueError(
                f"endpoint_weeks {self.endpoint_weeks:g} must be one of "
                f"followup_weeks {self.followup_weeks}"
            )
        if sorted(self.followup_weeks) != self.followup_weeks or min(self.followup_weeks) < 0:
            raise ValueError("followup_weeks must be non-negative and increasing")
        return self


class ReferenceMechanics:
    """Patch-wall mechanics of the infarcted LV in a closed-loop circulation."""

    def __init__(self, settings: ReferenceMechanicsSettings) -> None:
        self.settings = settings
        n_times = len(settings.followup_weeks)
        self.outputs = (
            OutputSpec(
                "delta_ef_pct", "%-points", "change in LV ejection fraction at the endpoint"
            ),
            OutputSpec("edv_ml", "mL", "end-diastolic volume after treatment (endpoint)"),
            OutputSpec("esv_ml", "mL", "end-systolic volume after treatment (endpoint)"),
            OutputSpec("edp_mmhg", "mmHg", "end-diastolic LV pressure after treatment (endpoint)"),
            OutputSpec(
                "bz_stress_reduction_pct",
                "%",
                "reduction of border-zone end-systolic myocyte fibre stress (endpoint)",
            ),
            OutputSpec(
                "strain_normalization_pct",
                "%",
                "share of the infarct's fibre-strain deficit against remote recovered (endpoint)",
            ),
            OutputSpec("stable", "1", "1 when the treated heart reaches a settled beat"),
            OutputSpec(
                "delta_ef_trajectory_pct",
                "%-points",
                "change in EF at each follow-up time",
                shape=(n_times,),
            ),
        )
        self._hearts: dict[tuple[Patient, str], object] = {}

    def heart(self, patient: Patient, mesh: PatientMesh):
        """The patient's calibrated untreated heart (computed once per patient and mesh)."""
        from hydraopt_simulators.mechanics.heart import calibrate
        from hydraopt_simulators.mechanics.timing import CardiacTiming

        key = (patient, mesh_fingerprint(mesh))
        if key not in self._hearts:
            timing = CardiacTiming.physiological(self.settings.heart_rate_bpm)
            self._hearts[key] = calibrate(patient, mesh, self._settling(), timing)
        return self._hearts[key]

    def simulate(
        self, patient: Patient, mesh: PatientMesh, designs: DesignBatch, workdir: Path | None
    ) -> Outcomes:
        from hydraopt.errors import DataError
        from hydraopt_simulators.hydrogel import polymer_feasibility

        try:
            heart = self.heart(patient, mesh)
        except DataError as exc:  # the model cannot represent this patient: a result, not a crash
            return self._unrepresented(len(designs), str(exc))
        if workdir is not None:
            report = {"patient_id": patient.patient_id, **heart.report()}
            (Path(workdir) / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
        infeasible, reasons = polymer_feasibility(designs)
        ok = np.flatnonzero(~infeasible)
        values = {spec.name: np.full((len(designs), *spec.shape), np.nan) for spec in self.outputs}
        failed = infeasible.copy()
        for start in range(0, len(ok), BATCH):
            rows = ok[start : start + BATCH]
            results, problem = self._evaluate(patient, heart, designs.take(rows))
            for name, column in results.items():
                values[name][rows] = column
            bad = rows[problem != ""]
            for name in values:
                values[name][bad] = np.nan
            reasons[bad] = problem[problem != ""]
            failed[bad] = True
        return Outcomes(self.outputs, values, failed, reasons)

    def _unrepresented(self, n: int, reason: str) -> Outcomes:
        values = {spec.name: np.full((n, *spec.shape), np.nan) for spec in self.outputs}
        return Outcomes(
            self.outputs, values, np.ones(n, dtype=bool), np.full(n, reason, dtype=object)
        )

    def _integration(self, first: bool = False):
        """How to integrate a follow-up; ``first``: the first, started from the untreated
        heart (at screening it has further to go than a later one, started from the design's
        own beat at the previous follow-up)."""
        from hydraopt_simulators.mechanics.heart import Integration

        if self.settings.fidelity == "validation":
            return Integration(dt_s=1e-3, min_beats=3, max_beats=150, tolerance_ml=0.01)
        beats = SCREENING_BEATS[0 if first else 1]
        return Integration(
            dt_s=SCREENING_STEP_S,
            min_beats=beats,
            max_beats=beats,
            tolerance_ml=np.inf,
            valve_law="ideal",
            newton_iterations=1,
        )

    def _settling(self):
        """Calibration and untreated starts need the settled beat at either fidelity."""
        from hydraopt_simulators.mechanics.heart import Integration

        run = self._integration()
        return Integration(
            run.dt_s, 3, 150, min(run.tolerance_ml, 0.01), run.valve_law, run.newton_iterations
        )

    def _untreated_start(self, heart, weeks: float) -> tuple[np.ndarray, np.ndarray, float]:
        """The untreated heart's settled beat ``weeks`` after injection: state, patch
        stretches and tension at the start of a beat (computed once per time)."""
        from hydraopt_simulators.mechanics.heart import steady_state

        if weeks not in heart.starts:
            wall = heart.wall(np.zeros(1, dtype=int), np.zeros(1), np.zeros(1), weeks)
            state, _, _ = steady_state(
                wall, heart.blood(1), self._settling(), heart.timing, heart.resistance_scale
            )
            heart.starts[weeks] = (state[:, 0], wall.stretch[0].copy(), float(wall.tension[0]))
        return heart.starts[weeks]

    def _evaluate(
        self, patient: Patient, heart, designs: DesignBatch
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Every follow-up time in turn. A design whose gel is gone is the untreated heart
        (copied from it, not integrated); the others start from their own beat at the previous
        follow-up (the first from the untreated heart's), the nearest state to their new
        steady beat."""
        from hydraopt_simulators.hydrogel import gel_state

        s = self.settings
        coverages, of_coverage = np.unique(designs.coverage_index, return_inverse=True)
        carried = None
        trajectory, endpoint = [], {}
        for weeks in s.followup_weeks:
            gel = gel_state(designs, patient.wall_thickness_mm, weeks)
            rows = np.flatnonzero(gel.present)
            beat, carried = self._beat(heart, designs, gel, rows, coverages, weeks, carried)
            # Column of each design in the beat: its own, or its coverage's untreated heart.
            column = len(rows) + of_coverage
            column[rows] = np.arange(len(rows))
            untreated = len(rows) + of_coverage
            trajectory.append(beat["ef_pct"][column] - beat["ef_pct"][untreated])
            if weeks == s.endpoint_weeks:
                endpoint = {key: (value[column], value[untreated]) for key, value in beat.items()}
        treated, untreated = ({key: pair[k] for key, pair in endpoint.items()} for k in (0, 1))
        results = {
            "delta_ef_pct": trajectory[s.followup_weeks.index(s.endpoint_weeks)],
            "edv_ml": treated["edv_ml"],
            "esv_ml": treated["esv_ml"],
            "edp_mmhg": treated["edp_mmhg"],
            "bz_stress_reduction_pct": 100.0
            * (1.0 - treated["bz_stress_pa"] / untreated["bz_stress_pa"]),
            "strain_normalization_pct": 100.0
            * (treated["infarct_strain"] - untreated["infarct_strain"])
            / (untreated["remote_strain"] - untreated["infarct_strain"]),
            "stable": (treated["change_ml"] < SETTLED_FRACTION * treated["edv_ml"]).astype(float),
            "delta_ef_trajectory_pct": np.stack(trajectory, axis=1),
        }
        return results, _problems(treated, results["delta_ef_trajectory_pct"])

    def _beat(self, heart, designs, gel, rows, coverages, weeks, carried):
        """The settled beat of the designs ``rows`` (whose gel is present) and of the untreated
        heart with each coverage pattern, ``weeks`` after injection. Returns the beat's
        measures per column and the designs' end states (:class:`Carried`), to start the next
        time from."""
        from hydraopt_simulators.mechanics.heart import steady_state
        from hydraopt_simulators.mechanics.wall import INFARCT, REMOTE

        integration = self._integration(first=carried is None)
        zeros = np.zeros(len(coverages))
        wall = heart.wall(
            np.concatenate([designs.coverage_index[rows], coverages]),
            np.concatenate([gel.thickness_ratio[rows], zeros]),
            np.concatenate([gel.modulus_kpa[rows], zeros]),
            weeks,
        )
        state0, stretch0, tension0 = self._untreated_start(heart, weeks)
        state = np.repeat(state0[:, None], len(wall), axis=1)
        wall.stretch[:] = stretch0
        wall.tension[:] = tension0
        if carried is None:
            carried = Carried.untreated(state0, stretch0, tension0, len(designs))
        state[:, : len(rows)] = carried.state[:, rows]
        wall.stretch[: len(rows)] = carried.stretch[rows]
        wall.tension[: len(rows)] = carried.tension[rows]
        _, record, change = steady_state(
            wall, state, integration, heart.timing, heart.resistance_scale
        )
        carried.keep(rows, state[:, : len(rows)], wall)
        strain = np.log(record.stretch_es / record.stretch_ed)
        beat = {
            "ef_pct": record.ef_pct,
            "edv_ml": record.edv_ml,
            "esv_ml": record.esv_ml,
            "edp_mmhg": record.edp_mmhg,
            "bz_stress_pa": wall.border_zone_stress_pa(record.stretch_es, record.activation_es),
            "infarct_strain": strain[:, INFARCT],
            "remote_strain": strain[:, REMOTE],
            "change_ml": change,
            "ejected": record.ejected,
            "at_stretch_limit": _at_stretch_limit(record),
        }
        return beat, carried


@dataclass
class Carried:
    """Each design's end state at the previous follow-up, to start the next one from: the
    circulation's state [12, n], the wall's stretches [n, P] and tension [n]."""

    state: np.ndarray
    stretch: np.ndarray
    tension: np.ndarray

    @classmethod
    def untreated(cls, state, stretch, tension, n: int) -> Carried:
        return cls(
            np.repeat(state[:, None], n, axis=1),
            np.repeat(stretch[None], n, axis=0),
            np.full(n, tension),
        )

    def keep(self, rows: np.ndarray, state: np.ndarray, wall) -> None:
        self.state[:, rows] = state
        self.stretch[rows] = wall.stretch[: len(rows)]
        self.tension[rows] = wall.tension[: len(rows)]


def _at_stretch_limit(record) -> np.ndarray:
    from hydraopt_simulators.mechanics.wall import STRETCH_BOUNDS

    low, high = STRETCH_BOUNDS
    return np.any((record.stretch_es <= low) | (record.stretch_ed >= high), axis=1)


def _problems(treated: dict[str, np.ndarray], trajectory: np.ndarray) -> np.ndarray:
    """Why a treated heart is not a valid result ('' when it is)."""
    problem = np.full(len(trajectory), "", dtype=object)
    problem[treated["at_stretch_limit"]] = "the treated wall reached the limits of sarcomere length"
    problem[~np.all(np.isfinite(trajectory), axis=1)] = "the treated heart did not eject"
    problem[~treated["ejected"]] = "the treated heart did not eject"
    return problem


def mesh_fingerprint(mesh: PatientMesh) -> str:
    """What the calibration depends on: the geometry and the tissue tags."""
    import hashlib

    digest = hashlib.sha256(mesh.points_m.tobytes())
    digest.update(mesh.tetrahedra.tobytes())
    for name in ("region", "infarct_footprint"):
        digest.update(np.asarray(mesh.cell_data[name]).tobytes())
    return digest.hexdigest()


@hookimpl
def hydraopt_simulators() -> Iterator[SimulatorPlugin]:
    yield SimulatorPlugin(
        name="reference-mechanics",
        factory=ReferenceMechanics,
        settings=ReferenceMechanicsSettings,
        description="infarcted LV as CircAdapt patches sharing a cavity, in Regazzoni et al.'s "
        "closed-loop circulation",
        version=VERSION,
    )
