import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from hydraopt import __version__
from hydraopt.cli import main


def hydraopt(*args):
    return CliRunner().invoke(main, list(args))


def test_version():
    result = hydraopt("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_validate_reports_stages(write_pipeline):
    path = write_pipeline()
    result = hydraopt("validate", str(path))
    assert result.exit_code == 0, result.output
    assert "valid; stages: cohort, designs" in result.output


def test_bad_input_exits_2_without_traceback(write_pipeline):
    path = write_pipeline('[study]\nname = "x"\n[cohort]\nn_patients = "three"\n')
    process = subprocess.run(
        [sys.executable, "-m", "hydraopt", "validate", str(path)], capture_output=True, text=True
    )
    assert process.returncode == 2
    assert f"error: {path}:4: cohort.n_patients: Input should be a valid integer" in process.stderr
    assert "Traceback" not in process.stderr


def test_run_then_skip_then_force(write_pipeline):
    path = write_pipeline()
    first = hydraopt("run", str(path), "--quiet")
    assert first.exit_code == 0, first.output
    run_dir = first.output.strip()
    assert run_dir.endswith("runs/t")
    second = hydraopt("run", str(path))
    assert "ran: nothing; skipped (unchanged): cohort, designs" in second.output
    assert f"artifact designs: {run_dir}/artifacts/designs" in second.output
    assert f"summary: {run_dir}/SUMMARY.md" in second.output
    third = hydraopt("run", str(path), "--from", "designs")
    assert "ran: designs; skipped (unchanged): cohort" in third.output
    summary = (Path(run_dir) / "SUMMARY.md").read_text()
    assert "- designs: ran" in summary and "- cohort: skipped" in summary
    assert "**complete**" in summary
    forced = hydraopt("run", str(path), "--force", "-q")
    assert forced.output.strip() == run_dir


def test_unknown_from_stage(write_pipeline):
    result = hydraopt("run", str(write_pipeline()), "--from", "nope")
    assert result.exit_code == 2
    assert "--from nope: no such stage" in result.output


def test_plugins_lists_kind_name_package_and_version():
    result = hydraopt("plugins", "--settings")
    assert result.exit_code == 0
    row = next(line for line in result.output.splitlines() if " sobol " in line)
    assert "generator" in row and "hydraopt" in row and __version__ in row
    assert "scramble" in result.output


def test_help_and_validate_do_not_import_torch(write_pipeline):
    path = write_pipeline()
    code = (
        "import sys\n"
        "from hydraopt.cli import main\n"
        f"try:\n    main(['validate', {str(path)!r}])\n"
        "except SystemExit as exit:\n    assert exit.code == 0, exit.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'h5py') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert process.returncode == 0, process.stderr


def test_every_example_pipeline_validates():
    examples = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))
    assert len(examples) >= 2
    for path in examples:
        result = hydraopt("validate", str(path))
        assert result.exit_code == 0, (path, result.output)


def test_validate_reads_every_input_a_run_would(write_pipeline, tmp_path, install_distribution):
    from conftest import QUICK_PIPELINE
    from plugin_sources import EVERY_KIND, MISBEHAVING

    install_distribution("acme-cardio", "0.9.1", "acme_cardio", EVERY_KIND)
    install_distribution("flaky-sims", "1.0", "flaky_sims", MISBEHAVING)
    cohort = tmp_path / "cohort.csv"
    from hydraopt.cohorts import write_cohort_csv
    from hydraopt.synthetic_cohort import synthetic_cohort

    write_cohort_csv(synthetic_cohort(2, seed=1), cohort)
    rows = cohort.read_text().splitlines()
    rows[2] = rows[2].replace(rows[2].split(",")[1], "not-a-number", 1)
    cohort.write_text("\n".join(rows) + "\n")
    text = (
        QUICK_PIPELINE.replace(
            'source = "synthetic"\nn_patients = 3', 'source = "csv"\npath = "cohort.csv"'
        )
        .replace(
            'generator = { plugin = "sobol" }',
            'generator = { plugin = "grid", stiffness_kpa = 1, t50_days = 1, '
            "conductivity_s_per_m = 1, thickness_mm = 1 }",
        )
        .replace("designs_per_patient = 16", "designs_per_patient = 1000")
        .replace(
            "[execution]",
            '[mesh]\nplugin = "slab"\n\n[simulators.misbehaving]\nbehaviour = "raise-in-factory"'
            "\n\n[execution]",
        )
    )
    result = hydraopt("validate", str(write_pipeline(text)))
    assert result.exit_code == 2
    assert "cohort.csv:3: patient 'SYN002': column lvef_pct: expected a number" in result.output
    assert (
        "simulators.misbehaving: simulator plugin 'misbehaving' (flaky-sims 1.0): its factory "
        "raised RuntimeError: no licence for this solver" in result.output
    )
    assert "dataset.generator: generator plugin 'grid'" in result.output
    assert "the grid holds 96" in result.output


def test_validate_refuses_a_stimulus_segment_without_endocardium(write_pipeline):
    from conftest import QUICK_PIPELINE

    text = QUICK_PIPELINE.replace(
        "[execution]",
        "[simulators.reference-ep]\nearliest_activation_aha_segments = [2, 17]\n\n[execution]",
    )
    result = hydraopt("validate", str(write_pipeline(text)))
    assert result.exit_code == 2
    assert "simulators.reference-ep.earliest_activation_aha_segments" in result.output
    assert "AHA segments [17] have no endocardium" in result.output


def test_validate_warns_of_a_run_directory_owned_by_another_file(write_pipeline):
    assert hydraopt("run", str(write_pipeline(name="a.toml")), "-q").exit_code == 0
    result = hydraopt("validate", str(write_pipeline(name="b.toml")))
    assert result.exit_code == 2 and "holds the results of another pipeline file" in result.output


def test_nan_and_infinity_are_refused_everywhere(write_pipeline):
    from conftest import QUICK_PIPELINE

    design = ["--polymer", "alginate-algisyl", "--coverage", "scar_bz50", "--t50-days", "120"]
    design += ["--conductivity-s-per-m", "0.02", "--thickness-mm", "1", "--patient", "SYN001"]
    for bad in ("nan", "inf", "-inf"):
        result = hydraopt("simulate", str(write_pipeline()), *design, "--stiffness-kpa", bad)
        assert result.exit_code == 2
        assert f"'{bad}' is not a finite number" in result.output
    for key, value in (("timeout_s", "nan"), ("timeout_s", "-1"), ("max_time_ms", "inf")):
        text = QUICK_PIPELINE.replace(
            "[execution]", f"[simulators.reference-ep]\n{key} = {value}\n\n[execution]"
        )
        result = hydraopt("validate", str(write_pipeline(text)))
        assert result.exit_code == 2, (key, value)
        assert f"simulators.reference-ep.{key}" in result.output
    text = QUICK_PIPELINE.replace("seed = 7", "seed = 7\n").replace(
        "n_patients = 3", "n_patients = 3\nchronic_fraction = nan"
    )
    assert hydraopt("validate", str(write_pipeline(text))).exit_code == 2


def test_validate_warns_of_a_simulators_missing_program(write_pipeline, tmp_path, monkeypatch):
    from conftest import QUICK_PIPELINE

    monkeypatch.setenv("PATH", str(tmp_path))  # no febio4, no openCARP
    tables = '\n[simulators.febio]\n\n[simulators.opencarp]\nexecutable = "/opt/none/openCARP"\n'
    result = hydraopt("validate", str(write_pipeline(QUICK_PIPELINE + tables)))
    assert result.exit_code == 0, result.output
    assert "valid" in result.output
    assert "warning: simulator 'febio': 'febio4' is not on PATH" in result.output
    assert "simulator 'opencarp': /opt/none/openCARP is not an executable file" in result.output
    assert "recorded as failed" in result.output


def test_plugins_lists_a_clash_and_both_versions(install_distribution):
    from plugin_sources import OTHER_SOBOL

    install_distribution("other-sobol", "0.3", "other_sobol", OTHER_SOBOL)
    result = hydraopt("plugins", "--kind", "generator")
    assert result.exit_code == 0, result.output
    assert "sobol (clash)" in result.output
    assert "other-sobol" in result.output and "package version" in result.output
    assert "plugin version" in result.output
    assert "is registered by more than one package" in result.output
    assert "a pipeline that uses it fails" in result.output


def test_a_clash_stops_only_the_pipeline_that_uses_the_name(write_pipeline, install_distribution):
    from conftest import QUICK_PIPELINE
    from plugin_sources import OTHER_SOBOL

    install_distribution("other-sobol", "0.3", "other_sobol", OTHER_SOBOL)
    elsewhere = QUICK_PIPELINE.replace('plugin = "sobol"', 'plugin = "random"')
    assert hydraopt("validate", str(write_pipeline(elsewhere))).exit_code == 0
    result = hydraopt("validate", str(write_pipeline(QUICK_PIPELINE, name="uses.toml")))
    assert result.exit_code != 0
    assert "is registered by more than one package" in result.output
