"""The ``opencarp`` simulator: the ``reference-ep`` beat, solved by the openCARP program.

The same model (monodomain Mitchell-Schaeffer; tissue conductivities tuned to the mesh's
resolution and the gel mixed in by the same rule; scar passive; the fast endocardial layer's
stimulus) is written into openCARP's files (:mod:`.files`, :mod:`.parameters`), openCARP runs
once per design (:mod:`.beat`), and the outputs are the reference's own measures of the
activation and repolarisation times openCARP detects: the same names, units and definitions,
so a ``[simulators.reference-ep]`` table can become ``[simulators.opencarp]`` with the same
settings. openCARP is not a dependency: ``executable`` names the program.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from hydraopt import hookimpl
from hydraopt.domain import COVERAGE_PATTERNS, DesignBatch, Outcomes, Patient
from hydraopt.domain.mesh import PatientMesh
from hydraopt.plugin_types import SimulatorPlugin
from hydraopt_simulators.ep.reference import ReferenceEP, ReferenceEPSettings
from hydraopt_simulators.external import ProgramSettings

VERSION = "1.0"
NOT_ACTIVATED = "no myocardium activated within the simulated time"


class OpenCARPSettings(ReferenceEPSettings, ProgramSettings):
    """reference-ep's physiological settings (the same tuning, stimulus, measures and
    ``max_time_ms``, openCARP's ``tend``) and how openCARP is run."""

    fidelity: Literal["screening", "validation"] = Field(
        "validation",
        description="Accepted so that reference-ep tables and the screen's simulate filters, "
        "which set it, carry over; openCARP solves every design's beat at either fidelity "
        "(there is no cheaper openCARP run).",
    )
    write_activation_maps: bool = Field(
        True,
        description="Write each design's V_m over the beat (vm.xdmf, at most 100 frames of "
        "openCARP's vm.igb) and its activation and repolarisation times (activation.xdmf) "
        "into its folder, for ParaView (then a missing or malformed vm.igb fails the design).",
    )
    executable: str = Field(
        "openCARP",
        min_length=1,
        description="The openCARP program: a name looked up on PATH or a path to the file.",
    )
    dt_us: float = Field(
        25.0, gt=0, description="openCARP's time step, in microseconds as openCARP's dt is."
    )
    spacedt_ms: float = Field(
        1.0, gt=0, description="Interval between the frames openCARP writes to vm.igb."
    )


class OpenCARP:
    """reference-ep's beat of each design, run by openCARP one design at a time."""

    def __init__(self, settings: OpenCARPSettings) -> None:
        self.settings = settings
        # The reference model whose conductivity tuning (kept per mesh resolution), heart
        # model and measures this simulator uses: the outputs are defined once.
        self.reference = ReferenceEP(settings)
        self.outputs = self.reference.outputs

    def environment_problems(self) -> list[str]:
        """The program missing from this machine, if it is."""
        from hydraopt_simulators.external import missing_program

        return missing_program(self.settings.launcher, self.settings.executable)

    def simulate(
        self, patient: Patient, mesh: PatientMesh, designs: DesignBatch, workdir: Path
    ) -> Outcomes:
        from hydraopt_simulators.ep.activation import design_quantities, heart_model
        from hydraopt_simulators.external import evaluate_rows
        from hydraopt_simulators.opencarp.beat import (
            run_beat,
            write_design_folder,
            write_maps,
            write_patient_files,
        )

        workdir = Path(workdir)
        s = self.settings
        tuned = self.reference.tuned(mesh)
        model = heart_model(mesh, tuned, s)
        infeasible, reasons, phi, phi_sigma = design_quantities(patient, designs, s)
        rows = np.flatnonzero(~infeasible)
        coverages = sorted({COVERAGE_PATTERNS[c] for c in designs.coverage_index[rows]})
        files = write_patient_files(mesh, model, coverages, workdir)

        def evaluate_row(row: int) -> dict[str, float]:
            folder = workdir / f"design_{row:05d}"
            coverage = COVERAGE_PATTERNS[designs.coverage_index[row]]
            write_design_folder(folder, files, tuned, coverage, phi[row], phi_sigma[row], s)
            activation, repolarisation = run_beat(folder, len(mesh.points_m), s)
            if s.write_activation_maps:
                write_maps(folder, mesh, coverage, activation, repolarisation)
            found = model.measures(activation[:, None], repolarisation[:, None])
            return {name: float(values[0]) for name, values in found.items()}

        outcomes = evaluate_rows(
            self.outputs, len(designs), rows, evaluate_row, infeasible, reasons, workdir
        )
        return _fail_unactivated(outcomes)


def _fail_unactivated(outcomes: Outcomes) -> Outcomes:
    """Designs whose beat activated nothing fail, as the reference's do."""
    silent = ~outcomes.failed & ~np.isfinite(outcomes["total_activation_time_ms"])
    if not silent.any():
        return outcomes
    reasons = outcomes.failure_reason.copy()
    reasons[silent] = NOT_ACTIVATED
    return Outcomes(outcomes.specs, outcomes.values, outcomes.failed | silent, reasons)


@hookimpl
def hydraopt_simulators() -> Iterator[SimulatorPlugin]:
    yield SimulatorPlugin(
        name="opencarp",
        factory=OpenCARP,
        settings=OpenCARPSettings,
        description="reference-ep's monodomain Mitchell-Schaeffer beat run by the openCARP "
        "program (external; one run per design)",
        version=VERSION,
    )
