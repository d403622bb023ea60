"""The meshes and simulate stages end to end, their resume, and `hydraopt simulate`."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hydraopt.cli import main
from hydraopt.config import load_pipeline
from hydraopt.pipeline import run_pipeline
from hydraopt.progress import Reporter
from hydraopt.registry import PluginRegistry
from hydraopt.stages import simulate as simulate_stage
from hydraopt.store import RunStore, read_h5_table

PIPELINE = """\
[study]
name = "sim"
seed = 3
output_dir = "runs"

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
workers = 1
"""


@pytest.fixture(scope="module")
def registry():
    return PluginRegistry.discover()


def run(path, registry, **options):
    return run_pipeline(load_pipeline(path, registry), registry, Reporter(quiet=True), **options)


def test_meshes_and_outcomes_with_units(write_pipeline, registry, monkeypatch):
    path = write_pipeline(PIPELINE)
    real = simulate_stage.run_simulation
    calls = []

    def killed_after_three(job):
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        calls.append((job.patient.patient_id, job.simulator_name))
        return real(job)

    monkeypatch.setattr(simulate_stage, "run_simulation", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        run(path, registry)
    resumed = []
    monkeypatch.setattr(
        simulate_stage,
        "run_simulation",
        lambda job: resumed.append(job.simulator_name) or real(job),
    )
    summary = run(path, registry)
    assert summary.ran == ["simulate"] and len(resumed) == 1

    run_dir = summary.run_dir
    for pid in ("SYN001", "SYN002"):
        assert (run_dir / "meshes" / f"{pid}.xdmf").is_file()
        assert (run_dir / "meshes" / f"{pid}.png").is_file()
        assert (run_dir / "simulations" / pid / "reference-ep" / "activation.xdmf").is_file()
    store = RunStore(run_dir)
    meta = store.read_meta("outcomes")
    units = meta["simulators"]["reference-mechanics"]["outputs"]
    assert units["delta_ef_pct"]["unit"] == "%-points"
    assert units["delta_ef_trajectory_pct"]["shape"] == [4]
    ep_units = meta["simulators"]["reference-ep"]["outputs"]
    assert ep_units["total_activation_time_ms"]["unit"] == "ms"
    table = read_h5_table(
        run_dir / "artifacts" / "outcomes.h5", "outcomes/SYN001/reference-mechanics"
    )
    assert table["delta_ef_trajectory_pct"].shape == (3, 4)
    assert not table["failed"].any()
    assert run(path, registry).ran == []


def test_a_failing_patient_is_recorded_not_fatal(write_pipeline, registry, monkeypatch):
    from hydraopt_simulators.mechanics import reference

    def cannot_calibrate(self, patient, mesh):
        from hydraopt.errors import DataError

        raise DataError(f"patient {patient.patient_id!r}: cannot reach the volumes")

    monkeypatch.setattr(reference.ReferenceMechanics, "heart", cannot_calibrate)
    text = PIPELINE.replace("[simulators.reference-ep]\nmax_time_ms = 400.0\n", "")
    summary = run(write_pipeline(text), registry)
    meta = RunStore(summary.run_dir).read_meta("outcomes")
    assert len(meta["failed_units"]) == 2
    assert "cannot reach the volumes" in meta["failed_units"][0]
    table = read_h5_table(
        summary.run_dir / "artifacts" / "outcomes.h5", "outcomes/SYN002/reference-mechanics"
    )
    assert table["failed"].all() and np.isnan(table["delta_ef_pct"]).all()


def simulate_command(path, polymer, *extra):
    """`hydraopt simulate` on SYN001 with one design of ``polymer`` (scar_bz50, 5 kPa,
    120 days, 0.02 S/m, 1 mm)."""
    design = [
        "--coverage",
        "scar_bz50",
        "--stiffness-kpa",
        "5",
        "--t50-days",
        "120",
        "--conductivity-s-per-m",
        "0.02",
        "--thickness-mm",
        "1",
    ]
    arguments = ["simulate", str(path), "--patient", "SYN001", "--polymer", polymer]
    return CliRunner().invoke(main, [*arguments, *design, *extra])


def test_simulate_command_prints_outcomes_with_units(write_pipeline):
    path = write_pipeline(PIPELINE)
    result = simulate_command(path, "alginate-algisyl", "--simulator", "reference-mechanics")
    assert result.exit_code == 0, result.output
    assert "delta_ef_pct" in result.output and "%-points" in result.output
    bad = simulate_command(path, "nope")
    assert bad.exit_code == 2 and "polymer 'nope' is not in the library" in bad.output


def test_journal_records_the_stages(write_pipeline, registry):
    summary = run(
        write_pipeline(PIPELINE.replace("designs_per_patient = 3", "designs_per_patient = 2")),
        registry,
    )
    events = [json.loads(line) for line in (summary.run_dir / "journal.jsonl").open()]
    finished = [e["stage"] for e in events if e["event"] == "stage_finished"]
    assert finished == ["cohort", "designs", "meshes", "simulate"]
