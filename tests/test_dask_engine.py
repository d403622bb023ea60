"""The Dask engine: a study on a 2-worker LocalCluster equals the local engine's, array for
array; a killed driver or a lost worker resumes without redoing finished evaluations."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hydraopt.registry import PluginRegistry
from hydraopt.store import RunStore

from conftest import run_quietly

pytest.importorskip("distributed")

STUDY = """\
[study]
name = "cohort"
seed = 3
output_dir = "{output_dir}"

[cohort]
n_patients = 2

[dataset]
designs_per_patient = 3

[mesh]
element_size_mm = 8.0

[simulators.reference-mechanics]

[simulators.reference-ep]
max_time_ms = 400.0

[execution]
engine = "{engine}"
workers = 2
evaluation_batch = {batch}
"""
# The stages whose work is spread over workers, and those before them.
STAGES = ("cohort", "designs", "meshes", "simulate")


@pytest.fixture(scope="module")
def registry():
    return PluginRegistry.discover()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, registry):
    """The study on the local engine, one evaluation task per design."""
    folder = tmp_path_factory.mktemp("local")
    path = folder / "pipeline.toml"
    path.write_text(STUDY.format(output_dir="runs", engine="local", batch=1))
    summary = run_quietly(path, registry, to_stage="simulate")
    assert summary.ok and summary.ran == list(STAGES)
    return summary.run_dir


def artifact_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    """Every array of every artifact of the study, by artifact/file/dataset path."""
    import h5py

    store = RunStore(run_dir)
    arrays: dict[str, np.ndarray] = {}
    for stage in STAGES:
        for name, output in store.stage_record(stage)["outputs"].items():
            path = run_dir / output["path"]
            for file in sorted(path.glob("*.h5")) if path.is_dir() else [path]:
                with h5py.File(file, "r") as handle:

                    def keep(inner, item, prefix=f"{name}/{file.stem}/"):
                        if isinstance(item, h5py.Dataset):
                            arrays[prefix + inner] = item[()]

                    handle.visititems(keep)
    return arrays


def assert_same_arrays(run_dir: Path, reference: Path) -> None:
    got, expected = artifact_arrays(run_dir), artifact_arrays(reference)
    assert sorted(got) == sorted(expected)
    for key, values in expected.items():
        if np.asarray(values).dtype.kind in "fc":
            np.testing.assert_array_equal(got[key], values, err_msg=key)
        else:
            assert np.asarray(got[key]).tolist() == np.asarray(values).tolist(), key


def test_a_study_on_a_dask_local_cluster_equals_the_local_engine(tmp_path, registry, local_run):
    path = tmp_path / "pipeline.toml"
    path.write_text(STUDY.format(output_dir="runs", engine="dask", batch=1))
    summary = run_quietly(path, registry, to_stage="simulate")
    assert summary.ok and summary.ran == list(STAGES)
    assert_same_arrays(summary.run_dir, local_run)
    journal = (summary.run_dir / "journal.jsonl").read_text()
    assert '"engine_started"' in journal and '"engine": "dask"' in journal
    units = (summary.run_dir / "work" / "simulate" / "ledger.jsonl").read_text()
    assert "SYN001__reference-ep__rows2-3" in units


def _driver(path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "hydraopt", "run", str(path), "-q", "--to", "simulate"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _done_units(run_dir: Path) -> list[str]:
    ledger = run_dir / "work" / "simulate" / "ledger.jsonl"
    return ledger.read_text().splitlines() if ledger.is_file() else []


def test_a_driver_killed_mid_study_resumes_on_dask_to_equal_artifacts(
    tmp_path, registry, local_run
):
    path = tmp_path / "pipeline.toml"
    path.write_text(STUDY.format(output_dir="runs", engine="dask", batch=1))
    run_dir = tmp_path / "runs" / "cohort"
    driver = _driver(path)
    try:
        deadline = time.monotonic() + 240
        while len(_done_units(run_dir)) < 3:
            assert driver.poll() is None, driver.stderr.read().decode()
            assert time.monotonic() < deadline, "no evaluation finished"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    finished = {line: None for line in _done_units(run_dir)}
    assert 3 <= len(finished) < 12, "the study ended before it was killed"
    kept = {p.name: p.stat().st_mtime_ns for p in (run_dir / "work/simulate/units").glob("*.h5")}
    summary = run_quietly(path, registry, to_stage="simulate")
    assert summary.ok and "simulate" in summary.ran
    # The evaluations finished before the kill were not redone: their files are untouched.
    after = (run_dir / "work" / "simulate" / "units").glob("*.h5")
    untouched = [p.name for p in after if kept.get(p.name) == p.stat().st_mtime_ns]
    assert len(untouched) >= len(finished)
    assert_same_arrays(summary.run_dir, local_run)


MISBEHAVING_STUDY = """\
[study]
name = "f"
seed = 1
output_dir = "runs"

[cohort]
n_patients = 3

[dataset]
designs_per_patient = 4

[mesh]
plugin = "slab"

[simulators.misbehaving]
log_dir = "{log_dir}"
behaviour = "{behaviour}"
only_patient = "SYN002"
{timeout}

[execution]
engine = "dask"
workers = 2
"""


@pytest.fixture
def misbehaving(install_distribution):
    from plugin_sources import EVERY_KIND, MISBEHAVING

    install_distribution("acme-cardio", "0.9.1", "acme_cardio", EVERY_KIND)
    install_distribution("flaky-sims", "1.0", "flaky_sims", MISBEHAVING)
    return PluginRegistry.discover()


def misbehaving_study(tmp_path, behaviour, timeout=""):
    """The misbehaving simulator's study file, and the folder its plugin logs to."""
    log_dir = tmp_path / "log"
    log_dir.mkdir()
    path = tmp_path / "pipeline.toml"
    path.write_text(MISBEHAVING_STUDY.format(log_dir=log_dir, behaviour=behaviour, timeout=timeout))
    return path, log_dir


def test_a_lost_dask_worker_has_its_task_retried(tmp_path, misbehaving):
    path, log_dir = misbehaving_study(tmp_path, "die-once")
    summary = run_quietly(path, misbehaving, to_stage="simulate")
    # SYN002's worker killed itself once; the scheduler gave its task to a new worker.
    assert summary.ok and not summary.recorded
    assert (log_dir / "died-SYN002").exists()
    table = RunStore(summary.run_dir).shards("outcomes").table("SYN002__misbehaving", "outcomes")
    assert not table["failed"].any()


def test_a_hanging_task_on_dask_is_stopped_at_its_timeout(tmp_path, misbehaving):
    path, log_dir = misbehaving_study(tmp_path, "hang", "timeout_s = 3")
    start = time.monotonic()
    summary = run_quietly(path, misbehaving, to_stage="simulate")
    assert time.monotonic() - start < 120
    [failure] = summary.recorded["simulate"]
    assert failure.key == "SYN002__misbehaving"
    assert "did not finish within its timeout of 3 s" in failure.reason
    # The hanging simulator's process was killed with its task, not left to run.
    [pid_file] = log_dir.glob("pid-*")
    pid = int(pid_file.name.removeprefix("pid-"))
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or _zombie(pid)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def test_an_unknown_cluster_option_is_an_error_naming_the_key(tmp_path, registry):
    from hydraopt.errors import ConfigError

    text = STUDY.format(output_dir="runs", engine="dask", batch=0) + (
        "\n[execution.dask]\ncluster_options = { no_such_option = 1 }\n"
    )
    path = tmp_path / "pipeline.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=r"execution\.dask\.cluster_options"):
        run_quietly(path, registry, to_stage="simulate")
    assert os.path.isdir(tmp_path / "runs" / "cohort" / "artifacts")


def test_slurm_settings_reach_the_job_script():
    pytest.importorskip("dask_jobqueue")
    from hydraopt.config import DaskConfig
    from hydraopt.dask_engine import make_cluster

    options = {
        "queue": "compute",
        "account": "cardio",
        "cores": 16,
        "processes": 16,
        "memory": "64GB",
        "walltime": "04:00:00",
        "job_extra_directives": ["--constraint=skylake"],
    }
    with make_cluster(DaskConfig(cluster="slurm", cluster_options=options), 32) as cluster:
        script = cluster.job_script()
    for line in ("-p compute", "-A cardio", "-t 04:00:00", "--constraint=skylake"):
        assert f"#SBATCH {line}" in script
    assert "--nthreads 1" in script and "--nworkers 16" in script
    # Workers may start the child process that enforces a simulator's timeout.
    assert "export DASK_DISTRIBUTED__WORKER__DAEMON=False" in script
