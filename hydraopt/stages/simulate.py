"""Stage ``simulate``: every configured simulator on every patient's designs.

One work unit is a (patient, simulator) pair: the simulator evaluates all of the patient's
designs on the patient's mesh. A unit's outcomes are written to the work folder as soon as
they exist, so a killed run resumes with the units it had not finished. A unit that fails
(a simulator error, a patient the model cannot represent) is recorded as failed for all its
designs, with the reason; it never stops the study, and the stage reports it. Files a
simulator leaves in its work directory are kept under ``simulations/PATIENT/SIMULATOR``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.config import PipelineConfig, build_design_space
from hydraopt.domain import Cohort, DesignBatch, Outcomes, Patient
from hydraopt.domain.mesh import PatientMesh
from hydraopt.pipeline import Stage, StageContext
from hydraopt.plugin_types import Simulator
from hydraopt.polymer_library import library_from_columns
from hydraopt.stages.meshes import load_meshes
from hydraopt.store import read_h5_attrs, read_h5_table, write_h5


@dataclass(frozen=True)
class SimulationJob:
    patient: Patient
    mesh: PatientMesh
    designs: DesignBatch
    simulator_name: str
    simulator: Simulator
    output: Path
    files: Path


def run_simulation(job: SimulationJob) -> Path:
    """Simulate one patient's designs; record a failure instead of raising."""
    scratch = job.output.with_suffix(".tmp-dir")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    error = ""
    try:
        outcomes = job.simulator.simulate(job.patient, job.mesh, job.designs, scratch)
    except Exception as exc:  # one failing patient must not stop a cohort study
        error = f"{type(exc).__name__}: {exc}"
        outcomes = failed_outcomes(job.simulator, len(job.designs), error)
    if any(scratch.iterdir()):
        shutil.rmtree(job.files, ignore_errors=True)
        job.files.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(scratch, job.files)
    shutil.rmtree(scratch, ignore_errors=True)
    columns = {
        **outcomes.values,
        "failed": outcomes.failed,
        "failure_reason": outcomes.failure_reason,
    }
    write_h5(job.output, {"outcomes": columns}, provenance={}, meta={"error": error})
    return job.output


def failed_outcomes(simulator: Simulator, n: int, reason: str) -> Outcomes:
    values = {s.name: np.full((n, *s.shape), np.nan) for s in simulator.outputs}
    return Outcomes(
        simulator.outputs, values, np.ones(n, dtype=bool), np.full(n, reason, dtype=object)
    )


def _simulator_locs(config: PipelineConfig) -> list[tuple[str, str]]:
    return [("simulators", name) for name in config.simulators]


def _run(context: StageContext) -> None:
    store = context.store
    cohort = Cohort.from_columns(store.read_table("cohort", "patients"))
    library = library_from_columns(
        store.read_table("polymers", "polymers"), source=store.read_meta("polymers")["source"]
    )
    space = build_design_space(context.config.design_space, library)
    meshes = load_meshes(store, list(cohort.ids))
    simulators = {loc[1]: context.plugin(loc) for loc in _simulator_locs(context.config)}
    work = context.work_dir()
    jobs = [
        SimulationJob(
            patient=patient,
            mesh=meshes[patient.patient_id],
            designs=DesignBatch.from_columns(
                space, store.read_table("designs", f"designs/{patient.patient_id}")
            ),
            simulator_name=name,
            simulator=simulator,
            output=work / f"{patient.patient_id}__{name}.h5",
            files=store.run_dir / "simulations" / patient.patient_id / name,
        )
        for patient in cohort
        for name, simulator in simulators.items()
    ]
    context.run_units(run_simulation, jobs, "simulations")
    tables, errors = {}, []
    for job in jobs:
        tables[f"outcomes/{job.patient.patient_id}/{job.simulator_name}"] = read_h5_table(
            job.output, "outcomes"
        )
        error = read_h5_attrs(job.output)["meta"]["error"]
        if error:
            errors.append(f"{job.patient.patient_id} / {job.simulator_name}: {error}")
    for line in errors:
        context.reporter.say(f"  [yellow]failed[/yellow] {line}")
    context.write_artifact(
        "outcomes",
        tables,
        meta={
            "patients": list(cohort.ids),
            "simulators": {
                name: {
                    "outputs": {
                        s.name: {
                            "unit": s.unit,
                            "shape": list(s.shape),
                            "description": s.description,
                        }
                        for s in simulator.outputs
                    }
                }
                for name, simulator in simulators.items()
            },
            "failed_units": errors,
        },
    )


def _depends_on(config: PipelineConfig) -> Any:
    return {"simulators": config.simulators}


SIMULATE_STAGE = Stage(
    name="simulate",
    version="1",
    sections=("dataset", "simulators"),
    description="simulate every patient's designs with every configured simulator",
    inputs=("cohort", "polymers", "designs", "meshes"),
    outputs=("outcomes",),
    enabled=lambda config: bool(config.simulators) and config.dataset is not None,
    depends_on=_depends_on,
    plugins=_simulator_locs,
    run=_run,
)
