"""What a pipeline reads from outside its run directory: the cohort and the polymer library.

The ``cohort`` stage stores them, ``hydraopt simulate`` evaluates a design on them without a
run, and ``hydraopt validate`` reads them to check them: all three through these functions.
"""

from __future__ import annotations

from hydraopt.atomic import file_sha256
from hydraopt.cohorts import read_cohort_csv
from hydraopt.config import Pipeline
from hydraopt.domain import Cohort, PolymerLibrary
from hydraopt.polymer_library import bundled_library_path, read_polymer_library
from hydraopt.seeding import rng_for
from hydraopt.synthetic_cohort import synthetic_cohort

# The random stream a synthetic cohort is drawn from; fixed so that cohorts stay the same.
SYNTHETIC_COHORT_STREAM = ("cohort", "synthetic")


def load_cohort(pipeline: Pipeline) -> Cohort:
    """The pipeline's cohort: read from its CSV or drawn from the study seed."""
    config = pipeline.config
    if config.cohort.source == "csv":
        return read_cohort_csv(pipeline.resolve(config.cohort.path))
    return synthetic_cohort(
        config.cohort.n_patients,
        seed=int(rng_for(config.study.seed, *SYNTHETIC_COHORT_STREAM).integers(2**63)),
        chronic_fraction=config.cohort.chronic_fraction,
    )


def load_library(pipeline: Pipeline) -> PolymerLibrary:
    """The pipeline's polymer library, restricted to ``include`` when given."""
    config = pipeline.config
    library = read_polymer_library(
        pipeline.resolve(config.polymers.library) if config.polymers.library else None
    )
    return library.subset(config.polymers.include) if config.polymers.include else library


def input_file_digests(pipeline: Pipeline) -> dict[str, str]:
    """SHA-256 of each input file, so that an edited CSV reruns what read it."""
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
