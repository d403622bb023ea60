"""The ``hydraopt`` command line.

Exit status: 0 when everything asked for was done; 1 when a run finished with failed units
(listed, with their tracebacks in the run directory); 2 for a user mistake
(:class:`~hydraopt.errors.HydraoptError`: ``error: ...`` without a traceback). This module
imports nothing heavy at start-up: ``--help`` and ``validate`` never load torch.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import numpy as np

from hydraopt import __version__
from hydraopt.errors import ConfigError, HydraoptError

UNITS_FAILED_EXIT = 1
USER_ERROR_EXIT = 2


class FiniteFloat(click.ParamType):
    """A float that is neither NaN nor infinite."""

    name = "number"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not np.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


FINITE = FiniteFloat()


def _user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn HydraoptError into a clean message and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ConfigError as exc:
            for problem in exc.problems:
                click.echo(f"error: {problem}", err=True)
            sys.exit(USER_ERROR_EXIT)
        except HydraoptError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(USER_ERROR_EXIT)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hydraopt")
def main() -> None:
    """Simulation-coupled optimisation of patient-specific injectable cardiac hydrogels."""


def _load(pipeline_file: Path):
    from hydraopt.config import load_pipeline
    from hydraopt.pipeline import sections_without_stage
    from hydraopt.registry import PluginRegistry

    registry = PluginRegistry.discover()
    _warn_broken(registry)
    pipeline = load_pipeline(pipeline_file, registry)
    for section in sections_without_stage(pipeline.config):
        click.echo(
            f"warning: {pipeline_file}: [{section}] is valid, but no stage of hydraopt "
            f"{__version__} runs it yet; it is ignored",
            err=True,
        )
    return pipeline, registry


@main.command()
@click.argument("pipeline_file", type=click.Path(path_type=Path))
@_user_errors
def validate(pipeline_file: Path) -> None:
    """Check PIPELINE_FILE and everything a run would read (cohort, polymer library, plugins
    built from their settings, the run directory) without running it."""
    from hydraopt.pipeline import enabled_stages
    from hydraopt.validation import validate_inputs

    pipeline, registry = _load(pipeline_file)
    problems = validate_inputs(pipeline, registry)
    if problems:
        raise ConfigError(problems)
    _warn_environment(pipeline, registry)
    stages = ", ".join(s.name for s in enabled_stages(pipeline.config))
    click.echo(f"{pipeline_file}: valid; stages: {stages}; run directory: {pipeline.run_dir}")


@main.command()
@click.argument("pipeline_file", type=click.Path(path_type=Path))
@click.option("--from", "from_stage", metavar="STAGE", help="Redo STAGE and every stage after it.")
@click.option(
    "--to",
    "to_stage",
    metavar="STAGE",
    help="Run STAGE and the stages it needs, and stop there (say, --to simulate).",
)
@click.option("--force", is_flag=True, help="Redo every stage, even those already complete.")
@click.option(
    "--keep-going",
    "-k",
    is_flag=True,
    help="When a stage has failed units, still run every later stage that does not need it "
    "(default: stop after that stage).",
)
@click.option(
    "--adopt-run-dir",
    is_flag=True,
    help="Let PIPELINE_FILE take over a run directory made by another pipeline file with the "
    "same study name.",
)
@click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors and the run directory.")
@_user_errors
def run(
    pipeline_file: Path,
    from_stage: str | None,
    to_stage: str | None,
    force: bool,
    keep_going: bool,
    adopt_run_dir: bool,
    quiet: bool,
) -> None:
    """Run the stages of PIPELINE_FILE; finished stages with unchanged inputs are skipped.

    A unit that fails (a plugin raised, returned a malformed answer, overran its timeout, or
    its worker process died) does not stop the others of its stage. Its traceback is kept in
    the run directory's failures/ folder and the next run retries the failed units only. A
    failed simulator evaluation is recorded (its designs marked failed with the reason) and
    the study goes on, unless [execution] failed_evaluations = "stop"; any other failed unit
    ends the run after its stage with exit status 1.
    """
    from hydraopt.pipeline import run_pipeline
    from hydraopt.progress import Reporter

    pipeline, registry = _load(pipeline_file)
    _warn_environment(pipeline, registry)
    summary = run_pipeline(
        pipeline,
        registry,
        Reporter(quiet=quiet),
        from_stage,
        force,
        keep_going=keep_going,
        adopt_run_dir=adopt_run_dir,
        to_stage=to_stage,
    )
    if not quiet or not summary.ok or summary.recorded:
        for line in summary.lines():
            click.echo(line, err=True)
    click.echo(str(summary.run_dir))
    if not summary.ok:
        sys.exit(UNITS_FAILED_EXIT)


@main.command()
@click.option(
    "--kind",
    type=click.Choice(
        ["mesher", "simulator", "encoder", "surrogate", "policy", "filter", "generator"]
    ),
    help="Only this kind.",
)
@click.option("--settings", "show_settings", is_flag=True, help="Also list each plugin's settings.")
@_user_errors
def plugins(kind: str | None, show_settings: bool) -> None:
    """List every plugin found: kind, name, description, the package that provides it with
    the package's version, and the plugin's own version (what cached results are keyed by)."""
    from rich.console import Console
    from rich.table import Table

    from hydraopt.registry import PluginRegistry

    registry = PluginRegistry.discover()
    table = Table(show_lines=show_settings)
    for column in ("kind", "name", "description", "package", "package version", "plugin version"):
        table.add_column(column)
    for plugin in registry:
        if kind and plugin.kind != kind:
            continue
        description = plugin.description
        if show_settings:
            description += "".join(
                f"\n  {name} = {_default_text(field)}: {field.description or ''}"
                for name, field in plugin.registration.settings.model_fields.items()
            )
        name = plugin.name
        if (plugin.kind, plugin.name) in registry.clashes:
            name += " (clash)"
        table.add_row(
            plugin.kind,
            name,
            description,
            plugin.package,
            plugin.package_version,
            plugin.version,
        )
    console = Console(width=max(120, Console().width))
    console.print(table)
    _warn_broken(registry)


def _warn_environment(pipeline: Any, registry: Any) -> None:
    from hydraopt.validation import environment_warnings, timeout_warnings

    for warning in environment_warnings(pipeline, registry):
        click.echo(f"warning: {warning}; its evaluations will be recorded as failed", err=True)
    for warning in timeout_warnings(pipeline, registry):
        click.echo(f"warning: {warning}", err=True)


def _warn_broken(registry: Any) -> None:
    for kind, name in registry.clashes:
        click.echo(
            f"warning: {registry.clash_message(kind, name)}; a pipeline that uses it fails "
            "until then",
            err=True,
        )
    for broken in registry.broken:
        click.echo(
            f"warning: plugin {broken.entry_point} from {broken.package} was skipped: "
            f"{broken.error}",
            err=True,
        )


def _default_text(field: Any) -> str:
    if field.is_required():
        return "(required)"
    if field.default_factory is not None:
        return repr(field.default_factory())
    return repr(field.default)


@main.command()
@click.argument("pipeline_file", type=click.Path(path_type=Path))
@click.option("--patient", "patient_id", required=True, help="Patient id from the cohort.")
@click.option("--polymer", required=True, help="Polymer name from the library.")
@click.option(
    "--coverage",
    required=True,
    type=click.Choice(["scar_only", "scar_bz25", "scar_bz50", "scar_bz100"]),
)
@click.option("--stiffness-kpa", type=FINITE, required=True, help="Hydrogel modulus E [kPa].")
@click.option("--t50-days", type=FINITE, required=True, help="Degradation half-life [days].")
@click.option("--conductivity-s-per-m", type=FINITE, required=True, help="Conductivity [S/m].")
@click.option("--thickness-mm", type=FINITE, required=True, help="Patch thickness [mm].")
@click.option(
    "--simulator",
    "simulator_names",
    multiple=True,
    help="Only this simulator (repeatable); default: every one in the pipeline.",
)
@click.option(
    "--output-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Keep the simulators' files (activation maps, ...) here.",
)
@_user_errors
def simulate(
    pipeline_file: Path,
    patient_id: str,
    polymer: str,
    coverage: str,
    stiffness_kpa: float,
    t50_days: float,
    conductivity_s_per_m: float,
    thickness_mm: float,
    simulator_names: tuple[str, ...],
    output_dir: Path | None,
) -> None:
    """Evaluate one design on one patient of PIPELINE_FILE and print the outcomes with units."""
    from hydraopt.single_design import simulate_one

    pipeline, registry = _load(pipeline_file)
    results = simulate_one(
        pipeline,
        registry,
        patient_id,
        simulator_names,
        output_dir,
        design={
            "polymer": polymer,
            "coverage": coverage,
            "stiffness_kpa": stiffness_kpa,
            "t50_days": t50_days,
            "conductivity_s_per_m": conductivity_s_per_m,
            "thickness_mm": thickness_mm,
        },
    )
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"patient {patient_id}: {results.description}")
    for column in ("simulator", "output", "value", "unit"):
        table.add_column(column)
    for name, outcomes in results.outcomes.items():
        if outcomes.failed[0]:
            table.add_row(name, "failed", str(outcomes.failure_reason[0]), "")
            continue
        for spec in outcomes.specs:
            value = outcomes[spec.name][0]
            text = (
                ", ".join(f"{v:.3g}" for v in np.ravel(value))
                if np.ndim(value)
                else f"{float(value):.4g}"
            )
            table.add_row(name, spec.name, text, spec.unit)
    Console(width=max(110, Console().width)).print(table)


@main.group()
def dataset() -> None:
    """Inspect a run's training dataset."""


@dataset.command("summary")
@click.argument("run_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@_user_errors
def dataset_summary(run_dir: Path) -> None:
    """Rows, patients, the positive rate of is_optimal, left-out rows by reason, split sizes
    and the range of every output with its unit, for the dataset of RUN_DIR."""
    from rich.console import Console
    from rich.table import Table

    from hydraopt.dataset_summary import summarise_dataset

    summary = summarise_dataset(run_dir)
    console = Console(width=max(110, Console().width))
    for line in summary.header_lines():
        console.print(line, highlight=False, markup=False)
    splits = Table(title=f"splits (by patient, seed {summary.meta['splits']['seed']})")
    for column in ("split", "share", "patients", "origins", "rows", "is_optimal"):
        splits.add_column(column, justify="left" if column in ("split", "origins") else "right")
    fractions = summary.meta["splits"]["fractions"]
    for name, patients, rows, rate, origins in summary.splits:
        mix = ", ".join(f"{n} {o}" for o, n in sorted(origins.items()))
        splits.add_row(
            name, f"{fractions[name]:.0%}", str(patients), mix, f"{rows:,}", f"{100 * rate:.2f}%"
        )
    console.print(splits)
    outputs = Table(title="outputs")
    for column in ("output", "unit", "shape", "min", "median", "max"):
        outputs.add_column(column, justify="left" if column in ("output", "unit") else "right")
    for name, unit, shape, low, mid, high in summary.outputs:
        outputs.add_row(name, unit, shape, f"{low:.4g}", f"{mid:.4g}", f"{high:.4g}")
    console.print(outputs)
