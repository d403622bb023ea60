"""The dataset stage: one row per successful (patient, design), labelled, split by patient,
summarised; bad thresholds and splits refused before any work."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hydraopt.cli import main
from hydraopt.domain import COVERAGE_PATTERNS, FEATURE_NAMES
from hydraopt.domain.training import DATASET_FEATURE_NAMES
from hydraopt.registry import PluginRegistry
from hydraopt.stages.simulate import unit_key
from hydraopt.store import RunStore

from conftest import designs_of, run_quietly

PIPELINE = """\
[study]
name = "ds"
seed = 11
output_dir = "runs"

[cohort]
n_patients = 5
chronic_fraction = 0.4

[dataset]
designs_per_patient = 24
generator = { plugin = "sobol" }
is_optimal = { delta_ef_pct = 0.05, bz_stress_reduction_pct = 0.0 }

[mesh]
element_size_mm = 8.0

[simulators.reference-mechanics]

[execution]
workers = 1
"""


@pytest.fixture(scope="module")
def registry():
    return PluginRegistry.discover()


@pytest.fixture(scope="module")
def study(tmp_path_factory, registry):
    """One small study run to its dataset; its run directory."""
    folder = tmp_path_factory.mktemp("dataset")
    path = folder / "pipeline.toml"
    path.write_text(PIPELINE, encoding="utf-8")
    summary = run_quietly(path, registry)
    assert summary.ok and "dataset" in summary.ran
    return path, summary.run_dir


def test_rows_join_features_designs_and_outcomes(study):
    _, run_dir = study
    store = RunStore(run_dir)
    dataset = store.tables("dataset")
    features, outputs, rows = (dataset.table(g) for g in ("features", "outputs", "rows"))
    assert tuple(dataset.meta["features"]) == tuple(sorted(DATASET_FEATURE_NAMES))
    assert set(features) == set(DATASET_FEATURE_NAMES) and len(DATASET_FEATURE_NAMES) == 19
    cohort = store.tables("cohort").table("patients")
    outcomes = store.shards("outcomes")
    designs = designs_of(run_dir)
    polymers = store.tables("polymers").table("polymers")
    n_kept = 0
    for i, pid in enumerate(cohort["patient_id"]):
        mine = rows["patient_id"] == pid
        table = outcomes.table(unit_key(pid, "reference-mechanics"), "outcomes")
        ok = ~table["failed"].astype(bool) & (table["stable"] == 1)
        assert mine.sum() == ok.sum()
        n_kept += ok.sum()
        index = rows["design_index"][mine]
        np.testing.assert_array_equal(index, np.flatnonzero(ok))
        for name in FEATURE_NAMES:  # the patient's features on every one of its rows
            np.testing.assert_array_equal(features[name][mine], cohort[name][i])
        for name in ("stiffness_kpa", "t50_days", "conductivity_s_per_m", "thickness_mm"):
            np.testing.assert_array_equal(features[name][mine], designs[pid][name][index])
        for c, coverage in enumerate(COVERAGE_PATTERNS):
            expected = designs[pid]["coverage_index"][index] == c
            np.testing.assert_array_equal(features[f"coverage_{coverage}"][mine], expected)
        np.testing.assert_array_equal(outputs["delta_ef_pct"][mine], table["delta_ef_pct"][ok])
        trajectory = outputs["delta_ef_trajectory_pct"][mine]
        np.testing.assert_array_equal(trajectory, table["delta_ef_trajectory_pct"][ok])
        polymer = designs[pid]["polymer_index"][index]
        np.testing.assert_array_equal(rows["polymer_index"][mine], polymer)
        assert list(rows["psmiles"][mine]) == list(polymers["psmiles"][polymer])
        assert list(rows["category"][mine]) == list(polymers["category"][polymer])
    assert dataset.meta["rows"] == n_kept == len(rows["patient_id"])
    left = sum(dataset.meta["left_out"].values())
    assert left == dataset.meta["designs_simulated"] - n_kept
    assert dataset.meta["outputs"]["delta_ef_pct"]["unit"] == "%-points"
    assert dataset.meta["outputs"]["delta_ef_trajectory_pct"]["shape"] == [4]
    assert set(rows["origin"]) == {"synthetic"}


def test_optimal_rows_reach_every_threshold(study):
    _, run_dir = study
    dataset = RunStore(run_dir).tables("dataset")
    outputs, rows = dataset.table("outputs"), dataset.table("rows")
    expected = (outputs["delta_ef_pct"] >= 0.05) & (outputs["bz_stress_reduction_pct"] >= 0.0)
    np.testing.assert_array_equal(rows["is_optimal"], expected)
    assert 0 < expected.sum() < len(expected)
    assert dataset.meta["is_optimal"]["thresholds"] == {
        "delta_ef_pct": 0.05,
        "bz_stress_reduction_pct": 0.0,
    }


def test_each_patient_is_in_exactly_one_split(study):
    _, run_dir = study
    dataset = RunStore(run_dir).tables("dataset")
    rows = dataset.table("rows")
    split_of = {}
    for pid, split in zip(rows["patient_id"], rows["split"], strict=True):
        assert split_of.setdefault(pid, split) == split
    counts = [list(split_of.values()).count(s) for s in ("train", "validation", "test")]
    assert sum(counts) == len(dataset.meta["patients"])
    assert all(counts) and counts[0] >= counts[1] >= counts[2]
    assert dataset.meta["splits"]["fractions"] == {"train": 0.7, "validation": 0.2, "test": 0.1}


def test_summary_command_prints_rows_rates_units_and_splits(study):
    _, run_dir = study
    result = CliRunner().invoke(main, ["dataset", "summary", str(run_dir)])
    assert result.exit_code == 0, result.output
    rows = RunStore(run_dir).tables("dataset").meta["rows"]
    assert f"rows: {rows:,} of 120 designs simulated" in result.output
    assert "is_optimal:" in result.output
    for text in ("train", "validation", "test", "delta_ef_pct", "%-points", "edv_ml", "mL"):
        assert text in result.output
    missing = CliRunner().invoke(main, ["dataset", "summary", str(run_dir.parent)])
    assert missing.exit_code == 2 and "no finished dataset stage" in missing.output


def test_one_class_is_an_error_naming_the_thresholds_and_keeps_the_simulations(
    study, registry, tmp_path
):
    path, _ = study
    strict = tmp_path / "pipeline.toml"
    strict.write_text(
        path.read_text().replace("delta_ef_pct = 0.05", "delta_ef_pct = 50.0"),
        encoding="utf-8",
    )
    # The same study name and output folder: the same run directory, adopted.
    strict.write_text(
        strict.read_text().replace('output_dir = "runs"', f'output_dir = "{path.parent}/runs"')
    )
    result = CliRunner().invoke(main, ["run", str(strict), "--adopt-run-dir", "-q"])
    assert result.exit_code == 2, result.output
    assert "dataset.is_optimal: none of the" in result.output
    assert "delta_ef_pct >= 50: 0 rows" in result.output
    journal = (path.parent / "runs" / "ds" / "journal.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in journal]
    last_run = events[max(i for i, e in enumerate(events) if e["event"] == "run_started") :]
    skipped = [e["stage"] for e in last_run if e["event"] == "stage_skipped"]
    assert skipped == ["cohort", "designs", "meshes", "simulate"]
    # Put the study back as it was for the other tests of this module.
    assert run_quietly(path, registry, adopt_run_dir=True).ran == ["dataset"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("delta_ef_pct = 0.05", "ef_gain = 0.05"),
            "dataset.is_optimal.ef_gain: no configured simulator produces 'ef_gain'",
        ),
        (
            ("delta_ef_pct = 0.05", "delta_ef_trajectory_pct = 0.05"),
            "dataset.is_optimal.delta_ef_trajectory_pct: 'delta_ef_trajectory_pct' is a trajectory",
        ),
        (
            ("n_patients = 5", "n_patients = 2"),
            "dataset.splits: the cohort's 2 patient(s) cannot fill the 3 splits",
        ),
    ],
)
def test_bad_dataset_settings_are_refused_before_any_work(write_pipeline, change, message):
    path = write_pipeline(PIPELINE.replace(*change))
    for command in (["validate", str(path)], ["run", str(path)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert "Traceback" not in result.output
    assert not (path.parent / "runs" / "ds" / "artifacts").exists()  # nothing was run


def test_splits_must_add_up(write_pipeline):
    path = write_pipeline(
        PIPELINE.replace("[mesh]", "splits = { train = 0.7, validation = 0.2, test = 0.2 }\n[mesh]")
    )
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert "dataset.splits" in result.output and "must be 1, got 1.1" in result.output
