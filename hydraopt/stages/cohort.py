"""Stage ``cohort``: the patients and the polymer library, validated and stored."""

from __future__ import annotations

from typing import Any

from hydraopt.atomic import file_sha256
from hydraopt.cohorts import read_cohort_csv
from hydraopt.config import Pipeline, PipelineConfig
from hydraopt.domain import Cohort, PolymerLibrary
from hydraopt.pipeline import Stage, StageContext
from hydraopt.polymer_library import bundled_library_path, library_columns, read_polymer_library
from hydraopt.seeding import rng_for
from hydraopt.synthetic_cohort import synthetic_cohort

COHORT_STAGE_NAME = "cohort"


def _depends_on(config: PipelineConfig) -> Any:
    return {
        "cohort": config.cohort.model_dump(mode="json"),
        "polymers": config.polymers.model_dump(mode="json"),
    }


def _source_files(pipeline: Pipeline) -> dict[str, str]:
    """Digests of the files read, so an edited CSV reruns the stage."""
    config = pipeline.config
    library = (
        pipeline.resolve(config.polymers.library)
        if config.polymers.library
        else bundled_library_path()
    )
    digests = {"polymer_library_file": file_sha256(library)}
    if config.cohort.source == "csv":
        digests["cohort_file"] = file_sha256(pipeline.resolve(config.cohort.path))
    return digests


def load_cohort(pipeline: Pipeline) -> Cohort:
    """The pipeline's cohort: read from its CSV or drawn from the study seed."""
    config = pipeline.config
    if config.cohort.source == "csv":
        return read_cohort_csv(pipeline.resolve(config.cohort.path))
    return synthetic_cohort(
        config.cohort.n_patients,
        seed=int(rng_for(config.study.seed, COHORT_STAGE_NAME, "synthetic").integers(2**63)),
        chronic_fraction=config.cohort.chronic_fraction,
    )


def load_library(pipeline: Pipeline) -> PolymerLibrary:
    """The pipeline's polymer library, restricted to ``include`` when given."""
    config = pipeline.config
    library = read_polymer_library(
        pipeline.resolve(config.polymers.library) if config.polymers.library else None
    )
    return library.subset(config.polymers.include) if config.polymers.include else library


def _run(context: StageContext) -> None:
    config = context.config
    cohort = load_cohort(context.pipeline)
    library = load_library(context.pipeline)
    context.reporter.say(f"  {len(cohort)} patients, {len(library)} polymers")
    context.write_artifact(
        "cohort",
        {"patients": cohort.to_columns()},
        meta={"n_patients": len(cohort), "source": config.cohort.source},
    )
    context.write_artifact(
        "polymers",
        {"polymers": library_columns(library)},
        meta={"n_polymers": len(library), "source": library.source},
    )


COHORT_STAGE = Stage(
    name=COHORT_STAGE_NAME,
    # 2: the cohort table carries each patient's infarct age.
    version="2",
    sections=(),
    description="load or generate the patient cohort and the polymer library",
    inputs=(),
    outputs=("cohort", "polymers"),
    enabled=lambda config: True,
    depends_on=_depends_on,
    plugins=lambda config: [],
    run=_run,
    extra_inputs=_source_files,
)
