import json

import numpy as np
import pytest

from hydraopt.errors import HydraoptError
from hydraopt.registry import PluginRegistry
from hydraopt.stages import designs as designs_stage
from hydraopt.store import RunStore

from conftest import QUICK_PIPELINE, designs_of, run_quietly


@pytest.fixture(scope="module")
def registry():
    return PluginRegistry.discover()


def test_end_to_end_writes_the_run_directory(write_pipeline, registry):
    summary = run_quietly(write_pipeline(), registry)
    assert summary.ran == ["cohort", "designs"]
    run_dir = summary.run_dir
    assert (run_dir / "pipeline.resolved.toml").is_file()
    designs = designs_of(run_dir)
    assert len(designs) == 3
    assert all(len(table["stiffness_kpa"]) == 16 for table in designs.values())
    provenance = RunStore(run_dir).shards("designs").provenance
    assert provenance["stage"] == "designs"
    assert provenance["seed"] == 7
    assert provenance["plugins"][0]["name"] == "sobol"
    assert provenance["plugins"][0]["package"] == "hydraopt"
    assert "numpy" in provenance["packages"]
    assert len(provenance["config_hash"]) == 64
    events = [json.loads(line)["event"] for line in (run_dir / "journal.jsonl").open()]
    assert events[0] == "run_started" and events[-1] == "run_finished"


def test_rerun_skips_finished_stages(write_pipeline, registry):
    path = write_pipeline()
    run_quietly(path, registry)
    summary = run_quietly(path, registry)
    assert summary.ran == [] and summary.skipped == ["cohort", "designs"]


def test_from_and_force_redo_on_purpose(write_pipeline, registry):
    path = write_pipeline()
    first = run_quietly(path, registry)
    before = designs_of(first.run_dir)
    assert run_quietly(path, registry, from_stage="designs").ran == ["designs"]
    assert run_quietly(path, registry, force=True).ran == ["cohort", "designs"]
    after = designs_of(first.run_dir)
    for pid in before:  # redone work is reproduced exactly
        np.testing.assert_array_equal(before[pid]["t50_days"], after[pid]["t50_days"])


def test_unknown_from_stage_is_a_user_error(write_pipeline, registry):
    with pytest.raises(HydraoptError, match="--from surrogate: no such stage in this pipeline"):
        run_quietly(write_pipeline(), registry, from_stage="surrogate")


def test_changed_config_reruns_only_what_depends_on_it(write_pipeline, registry):
    run_quietly(write_pipeline(), registry)
    changed = QUICK_PIPELINE.replace("designs_per_patient = 16", "designs_per_patient = 8")
    summary = run_quietly(write_pipeline(changed), registry)
    assert summary.ran == ["designs"] and summary.skipped == ["cohort"]
    reseeded = changed.replace("seed = 7", "seed = 8")
    assert run_quietly(write_pipeline(reseeded), registry).ran == ["cohort", "designs"]


def test_edited_cohort_file_reruns_the_cohort(write_pipeline, registry, tmp_path):
    from hydraopt.cohorts import write_cohort_csv
    from hydraopt.synthetic_cohort import synthetic_cohort

    write_cohort_csv(synthetic_cohort(2, seed=1), tmp_path / "c.csv")
    text = QUICK_PIPELINE.replace(
        'source = "synthetic"\nn_patients = 3', 'source = "csv"\npath = "c.csv"'
    )
    path = write_pipeline(text)
    run_quietly(path, registry)
    assert run_quietly(path, registry).ran == []
    write_cohort_csv(synthetic_cohort(3, seed=2), tmp_path / "c.csv")
    assert run_quietly(path, registry).ran == ["cohort", "designs"]


def test_killed_run_resumes_and_matches_an_uninterrupted_one(
    write_pipeline, registry, monkeypatch, tmp_path
):
    reference = run_quietly(
        write_pipeline(QUICK_PIPELINE.replace('"runs"', '"reference"')), registry
    )
    path = write_pipeline()
    real = designs_stage.generate_patient_designs
    done = []

    def dies_on_the_third(job, output):
        if len(done) == 2:
            raise KeyboardInterrupt("killed")
        done.append(job.patient_id)
        return real(job, output)

    monkeypatch.setattr(designs_stage, "generate_patient_designs", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_quietly(path, registry)
    resumed_jobs = []

    def counting(job, output):
        resumed_jobs.append(job.patient_id)
        return real(job, output)

    monkeypatch.setattr(designs_stage, "generate_patient_designs", counting)
    summary = run_quietly(path, registry)
    assert summary.skipped == ["cohort"] and summary.ran == ["designs"]
    assert len(resumed_jobs) == 1  # only the patient that was not finished
    expected, got = designs_of(reference.run_dir), designs_of(summary.run_dir)
    assert expected.keys() == got.keys()
    for pid in expected:
        for column in expected[pid]:
            np.testing.assert_array_equal(expected[pid][column], got[pid][column])
    # One generation of units is kept (for a later change to reuse), no more.
    assert len(list((summary.run_dir / "work" / "designs" / "units").glob("*.h5"))) == 3


def test_process_pool_gives_the_same_designs(write_pipeline, registry):
    inline = run_quietly(write_pipeline(QUICK_PIPELINE.replace('"runs"', '"inline"')), registry)
    pooled_text = QUICK_PIPELINE.replace("workers = 1", "workers = 2").replace('"runs"', '"pool"')
    pooled = run_quietly(write_pipeline(pooled_text), registry)
    a, b = designs_of(inline.run_dir), designs_of(pooled.run_dir)
    for pid in a:
        np.testing.assert_array_equal(a[pid]["stiffness_kpa"], b[pid]["stiffness_kpa"])


def test_force_discards_partial_work(write_pipeline, registry, monkeypatch):
    path = write_pipeline()
    real = designs_stage.generate_patient_designs
    calls = []

    def dies_on_the_second(job, output):
        if calls:
            raise KeyboardInterrupt("killed")
        calls.append(job.patient_id)
        return real(job, output)

    monkeypatch.setattr(designs_stage, "generate_patient_designs", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        run_quietly(path, registry)
    redone = []
    monkeypatch.setattr(
        designs_stage,
        "generate_patient_designs",
        lambda job, output: redone.append(job) or real(job, output),
    )
    run_quietly(path, registry, force=True)
    assert len(redone) == 3


def test_generator_that_cannot_deliver_fails_its_units_naming_it(write_pipeline, registry):
    text = QUICK_PIPELINE.replace(
        'generator = { plugin = "sobol" }',
        'generator = { plugin = "grid", stiffness_kpa = 1, t50_days = 1, '
        "conductivity_s_per_m = 1, thickness_mm = 1 }",
    ).replace("designs_per_patient = 16", "designs_per_patient = 1000")
    summary = run_quietly(write_pipeline(text), registry)
    assert not summary.ok and summary.ran == ["cohort"]
    [failures] = summary.failed.values()
    assert len(failures) == 3
    assert "generator plugin 'grid' (hydraopt" in failures[0].plugin
    assert "the grid holds 96" in failures[0].reason


def test_unwritable_output_dir_is_a_user_error(write_pipeline, registry, tmp_path):
    (tmp_path / "taken").write_text("a file, not a folder")
    text = QUICK_PIPELINE.replace('output_dir = "runs"', 'output_dir = "taken"')
    with pytest.raises(HydraoptError, match="cannot create the run directory"):
        run_quietly(write_pipeline(text), registry)


def test_artifacts_are_readable_by_others(write_pipeline, registry):
    import os
    import stat

    previous = os.umask(0o022)
    try:
        summary = run_quietly(write_pipeline(), registry)
    finally:
        os.umask(previous)
    mode = (summary.run_dir / "artifacts" / "designs" / "SYN001.h5").stat().st_mode
    assert stat.S_IMODE(mode) == 0o644
