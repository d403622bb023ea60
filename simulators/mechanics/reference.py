"""The ``reference-mechanics`` simulator: hydrogel designs on a patient's infarcted heart.

For each design and follow-up time, the regional LV (:mod:`.regional_lv`) with the gel's
effect at that time (:mod:`.hydrogel`) beats in the closed loop (:mod:`.closed_loop`) from the
patient's untreated steady state (:mod:`.heart`); all designs of a batch integrate together.
See docs/physics.md for every equation, parameter and source.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from hydraopt import hookimpl
from hydraopt.domain import COVERAGE_PATTERNS, DesignBatch, Outcomes, OutputSpec, Patient
from hydraopt.domain.mesh import REGION_BORDER_ZONE, PatientMesh
from hydraopt.plugin_types import PluginSettings, SimulatorPlugin
from hydraopt_simulators.hydrogel import (
    gel_state,
    load_share,
    polymer_feasibility,
)
from hydraopt_simulators.mechanics.closed_loop import BeatRecord
from hydraopt_simulators.mechanics.heart import (
    MMHG_TO_KPA,
    Integration,
    PatientHeart,
    calibrate,
    steady_state,
)
from hydraopt_simulators.mechanics.regional_lv import (
    BZ_TREATED,
    BZ_UNTREATED,
    REMOTE,
    SCAR,
    RegionalLV,
    TissueProperties,
    build_regional_lv,
)

VERSION = "1.0"
FIDELITIES = {
    # Four beats from the untreated steady state, 8 ms steps, ideal valves: delta-EF within
    # 0.05 %-points of validation fidelity (benchmarks/bench_mechanics.py measures it).
    "screening": Integration(
        dt_s=8e-3, min_beats=4, max_beats=4, tolerance_ml=np.inf, valve_law="ideal"
    ),
    # 1 ms steps and the smooth valve law (the reference implementation's), beating until EDV
    # and ESV settle.
    "validation": Integration(dt_s=1e-3, min_beats=3, max_beats=150, tolerance_ml=0.01),
}
BATCH = 8192
# A heart whose EDV still moves by more than this fraction over its last beat is unstable.
SETTLED_FRACTION = 0.01


class ReferenceMechanicsSettings(PluginSettings):
    fidelity: Literal["screening", "validation"] = Field(
        "screening",
        description="'screening': 8 ms steps, 4 beats; 'validation': 1 ms steps "
        "until the beat settles.",
    )
    followup_weeks: list[float] = Field(
        default_factory=lambda: [1.0, 4.0, 12.0, 26.0],
        min_length=1,
        description="Follow-up times of the delta-EF trajectory, weeks after injection.",
    )
    endpoint_weeks: float = Field(
        12.0, description="Follow-up time of the scalar outputs; one of followup_weeks."
    )
    myocardium_modulus_kpa: float = Field(
        18.0, gt=0, description="Passive modulus of healthy myocardium (Berry et al. 2006)."
    )
    scar_stiffness_ratio: float = Field(
        20.0, gt=0, description="Scar passive elastance over healthy myocardium's."
    )
    bz_stiffness_ratio: float = Field(
        1.5, gt=0, description="Border-zone passive elastance over healthy myocardium's."
    )
    bz_contractility_ratio: float = Field(
        0.67,
        ge=0,
        le=1,
        description="Border-zone active elastance over remote (Wenk et al. 2012: 73.1/109.5).",
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
    """Vectorised regional-elastance mechanics in a closed-loop circulation."""

    def __init__(self, settings: ReferenceMechanicsSettings) -> None:
        self.settings = settings
        self.tissue = TissueProperties(
            settings.scar_stiffness_ratio,
            settings.bz_stiffness_ratio,
            settings.bz_contractility_ratio,
        )
        self.integration = FIDELITIES[settings.fidelity]
        n_times = len(settings.followup_weeks)
        self.outputs = (
            OutputSpec(
                "delta_ef_pct",
                "%-points",
                "change in LV ejection fraction at the endpoint follow-up",
            ),
            OutputSpec("edv_ml", "mL", "end-diastolic volume after treatment (endpoint)"),
            OutputSpec("esv_ml", "mL", "end-systolic volume after treatment (endpoint)"),
            OutputSpec(
                "bz_stress_reduction_pct",
                "%",
                "reduction of border-zone end-systolic fibre stress (endpoint)",
            ),
            OutputSpec(
                "strain_normalization_pct",
                "%",
                "share of the infarct region's shortening deficit recovered (endpoint)",
            ),
            OutputSpec("stable", "1", "1 when the treated heart reaches a settled beat"),
            OutputSpec(
                "delta_ef_trajectory_pct",
                "%-points",
                "change in EF at each follow-up time",
                shape=(n_times,),
            ),
        )
        self._hearts: dict[tuple[Patient, str], PatientHeart] = {}

    def heart(self, patient: Patient, mesh: PatientMesh) -> PatientHeart:
        """The patient's calibrated untreated heart (computed once per patient and mesh)."""
        key = (patient, _mesh_fingerprint(mesh))
        if key not in self._hearts:
            self._hearts[key] = calibrate(
                patient,
                mesh,
                self.tissue,
                FIDELITIES["validation"]
                if self.settings.fidelity == "validation"
                else _calibration_integration(self.integration),
            )
        return self._hearts[key]

    def simulate(
        self, patient: Patient, mesh: PatientMesh, designs: DesignBatch, workdir: Path | None
    ) -> Outcomes:
        heart = self.heart(patient, mesh)
        infeasible, reasons = polymer_feasibility(designs)
        ok = np.flatnonzero(~infeasible)
        values = {spec.name: np.full((len(designs), *spec.shape), np.nan) for spec in self.outputs}
        failed = infeasible.copy()
        for start in range(0, len(ok), BATCH):  # batches sized for the CPU's caches
            rows = ok[start : start + BATCH]
            results, physical = self._evaluate(patient, mesh, heart, designs.take(rows))
            for name, column in results.items():
                values[name][rows] = column
            unphysical = rows[~physical]
            for name in values:
                values[name][unphysical] = np.nan
            reasons[unphysical] = "the treated heart has a negative regional volume"
            failed[unphysical] = True
        return Outcomes(self.outputs, values, failed, reasons)

    def _evaluate(
        self, patient: Patient, mesh: PatientMesh, heart: PatientHeart, designs: DesignBatch
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        s = self.settings
        weights = heart.weights(_bz_treated_share(mesh)[designs.coverage_index])
        # The untreated heart integrated exactly as the designs are, so that numerical error
        # cancels in every difference and no treatment means no effect.
        untreated = _untreated_lv(heart, weights[:1])
        _, untreated_record, _ = steady_state(
            untreated, heart.state[:, None].copy(), self.integration
        )
        baseline = _summarise(heart, untreated, untreated_record, patient, np.zeros((1, 4)))
        untreated_state = np.repeat(heart.state[:, None], len(designs), axis=1)
        trajectory, endpoint, stable, physical = [], None, None, None
        for weeks in s.followup_weeks:
            gel = gel_state(designs, patient.wall_thickness_mm, weeks)
            gel_ratio = np.zeros((len(designs), 4))
            gel_ratio[:, BZ_TREATED] = gel.thickness_ratio
            gel_ratio[:, SCAR] = gel.thickness_ratio
            added = (
                heart.elastance_passive
                * gel.modulus_kpa[:, None]
                * gel_ratio
                / s.myocardium_modulus_kpa
            )
            displaced = 0.5 * gel_ratio * weights * heart.wall_volume_ml
            lv = build_regional_lv(
                weights,
                heart.elastance_active,
                heart.elastance_passive,
                heart.v0_ml,
                self.tissue,
                added,
                displaced,
            )
            # Each follow-up starts from the untreated beat: the same start for every design
            # and time, so a gel that has gone leaves exactly the untreated heart.
            _, record, change_ml = steady_state(lv, untreated_state.copy(), self.integration)
            summary = _summarise(
                heart,
                lv,
                record,
                patient,
                gel_ratio,
                gel.modulus_kpa,
                self.tissue,
                s.myocardium_modulus_kpa,
            )
            trajectory.append(summary["ef_pct"] - baseline["ef_pct"][0])
            if weeks == s.endpoint_weeks:
                endpoint = summary
                physical = summary["physical"]
                stable = change_ml < SETTLED_FRACTION * record.edv_ml
        results = {
            "delta_ef_pct": endpoint["ef_pct"] - baseline["ef_pct"][0],
            "edv_ml": endpoint["edv_ml"],
            "esv_ml": endpoint["esv_ml"],
            "bz_stress_reduction_pct": 100.0
            * (1.0 - endpoint["bz_stress_kpa"] / baseline["bz_stress_kpa"][0]),
            "strain_normalization_pct": _strain_normalization(endpoint, baseline),
            "stable": stable.astype(float),
            "delta_ef_trajectory_pct": np.stack(trajectory, axis=1),
        }
        return results, physical


def _strain_normalization(treated: dict, untreated: dict) -> np.ndarray:
    """Share [%] of the infarct region's shortening deficit against remote that the gel
    recovers. Regional strain is the ED-to-ES volume excursion over the untreated region's ED
    volume, so the gel's own volume (which shifts a region's volumes, not its motion) does not
    count as strain."""
    infarct_ed = untreated["infarct_ed_ml"][0]
    strain_before = untreated["infarct_excursion_ml"][0] / infarct_ed
    strain_after = treated["infarct_excursion_ml"] / infarct_ed
    remote = untreated["remote_excursion_ml"][0] / untreated["remote_ed_ml"][0]
    return 100.0 * (strain_after - strain_before) / (remote - strain_before)


def _calibration_integration(integration: Integration) -> Integration:
    """Calibration needs the settled beat even at screening fidelity."""
    return Integration(integration.dt_s, 3, 60, 0.05, integration.valve_law)


def _untreated_lv(heart: PatientHeart, weights: np.ndarray) -> RegionalLV:
    return build_regional_lv(
        weights, heart.elastance_active, heart.elastance_passive, heart.v0_ml, heart.tissue
    )


def _summarise(
    heart: PatientHeart,
    lv: RegionalLV,
    record: BeatRecord,
    patient: Patient,
    gel_ratio: np.ndarray,
    gel_modulus_kpa: np.ndarray | None = None,
    tissue: TissueProperties | None = None,
    myocardium_modulus_kpa: float = 1.0,
) -> dict[str, np.ndarray]:
    """EF, volumes, regional shortening and BZ end-systolic fibre stress of a beat."""
    at_ed = lv.regional_volumes(record.p_ed_mmhg, record.t_ed_s)
    at_es = lv.regional_volumes(record.p_es_mmhg, record.t_es_s)
    infarct = [BZ_TREATED, BZ_UNTREATED, SCAR]
    infarct_ed, infarct_es = at_ed[:, infarct].sum(axis=1), at_es[:, infarct].sum(axis=1)
    wall = heart.wall_volume_ml
    # Arts et al. (1991) one-fibre stress, with the gel's load-bearing share of wall volume.
    share = np.zeros_like(gel_ratio)
    if gel_modulus_kpa is not None:
        bz_modulus = tissue.bz_stiffness_ratio * myocardium_modulus_kpa
        share[:, BZ_TREATED] = load_share(gel_modulus_kpa, bz_modulus)
    effective_wall = wall * (1.0 + gel_ratio * share)
    p_es_kpa = record.p_es_mmhg * MMHG_TO_KPA
    regional_stress = (
        heart.stress_scale
        * patient.stress_concentration
        * p_es_kpa[:, None]
        * (1.0 + 3.0 * record.esv_ml[:, None] / effective_wall)
    )
    bz_weights = lv.weights[:, [BZ_TREATED, BZ_UNTREATED]]
    bz_stress = (regional_stress[:, [BZ_TREATED, BZ_UNTREATED]] * bz_weights).sum(
        axis=1
    ) / np.maximum(bz_weights.sum(axis=1), 1e-12)
    physical = (
        np.isfinite(record.edv_ml)
        & (record.esv_ml > 0)
        & (record.edv_ml > record.esv_ml)
        & np.all(at_es > -1e-9, axis=1)
        & np.all(at_ed > -1e-9, axis=1)
    )
    return {
        "ef_pct": record.ef_pct,
        "edv_ml": record.edv_ml,
        "esv_ml": record.esv_ml,
        "bz_stress_kpa": bz_stress,
        "remote_excursion_ml": at_ed[:, REMOTE] - at_es[:, REMOTE],
        "remote_ed_ml": at_ed[:, REMOTE],
        "infarct_excursion_ml": infarct_ed - infarct_es,
        "infarct_ed_ml": infarct_ed,
        "physical": physical,
    }


def _mesh_fingerprint(mesh: PatientMesh) -> str:
    """What the calibration depends on: the geometry and the region tags."""
    import hashlib

    digest = hashlib.sha256(mesh.points_m.tobytes())
    digest.update(mesh.tetrahedra.tobytes())
    digest.update(np.asarray(mesh.cell_data["region"]).tobytes())
    return digest.hexdigest()


def _bz_treated_share(mesh: PatientMesh) -> np.ndarray:
    """Share of the border zone's volume each coverage pattern treats (from the mesh)."""
    volumes = mesh.element_volumes_m3()
    bz = mesh.cell_data["region"] == REGION_BORDER_ZONE
    total = volumes[bz].sum()
    return np.array(
        [
            volumes[bz & mesh.treated(c)].sum() / total if total > 0 else 0.0
            for c in COVERAGE_PATTERNS
        ]
    )


@hookimpl
def hydraopt_simulators() -> Iterator[SimulatorPlugin]:
    yield SimulatorPlugin(
        name="reference-mechanics",
        factory=ReferenceMechanics,
        settings=ReferenceMechanicsSettings,
        description="regional infarcted LV in Regazzoni et al.'s closed-loop circulation",
        version=VERSION,
    )
