"""Runs that cannot corrupt each other: the lock, the owner, digests re-checked, stale code."""

import csv
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hydraopt.errors import StoreError
from hydraopt.registry import PluginRegistry
from hydraopt.stages import designs as designs_stage
from hydraopt.store import RunStore

from conftest import QUICK_PIPELINE, designs_of, run_quietly
from plugin_sources import EVERY_KIND, MISBEHAVING


@pytest.fixture(scope="module")
def registry():
    return PluginRegistry.discover()


def test_a_second_concurrent_run_is_refused_naming_the_holder(write_pipeline, registry):
    path = write_pipeline()
    run_dir = run_quietly(path, registry).run_dir
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from hydraopt.run_lock import run_lock
                with run_lock(Path({str(run_dir)!r})):
                    print("held", flush=True)
                    time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreError, match=rf"in use by another run \(pid {holder.pid} on "):
            run_quietly(path, registry)
    finally:
        holder.kill()
        holder.wait()
    assert run_quietly(path, registry).skipped == ["cohort", "designs"]  # released when it died


def test_another_pipeline_file_with_the_same_study_is_refused(write_pipeline, registry):
    first = write_pipeline(name="a.toml")
    run_quietly(first, registry)
    other = write_pipeline(QUICK_PIPELINE.replace("seed = 7", "seed = 8"), name="b.toml")
    with pytest.raises(StoreError, match=r"holds the results of another pipeline file, .*a\.toml"):
        run_quietly(other, registry)
    taken = run_quietly(other, registry, adopt_run_dir=True)
    assert taken.ran == ["cohort", "designs"]
    with pytest.raises(StoreError, match=r"another pipeline file, .*b\.toml"):
        run_quietly(first, registry)


def test_an_artifact_corrupted_in_place_is_redone(write_pipeline, registry):
    path = write_pipeline()
    first = run_quietly(path, registry)
    before = designs_of(first.run_dir)
    artifact = first.run_dir / "artifacts" / "designs" / "SYN002.h5"
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    again = run_quietly(path, registry)
    assert again.ran == ["designs"] and again.skipped == ["cohort"]
    after = designs_of(again.run_dir)
    for pid in before:
        for column in before[pid]:
            np.testing.assert_array_equal(before[pid][column], after[pid][column])


def test_a_truncated_work_file_is_redone_not_a_dead_end(write_pipeline, registry, monkeypatch):
    path = write_pipeline()
    real = designs_stage.generate_patient_designs
    calls = []

    def killed_on_the_third(job, output):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        calls.append(job.patient_id)
        real(job, output)

    monkeypatch.setattr(designs_stage, "generate_patient_designs", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        run_quietly(path, registry)
    units = sorted((path.parent / "runs/t/work/designs/units").glob("*.h5"))
    assert len(units) == 2
    units[0].write_bytes(units[0].read_bytes()[:200])  # a disk that filled up, say
    (units[0].parent / ".SYN009.h5.abcdef.tmp").write_bytes(b"half a file")
    redone = []
    monkeypatch.setattr(
        designs_stage,
        "generate_patient_designs",
        lambda job, output: redone.append(job.patient_id) or real(job, output),
    )
    summary = run_quietly(path, registry)
    assert summary.ok and summary.ran == ["designs"]
    assert sorted(redone) == sorted([units[0].name.split(".")[0], "SYN003"])
    assert not list(units[0].parent.glob(".*.tmp"))


def test_an_edited_polymer_library_redoes_what_depends_on_it(write_pipeline, registry, tmp_path):
    """Generators draw inside each polymer's achievable ranges: narrowing one polymer's
    stiffness range must change that polymer's designs, not leave them as they were."""
    from hydraopt.polymer_library import bundled_library_path

    library = tmp_path / "library.csv"
    library.write_text(bundled_library_path().read_text())
    text = QUICK_PIPELINE.replace("[dataset]", '[polymers]\nlibrary = "library.csv"\n\n[dataset]')
    path = write_pipeline(text)
    first = run_quietly(path, registry)
    with library.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["stiffness_min_kpa"], rows[0]["stiffness_max_kpa"] = "40", "50"
    with library.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    edited = run_quietly(path, registry)
    assert edited.ran == ["cohort", "designs"]
    designs = designs_of(edited.run_dir)
    fresh_path = write_pipeline(text.replace('"runs"', '"fresh"'), name="fresh.toml")
    fresh = run_quietly(fresh_path, registry)
    expected = designs_of(fresh.run_dir)
    for pid in designs:
        for column in designs[pid]:
            np.testing.assert_array_equal(designs[pid][column], expected[pid][column])
        first_polymer = designs[pid]["polymer_index"] == 0
        assert np.all(designs[pid]["stiffness_kpa"][first_polymer] >= 40 * (1 - 1e-9))
    assert first.run_dir == edited.run_dir


def test_changed_plugin_code_cannot_reuse_stale_results(write_pipeline, install_distribution):
    install_distribution("acme-cardio", "0.9.1", "acme_cardio", EVERY_KIND)
    install_distribution("flaky-sims", "1.0", "flaky_sims", MISBEHAVING)
    registry = PluginRegistry.discover()
    text = QUICK_PIPELINE.replace(
        "[execution]", '[mesh]\nplugin = "slab"\n\n[simulators.misbehaving]\n\n[execution]'
    )
    path = write_pipeline(text)
    first = run_quietly(path, registry, to_stage="simulate")
    assert first.ran == ["cohort", "designs", "meshes", "simulate"]
    assert run_quietly(path, registry, to_stage="simulate").ran == []
    # The plugin's code changes; its version (1.0) does not: its results must be redone.
    module = path.parent / "site-packages" / "flaky_sims.py"
    module.write_text(module.read_text().replace("30.0 / (1", "31.0 / (1"))
    changed = run_quietly(path, registry, to_stage="simulate")
    assert changed.ran == ["simulate"] and changed.skipped == ["cohort", "designs", "meshes"]


def test_one_simulators_settings_rerun_only_its_units(
    write_pipeline, install_distribution, tmp_path
):
    install_distribution("acme-cardio", "0.9.1", "acme_cardio", EVERY_KIND)
    install_distribution("flaky-sims", "1.0", "flaky_sims", MISBEHAVING)
    registry = PluginRegistry.discover()
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    simulators = (
        '[mesh]\nplugin = "slab"\n\n[simulators.misbehaving]\nlog_dir = "LOG"\n\n'
        "[simulators.laplace-wall-stress]\nsystolic_pressure_mmhg = 110.0\n\n[execution]"
    ).replace("LOG", str(log_dir))
    text = QUICK_PIPELINE.replace("[execution]", simulators)
    first = run_quietly(write_pipeline(text), registry, to_stage="simulate")
    assert first.ok
    assert len((log_dir / "units").read_text().splitlines()) == 3
    key = "SYN001__laplace-wall-stress"
    before = RunStore(first.run_dir).shards("outcomes").table(key, "outcomes")["wall_stress_kpa"]
    changed = text.replace("systolic_pressure_mmhg = 110.0", "systolic_pressure_mmhg = 130.0")
    second = run_quietly(write_pipeline(changed), registry, to_stage="simulate")
    assert second.ran == ["simulate"]
    assert len((log_dir / "units").read_text().splitlines()) == 3  # misbehaving: not redone
    outcomes = RunStore(second.run_dir).shards("outcomes")
    assert len(outcomes) == 6
    after = outcomes.table(key, "outcomes")["wall_stress_kpa"]
    np.testing.assert_allclose(after / before, 130.0 / 110.0)  # Laplace: stress ~ pressure
