"""The example third-party plugin (examples/plugins/hydraopt-thick-wall), installed as its
own distribution (`make test` installs it): hydraopt lists it with its package and versions,
and a pipeline runs it beside the built-in simulators."""

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from hydraopt.cli import main
from hydraopt.config import load_pipeline
from hydraopt.pipeline import run_pipeline
from hydraopt.progress import Reporter
from hydraopt.registry import PluginRegistry
from hydraopt.store import RunStore

EXAMPLE = Path(__file__).parents[1] / "examples" / "thick_wall_plugin.toml"


def test_hydraopt_plugins_lists_it_with_its_package_and_versions():
    result = CliRunner().invoke(main, ["plugins", "--kind", "simulator"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if "thick-wall-stress" in line)
    assert "hydraopt-thick-wall" in row and "0.1.0" in row


def test_a_pipeline_runs_it_beside_the_built_in_simulators(tmp_path):
    registry = PluginRegistry.discover()
    pipeline = load_pipeline(
        EXAMPLE,
        registry,
        overrides={"study.output_dir": str(tmp_path), "dataset.designs_per_patient": 8},
    )
    run_pipeline(pipeline, registry, Reporter(quiet=True))
    store = RunStore(pipeline.run_dir)
    outputs = store.shards("outcomes").meta["simulators"]
    assert set(outputs) == {"reference-mechanics", "thick-wall-stress"}
    table = store.tables("dataset").table("outputs")
    relief = table["mean_wall_stress_reduction_pct"]
    assert len(relief) == 24 and np.all(np.isfinite(relief)) and relief.max() > 0


def test_validate_warns_when_a_third_party_simulator_has_no_timeout(tmp_path):
    result = CliRunner().invoke(main, ["validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert "timeout_s" not in result.output  # the example sets one
    untimed = tmp_path / "untimed.toml"
    text = EXAMPLE.read_text(encoding="utf-8")
    untimed.write_text(
        text.replace("timeout_s = 120", "").replace(
            'output_dir = "../runs"', 'output_dir = "runs"'
        ),
        encoding="utf-8",
    )
    result = CliRunner().invoke(main, ["validate", str(untimed)])
    assert result.exit_code == 0, result.output
    assert (
        "warning: simulator 'thick-wall-stress' (package hydraopt-thick-wall) has no "
        "timeout_s" in result.output
    )
    assert "reference-mechanics' (package" not in result.output  # built-ins are hydraopt's
