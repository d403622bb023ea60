"""The Python API for scripted studies: overrides, a cohort from a DataFrame, a run that
resumes, and results as DataFrames."""

import numpy as np
import pandas as pd
import pytest

from hydraopt.api import Study
from hydraopt.errors import ConfigError, HydraoptError
from hydraopt.registry import PluginRegistry
from hydraopt.store import RunStore
from hydraopt.synthetic_cohort import synthetic_cohort

from plugin_sources import EVERY_KIND, MISBEHAVING

PIPELINE = """\
[study]
name = "file-name"
seed = 1
output_dir = "runs"

[cohort]
n_patients = 3

[dataset]
designs_per_patient = 4

[mesh]
plugin = "slab"

[simulators.misbehaving]
behaviour = "{behaviour}"
only_patient = "P002"

[execution]
workers = 1
"""


@pytest.fixture
def registry(install_distribution):
    install_distribution("acme-cardio", "0.9.1", "acme_cardio", EVERY_KIND)
    install_distribution("flaky-sims", "1.0", "flaky_sims", MISBEHAVING)
    return PluginRegistry.discover()


def cohort_frame(n=2):
    return pd.DataFrame(synthetic_cohort(n, seed=5, id_prefix="P").to_columns())


def test_a_scripted_study_with_overrides_and_its_own_cohort(write_pipeline, registry):
    path = write_pipeline(PIPELINE.format(behaviour="ok"))
    overrides = {"study.name": "scripted", "dataset.designs_per_patient": 5}
    study = Study.load(path, overrides, cohort=cohort_frame(), registry=registry)
    assert study.run_dir.name == "scripted"
    with pytest.raises(HydraoptError, match="has not run yet"):
        study.results()
    summary = study.run(to_stage="simulate")
    assert summary.ok and summary.ran == ["cohort", "designs", "meshes", "simulate"]

    assert study.cohort()["patient_id"].tolist() == ["P001", "P002"]
    table = study.results()  # no design engine in this study: per patient and design
    assert len(table) == 10 and table["patient_id"].tolist() == ["P001"] * 5 + ["P002"] * 5
    assert {"polymer", "coverage", "stiffness_kpa", "wall_stress_kpa"} <= set(table.columns)
    assert not table["misbehaving.failed"].any()
    stored = RunStore(study.run_dir).shards("outcomes").table("P002__misbehaving", "outcomes")
    np.testing.assert_array_equal(table["wall_stress_kpa"][5:], stored["wall_stress_kpa"])
    assert study.failures().empty

    # The same script again: nothing is redone.
    again = Study.load(path, overrides, cohort=cohort_frame(), registry=registry)
    assert again.run(to_stage="simulate").skipped == summary.ran


def test_failed_evaluations_are_in_the_failures_table(write_pipeline, registry):
    path = write_pipeline(PIPELINE.format(behaviour="raise"))
    study = Study.load(path, cohort=cohort_frame(3), registry=registry)
    summary = study.run(to_stage="simulate")
    assert summary.ok
    failures = study.failures()
    assert failures[["stage", "unit", "recorded"]].values.tolist() == [
        ["simulate", "P002__misbehaving", True]
    ]
    assert "the solver diverged" in failures["reason"][0]
    outcomes = study.outcomes()
    assert outcomes.loc[outcomes["patient_id"] == "P002", "misbehaving.failed"].all()
    shard = RunStore(study.run_dir).shards("outcomes").shard_meta("P002__misbehaving")
    assert shard["patient_id"] == "P002"


def test_a_bad_override_is_named(write_pipeline, registry):
    path = write_pipeline(PIPELINE.format(behaviour="ok"))
    with pytest.raises(ConfigError, match=r"\(override cohort.n_patients\): cohort.n_patients"):
        Study.load(path, {"cohort.n_patients": 0}, registry=registry)
    with pytest.raises(ConfigError, match=r"override .study\.name\.x."):
        Study.load(path, {"study.name.x": 1}, registry=registry)
