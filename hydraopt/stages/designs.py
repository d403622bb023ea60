"""Stage ``designs``: the dataset's design plan, ``designs_per_patient`` designs per patient.

Each patient's designs come from the configured generator with a random stream of its own,
are written to the stage's work folder as soon as they exist, and are gathered into the
``designs`` artifact at the end: a killed run resumes with the patients it had not done, and
its result equals an uninterrupted run's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.config import PipelineConfig, build_design_space
from hydraopt.domain import COVERAGE_PATTERNS, Cohort, DesignBatch, DesignSpace
from hydraopt.errors import HydraoptError
from hydraopt.pipeline import Stage, StageContext
from hydraopt.plugin_types import Generator
from hydraopt.polymer_library import library_from_columns
from hydraopt.seeding import derive_seed
from hydraopt.store import read_h5_table, write_h5

GENERATOR_LOC = ("dataset", "generator")


@dataclass(frozen=True)
class PatientDesignsJob:
    """One patient's share of the work, small enough to send to a worker process."""

    patient_id: str
    seed: int
    n_designs: int
    generator: Generator
    space: DesignSpace
    output: Path


def generate_patient_designs(job: PatientDesignsJob) -> Path:
    batch = job.generator.generate(job.space, job.n_designs, np.random.default_rng(job.seed))
    if len(batch) != job.n_designs:
        raise RuntimeError(
            f"generator returned {len(batch)} designs for patient {job.patient_id}, "
            f"not {job.n_designs}"
        )
    outside = [name for name, mask in batch.out_of_bounds().items() if mask.any()]
    if outside:
        raise RuntimeError(f"generator produced designs outside the design space in {outside}")
    write_h5(job.output, {"designs": batch.columns()}, provenance={}, meta={})
    return job.output


def space_meta(space: DesignSpace) -> dict[str, Any]:
    """The design space, as stored beside the designs that index into it."""
    return {
        "polymers": list(space.polymers.names),
        "coverage_patterns": list(COVERAGE_PATTERNS),
        "allowed_coverage_patterns": list(space.coverages),
        "parameters": {
            p.name: {"min": p.low, "max": p.high, "scale": p.scale, "unit": p.unit}
            for p in space.parameters
        },
    }


def _run(context: StageContext) -> None:
    config = context.config
    cohort = Cohort.from_columns(context.store.read_table("cohort", "patients"))
    library = library_from_columns(
        context.store.read_table("polymers", "polymers"),
        source=context.store.read_meta("polymers")["source"],
    )
    space = build_design_space(config.design_space, library)
    generator = context.plugin(GENERATOR_LOC)
    work = context.work_dir()
    n_designs = config.dataset.designs_per_patient
    jobs = [
        PatientDesignsJob(
            patient_id=pid,
            seed=derive_seed(config.study.seed, "designs", pid),
            n_designs=n_designs,
            generator=generator,
            space=space,
            output=work / f"{pid}.h5",
        )
        for pid in cohort.ids
    ]
    try:
        context.run_units(generate_patient_designs, jobs, "patients")
    except ValueError as exc:  # the generator cannot make what the settings ask for
        raise HydraoptError(
            f"{context.pipeline.path}: dataset.generator ({config.dataset.generator.plugin}): {exc}"
        ) from None
    tables = {f"designs/{job.patient_id}": read_h5_table(job.output, "designs") for job in jobs}
    # Checks the gathered columns against the space before they become the artifact.
    for table in tables.values():
        DesignBatch.from_columns(space, table)
    context.write_artifact(
        "designs",
        tables,
        meta={
            "design_space": space_meta(space),
            "designs_per_patient": n_designs,
            "patients": list(cohort.ids),
            "generator": config.dataset.generator.plugin,
        },
    )


def _depends_on(config: PipelineConfig) -> Any:
    return {
        "design_space": config.design_space.model_dump(mode="json"),
        "designs_per_patient": config.dataset.designs_per_patient,
    }


DESIGNS_STAGE = Stage(
    name="designs",
    version="1",
    sections=("dataset",),
    description="sample the dataset's designs for every patient",
    inputs=("cohort", "polymers"),
    outputs=("designs",),
    enabled=lambda config: config.dataset is not None,
    depends_on=_depends_on,
    plugins=lambda config: [GENERATOR_LOC],
    run=_run,
)
