"""The ``thick-wall-stress`` simulator and its registration (the ``hydraopt`` entry point)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydantic import Field

from hydraopt import hookimpl
from hydraopt.domain import COVERAGE_PATTERNS, DesignBatch, Outcomes, OutputSpec, Patient
from hydraopt.domain.mesh import PatientMesh
from hydraopt.plugin_types import PluginSettings, SimulatorPlugin
from hydraopt_thick_wall import __version__
from hydraopt_thick_wall.model import (
    MMHG_TO_KPA,
    gel_at,
    myocyte_stress_kpa,
    sphere_radius_m,
)


class ThickWallSettings(PluginSettings):
    end_systolic_pressure_mmhg: float = Field(
        110.0,
        gt=0,
        le=300,
        description="LV pressure at end-systole (assumed: a typical adult value; the patient "
        "record carries none).",
    )
    myocardium_modulus_kpa: float = Field(
        50.0,
        gt=0,
        description="Stiffness of contracting myocardium that the gel's shares the load "
        "against (assumed order of magnitude of end-systolic myocardium).",
    )
    weeks_after_injection: float = Field(
        4.0, ge=0, description="When the gel is taken: it degrades with its half-life."
    )


class ThickWallStress:
    """End-systolic wall stress of the LV as a thick-walled sphere; the gel relieves the
    treated wall."""

    outputs = (
        OutputSpec(
            "treated_wall_stress_kpa",
            "kPa",
            "end-systolic myocyte circumferential stress in the treated wall",
        ),
        OutputSpec(
            "wall_stress_reduction_pct",
            "%",
            "reduction of the treated wall's myocyte stress against no gel",
        ),
        OutputSpec(
            "mean_wall_stress_reduction_pct",
            "%",
            "the reduction weighted by the share of the myocardium the coverage treats",
        ),
    )

    def __init__(self, settings: ThickWallSettings) -> None:
        self.settings = settings

    def simulate(
        self, patient: Patient, mesh: PatientMesh, designs: DesignBatch, workdir: Path | None
    ) -> Outcomes:
        s = self.settings
        n = len(designs)
        pressure_kpa = s.end_systolic_pressure_mmhg * MMHG_TO_KPA
        inner_m = sphere_radius_m(patient.esv_ml)
        outer_m = sphere_radius_m(patient.esv_ml + mesh.myocardial_volume_ml())
        wall_m = outer_m - inner_m
        polymers = designs.space.polymers
        index = designs.polymer_index
        swelling = np.array([p.swelling_ratio for p in polymers])[index]
        surface = np.array([p.degradation_mode == "surface" for p in polymers])[index]
        gel_m, gel_kpa = gel_at(
            designs.thickness_mm,
            designs.stiffness_kpa,
            designs.t50_days,
            swelling,
            surface,
            s.weeks_after_injection,
        )
        treated = myocyte_stress_kpa(
            pressure_kpa, inner_m, wall_m, gel_m, gel_kpa, s.myocardium_modulus_kpa
        )
        untreated = myocyte_stress_kpa(
            pressure_kpa, inner_m, wall_m, np.zeros(1), np.zeros(1), s.myocardium_modulus_kpa
        )[0]
        reduction = 100.0 * (1.0 - treated / untreated)
        volumes = mesh.element_volumes_m3()
        share = np.array(
            [volumes[mesh.treated(c)].sum() / volumes.sum() for c in COVERAGE_PATTERNS]
        )[designs.coverage_index]
        # A design its polymer cannot make is failed with the reason, never clipped.
        outside = designs.outside_polymer_range()
        failed = np.logical_or.reduce(list(outside.values()))
        reasons = np.full(n, "", dtype=object)
        for i in np.flatnonzero(failed):
            beyond = ", ".join(name for name, mask in outside.items() if mask[i])
            reasons[i] = f"outside its polymer's achievable {beyond}"
        values = {
            "treated_wall_stress_kpa": np.where(failed, np.nan, treated),
            "wall_stress_reduction_pct": np.where(failed, np.nan, reduction),
            "mean_wall_stress_reduction_pct": np.where(failed, np.nan, reduction * share),
        }
        return Outcomes(self.outputs, values, failed, reasons)


@hookimpl
def hydraopt_simulators() -> Iterator[SimulatorPlugin]:
    yield SimulatorPlugin(
        name="thick-wall-stress",
        factory=ThickWallStress,
        settings=ThickWallSettings,
        description="end-systolic LV wall stress as a thick-walled sphere (Lamé), the gel "
        "sharing the treated wall's load",
        version=__version__,
        hooks_version="1.1",
    )
