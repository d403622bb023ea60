"""The ``febio`` simulator: the patient's LV in FEBio 4, run as a subprocess per design.

The same outputs, names and units as ``reference-mechanics`` (so a ``[simulators.febio]``
table in place of ``[simulators.reference-mechanics]`` validates the same designs side by
side). Per patient, the heart is first unloaded (:mod:`.unloading`: the stress-free geometry
whose filling to the end-diastolic pressure is the patient's mesh); then per design and
follow-up time a FEBio model with the gel as it is then (:mod:`.lv_model`, :mod:`.feb_file`)
is filled to end-diastole and contracted to end-systole at the pressures of the patient's
calibrated untreated beat in reference-mechanics. The untreated heart is run alike at each
follow-up time, once per patient (per evaluation task), and every difference is treated minus
untreated.

Each run has its own folder (``design_00003/weeks_12/``: ``model.feb``, FEBio's log and data
files) and is read back from FEBio's logfile data (:mod:`.run`). A run that cannot be had
(FEBio missing, past its timeout, ended in error, output missing or malformed) fails its
design with the kind and an excerpt of FEBio's log; the others go on
(:mod:`hydraopt_simulators.external`). The displacement and myocyte fibre-stress fields come
back as XDMF time series (``fields.xdmf``), for ParaView. docs/physics.md §4.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field

from hydraopt import hookimpl
from hydraopt.domain import COVERAGE_PATTERNS, DesignBatch, Outcomes, Patient
from hydraopt.domain.mesh import PatientMesh
from hydraopt.plugin_types import SimulatorPlugin
from hydraopt_simulators.external import ProgramSettings
from hydraopt_simulators.mechanics.reference import (
    ReferenceMechanics,
    ReferenceMechanicsSettings,
    mesh_fingerprint,
)

if TYPE_CHECKING:
    from hydraopt_simulators.febio.lv_model import HeartState, Loading
    from hydraopt_simulators.hydrogel import GelState

VERSION = "1.0"


class FEBioSettings(ReferenceMechanicsSettings, ProgramSettings):
    """reference-mechanics' settings (follow-up times, endpoint, heart rate, whose
    calibration gives the loads) and how FEBio is run."""

    fidelity: Literal["screening", "validation"] = Field(
        "validation",
        description="Accepted so that reference-mechanics tables and the screen's simulate "
        "filters, which set it, carry over; FEBio solves the same model at either fidelity "
        "(a quasi-static hyperelastic solution does not depend on its load steps).",
    )
    executable: str = Field(
        "febio4",
        min_length=1,
        description="The FEBio 4 program: a name looked up on PATH or a path to the file.",
    )
    steps_per_phase: int = Field(
        10,
        ge=2,
        le=1000,
        description="Load steps from zero to end-diastolic pressure, and from there to "
        "end-systole (FEBio's automatic stepper may cut them).",
    )
    unload: bool = Field(
        True,
        description="Find the stress-free geometry whose filling to the end-diastolic "
        "pressure is the patient's mesh (backward displacement, a few passive FEBio runs per "
        "patient); false takes the mesh itself as stress-free.",
    )
    write_fields: bool = Field(
        True, description="Write each run's displacement and fibre-stress fields (XDMF)."
    )


@dataclass
class Untreated:
    """A patient's untreated heart: the loads, the unloaded geometry (None: the mesh) and
    its state at each follow-up time."""

    loading: Loading
    reference: np.ndarray | None
    states: dict[float, HeartState]


class FEBio:
    """reference-mechanics' outputs from FEBio finite-element runs."""

    def __init__(self, settings: FEBioSettings) -> None:
        self.settings = settings
        # The loading pressures come from the patient's calibrated closed loop.
        self._reference = ReferenceMechanics(
            ReferenceMechanicsSettings(
                fidelity="validation",
                followup_weeks=settings.followup_weeks,
                endpoint_weeks=settings.endpoint_weeks,
                heart_rate_bpm=settings.heart_rate_bpm,
            )
        )
        self.outputs = self._reference.outputs
        self._hearts: dict[tuple[Patient, str], Untreated] = {}

    def environment_problems(self) -> list[str]:
        """The program missing from this machine, if it is."""
        from hydraopt_simulators.external import missing_program

        return missing_program(self.settings.launcher, self.settings.executable)

    def simulate(
        self, patient: Patient, mesh: PatientMesh, designs: DesignBatch, workdir: Path
    ) -> Outcomes:
        from hydraopt.errors import DataError
        from hydraopt_simulators.external import EvaluationFailure, all_failed, evaluate_rows
        from hydraopt_simulators.hydrogel import polymer_feasibility

        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        infeasible, reasons = polymer_feasibility(designs)
        rows = np.flatnonzero(~infeasible)
        if not len(rows):  # nothing FEBio could run
            return all_failed(self.outputs, reasons, workdir)
        try:
            heart = self._untreated_heart(patient, mesh, workdir)
        except DataError as exc:  # the model cannot represent this patient
            return all_failed(self.outputs, np.where(infeasible, reasons, str(exc)), workdir)
        except EvaluationFailure as failure:  # no untreated heart: no differences
            why = np.where(infeasible, reasons, "untreated heart: " + failure.reason())
            return all_failed(self.outputs, why, workdir, failure)

        def evaluate(row: int) -> dict[str, float | np.ndarray]:
            design = designs.take(np.array([row]))
            return self._evaluate_design(
                patient, mesh, design, heart, workdir / f"design_{row:05d}"
            )

        return evaluate_rows(
            self.outputs, len(designs), rows, evaluate, infeasible, reasons, workdir
        )

    def _untreated_heart(self, patient: Patient, mesh: PatientMesh, workdir: Path) -> Untreated:
        """The loads, the unloaded geometry and the untreated heart at every follow-up time,
        each written to ``workdir`` (``loading.json``, ``unloading.json``,
        ``untreated.json``); computed once per patient and mesh by this simulator object
        (a design engine's link reuses it; each evaluation task builds its own)."""
        key = (patient, mesh_fingerprint(mesh))
        if key not in self._hearts:
            self._hearts[key] = self._new_untreated_heart(patient, mesh, workdir)
        return self._hearts[key]

    def _new_untreated_heart(self, patient: Patient, mesh: PatientMesh, workdir: Path) -> Untreated:
        from hydraopt_simulators.febio.lv_model import Loading
        from hydraopt_simulators.febio.unloading import unloaded_geometry
        from hydraopt_simulators.mechanics.myocardium import infarct_stiffness_ratio

        report = self._reference.heart(patient, mesh).report()
        loading = Loading(edp_mmhg=report["edp_mmhg"], esp_mmhg=report["esp_mmhg"])
        _write_json(workdir / "loading.json", {"patient_id": patient.patient_id, **report})
        reference = None
        if self.settings.unload:
            ratio = float(infarct_stiffness_ratio(patient.infarct_age_days))
            unloaded = unloaded_geometry(mesh, loading, ratio, workdir / "unloading", self.settings)
            _write_json(workdir / "unloading.json", unloaded.report())
            reference = unloaded.points_m
        heart = Untreated(loading, reference, {})
        for weeks in self.settings.followup_weeks:
            folder = workdir / "untreated" / _weeks_folder(weeks)
            heart.states[weeks] = self._run(patient, mesh, weeks, heart, folder)
        _write_json(
            workdir / "untreated.json",
            {
                "weeks_after_injection": {
                    f"{weeks:g}": {
                        "edv_ml": state.edv_ml,
                        "esv_ml": state.esv_ml,
                        "ef_pct": state.ef_pct,
                        "bz_stress_kpa": state.bz_stress_kpa,
                    }
                    for weeks, state in heart.states.items()
                }
            },
        )
        return heart

    def _evaluate_design(self, patient, mesh, design, heart: Untreated, folder: Path):
        from hydraopt_simulators.hydrogel import gel_state

        s = self.settings
        trajectory, treated_end = [], None
        for weeks in s.followup_weeks:
            gel = gel_state(design, patient.wall_thickness_mm, weeks)
            base = heart.states[weeks]
            if gel.present[0]:
                coverage = COVERAGE_PATTERNS[int(design.coverage_index[0])]
                folder_at = folder / _weeks_folder(weeks)
                state = self._run(patient, mesh, weeks, heart, folder_at, coverage, gel)
            else:  # the gel is gone: the untreated heart, not run again
                state = base
            trajectory.append(state.ef_pct - base.ef_pct)
            if weeks == s.endpoint_weeks:
                treated_end = state
        base = heart.states[s.endpoint_weeks]
        return {
            "delta_ef_pct": trajectory[s.followup_weeks.index(s.endpoint_weeks)],
            "edv_ml": treated_end.edv_ml,
            "esv_ml": treated_end.esv_ml,
            "edp_mmhg": heart.loading.edp_mmhg,
            "bz_stress_reduction_pct": 100.0
            * (1.0 - treated_end.bz_stress_kpa / base.bz_stress_kpa),
            "strain_normalization_pct": 100.0
            * (treated_end.footprint_strain - base.footprint_strain)
            / (base.remote_strain - base.footprint_strain),
            "stable": 1.0,
            "delta_ef_trajectory_pct": np.array(trajectory),
        }

    def _run(
        self,
        patient: Patient,
        mesh: PatientMesh,
        weeks: float,
        heart: Untreated,
        folder: Path,
        coverage: str | None = None,
        gel: GelState | None = None,
    ) -> HeartState:
        """One FEBio run of the heart ``weeks`` after injection, with ``gel`` (a one-design
        :class:`GelState`) over ``coverage``, or untreated: writes the model, runs FEBio,
        reads the heart's state."""
        from hydraopt_simulators.febio.run import run_febio
        from hydraopt_simulators.mechanics.myocardium import infarct_stiffness_ratio

        ratio = float(infarct_stiffness_ratio(patient.infarct_age_days + 7.0 * weeks))
        treated, g, modulus = None, 0.0, 0.0
        if gel is not None and coverage is not None:
            treated = mesh.treated(coverage)
            g, modulus = float(gel.thickness_ratio[0]), float(gel.modulus_kpa[0])
        return run_febio(
            mesh, treated, g, modulus, ratio, heart.loading, folder, self.settings, heart.reference
        )


def _write_json(path: Path, record: dict) -> None:
    path.write_text(json.dumps(record, indent=2) + "\n")


def _weeks_folder(weeks: float) -> str:
    return f"weeks_{weeks:g}"


@hookimpl
def hydraopt_simulators() -> Iterator[SimulatorPlugin]:
    yield SimulatorPlugin(
        name="febio",
        factory=FEBio,
        settings=FEBioSettings,
        description="the patient's LV in FEBio 4 (finite elements, Guccione active "
        "contraction), run as a subprocess per design",
        version=VERSION,
    )
