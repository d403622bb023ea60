"""Stage ``cohort``: the patients and the polymer library, validated and stored."""

from __future__ import annotations

from typing import Any

from hydraopt.config import PipelineConfig
from hydraopt.inputs import input_file_digests, load_cohort, load_library
from hydraopt.polymer_library import library_columns
from hydraopt.stages.base import Stage, StageContext


def _depends_on(config: PipelineConfig) -> Any:
    return {
        "cohort": config.cohort.model_dump(mode="json"),
        "polymers": config.polymers.model_dump(mode="json"),
    }


def _run(context: StageContext) -> None:
    config = context.config
    cohort = load_cohort(context.pipeline)
    library = load_library(context.pipeline)
    context.reporter.say(f"  {len(cohort)} patients, {len(library)} polymers")
    context.write_tables(
        "cohort",
        {"patients": cohort.to_columns()},
        meta={"n_patients": len(cohort), "source": config.cohort.source},
    )
    context.write_tables(
        "polymers",
        {"polymers": library_columns(library)},
        meta={"n_polymers": len(library), "source": library.source},
    )


STAGE = Stage(
    name="cohort",
    # 2: the cohort table carries each patient's infarct age; 3: and its origin.
    version="3",
    sections=(),
    description="load or generate the patient cohort and the polymer library",
    inputs=(),
    outputs={"cohort": "tables", "polymers": "tables"},
    enabled=lambda config: True,
    depends_on=_depends_on,
    plugins=lambda config: [],
    run=_run,
    extra_inputs=input_file_digests,
)
