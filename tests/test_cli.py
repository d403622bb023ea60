import subprocess
import sys

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
    assert "ran: nothing; skipped: cohort, designs" in second.output
    third = hydraopt("run", str(path), "--from", "designs")
    assert "ran: designs; skipped: cohort" in third.output
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
    from pathlib import Path

    examples = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))
    assert len(examples) >= 2
    for path in examples:
        result = hydraopt("validate", str(path))
        assert result.exit_code == 0, (path, result.output)
