"""Stage ``designs``: the dataset's design plan, ``designs_per_patient`` designs per patient.

Each patient's designs come from the configured generator with a random stream of its own and
are one unit of work: a killed run resumes with the patients it had not done, and its result
equals an uninterrupted run's. The units become the shards of the ``designs`` artifact, one
HDF5 file per patient (group ``designs``), so no table of every patient's designs is ever
held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.config import PipelineConfig, build_design_space
from hydraopt.domain import COVERAGE_PATTERNS, Cohort, DesignSpace
from hydraopt.plugin_calls import PluginHandle, call_plugin, checked_designs
from hydraopt.polymer_library import library_from_columns
from hydraopt.seeding import derive_seed
from hydraopt.stages.base import Stage, StageContext, Unit
from hydraopt.store import RunStore, write_h5

GENERATOR_LOC = ("dataset", "generator")


@dataclass(frozen=True)
class PatientDesignsJob:
    """One patient's share of the work, small enough to send to a worker process."""

    patient_id: str
    seed: int
    n_designs: int
    generator: PluginHandle
    space: DesignSpace


def generate_patient_designs(job: PatientDesignsJob, output: Path) -> None:
    rng = np.random.default_rng(job.seed)
    batch = call_plugin(job.generator, "generate", job.space, job.n_designs, rng)
    batch = checked_designs(job.generator, batch, job.space, job.n_designs)
    write_h5(output, {"designs": batch.columns()}, provenance={}, meta={})


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


def load_space(context: StageContext) -> DesignSpace:
    """The design space over the stored polymer library."""
    return stored_space(context.store, context.config)


def stored_space(store: RunStore, config: PipelineConfig) -> DesignSpace:
    """The design space of ``config`` over the polymer library stored in ``store``."""
    polymers = store.tables("polymers")
    library = library_from_columns(polymers.table("polymers"), source=polymers.meta["source"])
    return build_design_space(config.design_space, library)


def _run(context: StageContext) -> None:
    config = context.config
    cohort = Cohort.from_columns(context.store.tables("cohort").table("patients"))
    space = load_space(context)
    generator = context.plugin(GENERATOR_LOC)
    n_designs = config.dataset.designs_per_patient
    units = []
    for pid in cohort.ids:
        seed = derive_seed(config.study.seed, "designs", pid)
        units.append(
            Unit(
                key=pid,
                function=generate_patient_designs,
                job=PatientDesignsJob(pid, seed, n_designs, generator, space),
                plugin=generator,
                depends_on={"seed": seed},
                covers=("cohort",),  # a patient's designs depend on its id, not its features
            )
        )
    done = context.run_units(units, "patients")
    context.write_shards(
        "designs",
        done,
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


STAGE = Stage(
    name="designs",
    # 2: one shard per patient instead of one table.
    version="2",
    sections=("dataset",),
    description="sample the dataset's designs for every patient",
    inputs=("cohort", "polymers"),
    outputs={"designs": "shards"},
    enabled=lambda config: config.dataset is not None,
    depends_on=_depends_on,
    plugins=lambda config: [GENERATOR_LOC],
    run=_run,
)
