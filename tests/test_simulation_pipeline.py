"""The meshes and simulate stages end to end, their resume, and `hydraopt simulate`."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from hydraopt.cli import main
from hydraopt.registry import PluginRegistry
from hydraopt.stages import simulate as simulate_stage
from hydraopt.store import RunStore

from conftest import run_quietly

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


def test_meshes_and_outcomes_with_units(write_pipeline, registry, monkeypatch):
    path = write_pipeline(PIPELINE)
    real = simulate_stage.run_simulation
    calls = []

    def killed_after_three(job, output):
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        calls.append((job.patient.patient_id, job.simulator.name))
        return real(job, output)

    monkeypatch.setattr(simulate_stage, "run_simulation", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        run_quietly(path, registry, to_stage="simulate")
    resumed = []
    monkeypatch.setattr(
        simulate_stage,
        "run_simulation",
        lambda job, output: resumed.append(job.simulator.name) or real(job, output),
    )
    summary = run_quietly(path, registry, to_stage="simulate")
    assert summary.ran == ["simulate"] and len(resumed) == 1

    run_dir = summary.run_dir
    for pid in ("SYN001", "SYN002"):
        assert (run_dir / "meshes" / f"{pid}.xdmf").is_file()
        assert (run_dir / "meshes" / f"{pid}.png").is_file()
        assert (run_dir / "simulations" / pid / "reference-ep" / "activation.xdmf").is_file()
    outcomes = RunStore(run_dir).shards("outcomes")
    meta = outcomes.meta
    units = meta["simulators"]["reference-mechanics"]["outputs"]
    assert units["delta_ef_pct"]["unit"] == "%-points"
    assert units["delta_ef_trajectory_pct"]["shape"] == [4]
    ep_units = meta["simulators"]["reference-ep"]["outputs"]
    assert ep_units["total_activation_time_ms"]["unit"] == "ms"
    table = outcomes.table("SYN001__reference-mechanics", "outcomes")
    assert table["delta_ef_trajectory_pct"].shape == (3, 4)
    assert not table["failed"].any()
    assert run_quietly(path, registry, to_stage="simulate").ran == []


def test_a_patient_the_model_cannot_represent_is_a_result(write_pipeline, registry, monkeypatch):
    from hydraopt_simulators.mechanics import reference

    def cannot_calibrate(self, patient, mesh):
        from hydraopt.errors import DataError

        raise DataError(f"patient {patient.patient_id!r}: cannot reach the volumes")

    monkeypatch.setattr(reference.ReferenceMechanics, "heart", cannot_calibrate)
    text = PIPELINE.replace("[simulators.reference-ep]\nmax_time_ms = 400.0\n", "")
    summary = run_quietly(write_pipeline(text), registry, to_stage="simulate")
    assert summary.ok
    outcomes = RunStore(summary.run_dir).shards("outcomes")
    assert outcomes.meta["failed_designs"] == {"reference-mechanics": 6}
    table = outcomes.table("SYN002__reference-mechanics", "outcomes")
    assert table["failed"].all() and np.isnan(table["delta_ef_pct"]).all()
    assert "cannot reach the volumes" in table["failure_reason"][0]


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
    summary = run_quietly(
        write_pipeline(PIPELINE.replace("designs_per_patient = 3", "designs_per_patient = 2")),
        registry,
        to_stage="simulate",
    )
    events = [json.loads(line) for line in (summary.run_dir / "journal.jsonl").open()]
    finished = [e["stage"] for e in events if e["event"] == "stage_finished"]
    assert finished == ["cohort", "designs", "meshes", "simulate"]
