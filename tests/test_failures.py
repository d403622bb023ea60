"""Plugin calls guarded by the core, and failures that are seen and retried.

A third-party simulator misbehaves in each way the core must catch; the unit fails naming the
plugin and its package, the others finish, the run says so and exits non-zero, and the next
run retries only what failed.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hydraopt.cli import main
from hydraopt.errors import PluginError
from hydraopt.registry import PluginRegistry
from hydraopt.store import RunStore

from conftest import run_quietly
from plugin_sources import EVERY_KIND, MISBEHAVING

PIPELINE = """\
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
{settings}

[execution]
workers = {workers}
failed_evaluations = "{policy}"
evaluation_batch = {batch}
"""
LABEL = "simulator plugin 'misbehaving' (flaky-sims 1.0)"


@pytest.fixture
def registry(install_distribution):
    install_distribution("acme-cardio", "0.9.1", "acme_cardio", EVERY_KIND)
    install_distribution("flaky-sims", "1.0", "flaky_sims", MISBEHAVING)
    return PluginRegistry.discover()


@pytest.fixture
def log_dir(tmp_path):
    folder = tmp_path / "log"
    folder.mkdir()
    return folder


def pipeline_text(log_dir, workers=1, policy="stop", batch=0, **settings):
    """The failures' pipeline; ``policy`` "stop" makes a failed evaluation fail its stage,
    which the tests of the unit machinery need."""
    settings = {"log_dir": str(log_dir), **settings}
    lines = "\n".join(f"{key} = {value!r}" for key, value in settings.items())
    return PIPELINE.format(
        settings=lines.replace("'", '"'), workers=workers, policy=policy, batch=batch
    )


def logged(log_dir, what):
    path = log_dir / what
    return path.read_text().split("\n")[:-1] if path.exists() else []


@pytest.mark.parametrize(
    ("behaviour", "message"),
    [
        ("too-few-rows", "returned 3 rows for 4 designs"),
        ("nan-unflagged", "wall_stress_kpa is NaN or infinite for 4 designs not marked failed"),
        ("dict", "returned a dict, not Outcomes"),
        ("raise", "simulate raised RuntimeError: the solver diverged"),
    ],
)
def test_a_malformed_answer_fails_its_unit_naming_the_plugin(
    behaviour, message, write_pipeline, registry, log_dir
):
    text = pipeline_text(log_dir, behaviour=behaviour, only_patient="SYN002")
    summary = run_quietly(write_pipeline(text), registry, to_stage="simulate")
    assert summary.ran == ["cohort", "designs", "meshes"] and not summary.ok
    [failure] = summary.failed["simulate"]
    assert failure.key == "SYN002__misbehaving"
    assert failure.plugin == LABEL
    assert message in failure.reason
    details = failure.traceback_file.read_text()
    assert "Traceback" in details and LABEL in details
    # The other patients' units are done and kept; nothing was stored for the failed one.
    units = summary.run_dir / "work" / "simulate" / "units"
    assert sorted(p.name.split(".")[0] for p in units.glob("*.h5")) == [
        "SYN001__misbehaving",
        "SYN003__misbehaving",
    ]
    assert RunStore(summary.run_dir).stage_record("simulate") is None


def test_a_transient_failure_reruns_only_the_failed_unit(
    write_pipeline, registry, log_dir, monkeypatch
):
    from hydraopt.stages import simulate as simulate_stage

    path = write_pipeline(pipeline_text(log_dir))
    real = simulate_stage.run_simulation

    def flaky(job, output):
        if job.patient.patient_id == "SYN002":
            raise ConnectionError("licence server unreachable")
        real(job, output)

    monkeypatch.setattr(simulate_stage, "run_simulation", flaky)
    first = run_quietly(path, registry, to_stage="simulate")
    assert [f.reason for f in first.failed["simulate"]] == [
        "ConnectionError: licence server unreachable"
    ]
    monkeypatch.setattr(simulate_stage, "run_simulation", real)
    units_before = len(logged(log_dir, "units"))
    second = run_quietly(path, registry, to_stage="simulate")
    assert second.ok and second.ran == ["simulate"]
    assert logged(log_dir, "units")[units_before:] == [f"{os.getpid()} SYN002"]
    outcomes = RunStore(second.run_dir).shards("outcomes")
    assert sorted(outcomes.keys()) == [f"SYN00{i}__misbehaving" for i in (1, 2, 3)]


def test_a_factory_that_raises_is_reported_by_name(write_pipeline, registry, log_dir):
    summary = run_quietly(
        write_pipeline(pipeline_text(log_dir, behaviour="raise-in-factory")),
        registry,
        to_stage="simulate",
    )
    failures = summary.failed["simulate"]
    assert len(failures) == 3
    assert failures[0].plugin == LABEL
    assert "its factory raised RuntimeError: no licence for this solver" in failures[0].reason


def test_a_hanging_plugin_hits_its_timeout(write_pipeline, registry, log_dir):
    text = pipeline_text(log_dir, behaviour="hang", only_patient="SYN002")
    text = text.replace("[simulators.misbehaving]\n", "[simulators.misbehaving]\ntimeout_s = 3\n")
    start = time.monotonic()
    summary = run_quietly(write_pipeline(text), registry, to_stage="simulate")
    assert time.monotonic() - start < 60
    [failure] = summary.failed["simulate"]
    assert failure.key == "SYN002__misbehaving" and failure.plugin == LABEL
    assert "did not finish within its timeout of 3 s" in failure.reason
    [pid_file] = log_dir.glob("pid-*")
    assert not _alive(int(pid_file.name.removeprefix("pid-")))
    done = sorted(p.name.split(".")[0] for p in (summary.run_dir / "work/simulate/units").iterdir())
    assert done == ["SYN001__misbehaving", "SYN003__misbehaving"]  # the pool carried on


def test_a_dying_worker_fails_only_its_unit_after_one_retry(write_pipeline, registry, log_dir):
    text = pipeline_text(log_dir, workers=2, behaviour="die", only_patient="SYN002")
    summary = run_quietly(write_pipeline(text), registry, to_stage="simulate")
    [failure] = summary.failed["simulate"]
    assert failure.key == "SYN002__misbehaving"
    assert "worker process died (killed by signal SIGKILL), 2 times" in failure.reason
    assert [line.split()[1] for line in logged(log_dir, "units")].count("SYN002") == 2
    done = sorted(p.name.split(".")[0] for p in (summary.run_dir / "work/simulate/units").iterdir())
    assert done == ["SYN001__misbehaving", "SYN003__misbehaving"]


def test_a_worker_killed_once_is_retried_and_the_run_succeeds(write_pipeline, registry, log_dir):
    text = pipeline_text(log_dir, workers=2, behaviour="die-once")
    summary = run_quietly(write_pipeline(text), registry, to_stage="simulate")
    assert summary.ok and "simulate" in summary.ran
    assert len(RunStore(summary.run_dir).shards("outcomes")) == 3


@pytest.mark.parametrize("workers", [1, 2])
def test_plugins_are_built_once_per_process(write_pipeline, registry, log_dir, workers):
    run_quietly(
        write_pipeline(pipeline_text(log_dir, workers=workers)), registry, to_stage="simulate"
    )
    built_in = [line.split()[0] for line in logged(log_dir, "factory")]
    ran_in = [line.split()[0] for line in logged(log_dir, "units")]
    assert len(ran_in) == 3
    # Each process that ran units built the plugin once, and kept it for all its units.
    assert sorted(built_in) == sorted(set(ran_in)) and len(built_in) < len(ran_in)


def test_a_plugin_that_cannot_reach_a_worker_is_refused_by_name(
    write_pipeline, install_distribution
):
    import types

    from hydraopt import hookimpl
    from hydraopt.domain import Outcomes, OutputSpec
    from hydraopt.plugin_types import NoSettings, SimulatorPlugin

    class Local:
        outputs = (OutputSpec("x_kpa", "kPa", "x"),)

        def simulate(self, patient, mesh, designs, workdir):
            return Outcomes(self.outputs, {"x_kpa": np.zeros(len(designs))})

    module = types.ModuleType("script_plugins")

    @hookimpl
    def hydraopt_simulators():
        yield SimulatorPlugin(name="local", factory=lambda settings: Local(), settings=NoSettings)

    module.hydraopt_simulators = hydraopt_simulators
    install_distribution("acme-cardio", "0.9.1", "acme_cardio", EVERY_KIND)
    registry = PluginRegistry.discover(extra={"my-script": module})
    text = PIPELINE.format(settings="", workers=2, policy="stop", batch=0).replace(
        "misbehaving", "local"
    )
    with pytest.raises(PluginError, match=r"simulator plugin 'local' .* cannot be sent to worker"):
        run_quietly(write_pipeline(text), registry, to_stage="simulate")


def test_run_command_ends_with_failures_and_exit_status_1(write_pipeline, registry, log_dir):
    path = write_pipeline(pipeline_text(log_dir, behaviour="raise", only_patient="SYN003"))
    result = CliRunner().invoke(main, ["run", str(path), "--to", "simulate"])
    assert result.exit_code == 1, result.output
    assert "FAILED: 1 units in stage simulate" in result.output
    assert f"simulate / SYN003__misbehaving [{LABEL}]" in result.output
    assert "tracebacks:" in result.output and "summary:" in result.output
    summary = (Path(result.output.strip().splitlines()[-1]) / "SUMMARY.md").read_text()
    assert "**1 units failed**" in summary
    assert "failures/simulate/SYN003__misbehaving.txt" in summary


def test_keep_going_runs_what_does_not_need_the_failed_stage(write_pipeline, registry, log_dir):
    text = pipeline_text(log_dir).replace(
        "designs_per_patient = 4",
        'designs_per_patient = 1000\ngenerator = { plugin = "grid", stiffness_kpa = 1, '
        "t50_days = 1, conductivity_s_per_m = 1, thickness_mm = 1 }",
    )
    path = write_pipeline(text)
    stopped = run_quietly(path, registry, to_stage="simulate")
    assert stopped.ran == ["cohort"] and list(stopped.failed) == ["designs"]
    assert stopped.not_run == ["meshes", "simulate"]
    going = run_quietly(path, registry, keep_going=True, to_stage="simulate")
    assert going.ran == ["meshes"] and going.skipped == ["cohort"]
    assert going.blocked == ["simulate"]


def test_killing_the_driver_stops_its_workers(write_pipeline, registry, log_dir, tmp_path):
    path = write_pipeline(pipeline_text(log_dir, workers=2, behaviour="hang"))
    site = tmp_path / "site-packages"  # where the fixture installed the plugin distributions
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    driver = subprocess.Popen(
        [sys.executable, "-m", "hydraopt", "run", str(path), "-q", "--to", "simulate"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while len(list(log_dir.glob("pid-*"))) < 2:
            assert time.monotonic() < deadline, "the workers never started their units"
            assert driver.poll() is None, "the driver ended early"
            time.sleep(0.2)
        workers = [int(p.name.removeprefix("pid-")) for p in log_dir.glob("pid-*")]
        assert all(_alive(pid) for pid in workers)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers)
    finally:
        if driver.poll() is None:
            driver.kill()


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it has stopped computing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_a_failed_evaluation_is_recorded_and_the_study_goes_on(
    write_pipeline, registry, log_dir, monkeypatch
):
    from hydraopt.stages import simulate as simulate_stage

    text = pipeline_text(log_dir, policy="record", batch=3).replace(
        "designs_per_patient = 4",
        "designs_per_patient = 4\nis_optimal = { wall_stress_kpa = 15.0 }",
    )
    path = write_pipeline(text)
    real = simulate_stage.run_simulation

    def flaky(job, output):
        if job.patient.patient_id == "SYN002" and job.rows == (3, 4):
            raise ConnectionError("licence server unreachable")
        real(job, output)

    monkeypatch.setattr(simulate_stage, "run_simulation", flaky)
    first = run_quietly(path, registry)
    # The study went on past simulate: the dataset was built from what was simulated.
    assert first.ok and "dataset" in first.ran
    [failure] = first.recorded["simulate"]
    assert failure.key == "SYN002__misbehaving__rows3-4"
    assert failure.reason == "ConnectionError: licence server unreachable"
    outcomes = RunStore(first.run_dir).shards("outcomes")
    table = outcomes.table("SYN002__misbehaving", "outcomes")
    assert table["failed"].tolist() == [False, False, False, True]
    assert table["failure_reason"][3] == (
        "evaluation failed: ConnectionError: licence server unreachable"
    )
    assert np.isnan(table["wall_stress_kpa"][3])
    summary_text = first.summary_file.read_text()
    assert "1 units recorded as failed" in summary_text
    assert "failures/simulate/SYN002__misbehaving__rows3-4.txt" in summary_text
    finished = [
        line
        for line in RunStore(first.run_dir).journal_path.read_text().splitlines()
        if '"run_finished"' in line
    ]
    assert "licence server unreachable" in finished[-1]

    # The next run retries that evaluation task only, and the stages after it see the change.
    monkeypatch.setattr(simulate_stage, "run_simulation", real)
    units_before = len(logged(log_dir, "units"))
    second = run_quietly(path, registry)
    assert second.ok and not second.recorded
    assert logged(log_dir, "units")[units_before:] == [f"{os.getpid()} SYN002"]
    assert "simulate" in second.ran and "dataset" in second.ran
    table = RunStore(second.run_dir).shards("outcomes").table("SYN002__misbehaving", "outcomes")
    assert not table["failed"].any()
    assert not (second.run_dir / "failures" / "simulate").exists()


def test_a_simulator_with_no_finished_evaluation_fails_its_stage(write_pipeline, registry, log_dir):
    path = write_pipeline(pipeline_text(log_dir, policy="record", behaviour="raise"))
    summary = run_quietly(path, registry, to_stage="simulate")
    assert not summary.ok and len(summary.failed["simulate"]) == 3
    assert RunStore(summary.run_dir).stage_record("simulate") is None


def test_a_hanging_evaluation_batch_is_recorded_with_its_timeout(write_pipeline, registry, log_dir):
    text = pipeline_text(
        log_dir, policy="record", batch=2, behaviour="hang", only_patient="SYN003"
    ).replace("[simulators.misbehaving]", "[simulators.misbehaving]\ntimeout_s = 3")
    summary = run_quietly(write_pipeline(text), registry, to_stage="simulate")
    assert summary.ok
    assert sorted(f.key for f in summary.recorded["simulate"]) == [
        "SYN003__misbehaving__rows0-2",
        "SYN003__misbehaving__rows2-4",
    ]
    table = RunStore(summary.run_dir).shards("outcomes").table("SYN003__misbehaving", "outcomes")
    assert table["failed"].all()
    assert "did not finish within its timeout of 3 s" in table["failure_reason"][0]


def test_run_command_reports_recorded_failures_and_exits_0(write_pipeline, registry, log_dir):
    text = pipeline_text(log_dir, policy="record", behaviour="raise", only_patient="SYN003")
    result = CliRunner().invoke(main, ["run", str(write_pipeline(text)), "--to", "simulate", "-q"])
    assert result.exit_code == 0, result.output
    assert "recorded as failed, the study went on: 1 units in stage simulate" in result.output
    assert f"simulate / SYN003__misbehaving [{LABEL}]" in result.output
