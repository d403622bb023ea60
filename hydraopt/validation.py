"""``hydraopt validate``: read and check everything a run would read, without running it.

Loading the pipeline file already checks its schema, plugin names and settings, the polymer
library and the files it names. This goes on to what a run would otherwise only discover
later: the cohort itself (every row), every configured plugin built from its settings (a
factory that raises is found now, not after an hour of meshing), the dataset generator asked
for one patient's designs (a grid too small for ``designs_per_patient``), and the run
directory (writable, not owned by another pipeline file, not in use).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hydraopt import hookspecs
from hydraopt.config import Pipeline, build_design_space, dotted_key
from hydraopt.errors import HydraoptError
from hydraopt.inputs import load_cohort, load_library
from hydraopt.plugin_calls import PluginFailure, call_plugin, checked_designs
from hydraopt.registry import PluginRegistry
from hydraopt.run_lock import LOCK_FILE, owner_problem


def validate_inputs(pipeline: Pipeline, registry: PluginRegistry) -> list[str]:
    """Every problem a run of ``pipeline`` would meet in its inputs; empty when none."""
    problems: list[str] = []
    config = pipeline.config
    try:
        load_cohort(pipeline)
    except HydraoptError as exc:
        problems.append(f"{pipeline.path}: cohort: {exc}")
    library = load_library(pipeline)  # checked while loading the pipeline file
    handles = {}
    for loc, kind, name, _ in config.plugin_choices():
        handle = registry.handle(kind, name, pipeline.plugin_settings[loc])
        try:
            handle.build_new()
        except PluginFailure as exc:
            problems.append(f"{pipeline.path}: {dotted_key(loc)}: {exc}")
            continue
        handles[loc] = handle
    generator = handles.get(("dataset", "generator"))
    if generator is not None:
        space = build_design_space(config.design_space, library)
        n = config.dataset.designs_per_patient
        try:
            batch = call_plugin(generator, "generate", space, n, np.random.default_rng(0))
            checked_designs(generator, batch, space, n)
        except PluginFailure as exc:
            problems.append(f"{pipeline.path}: dataset.generator: {exc}")
    if not problems:  # stages' own checks assume readable inputs and buildable plugins
        from hydraopt.pipeline import enabled_stages

        for stage in enabled_stages(config):
            problems += stage.preflight(pipeline, registry)
    problems += _run_dir_problems(pipeline)
    problems += _engine_problems(pipeline)
    return problems


def environment_warnings(pipeline: Pipeline, registry: PluginRegistry) -> list[str]:
    """What this machine lacks for the configured simulators to run (their optional
    ``environment_problems()``): warnings, not errors, since a study still runs and records
    their evaluations as failed."""
    warnings: list[str] = []
    for name in pipeline.config.simulators:
        loc = ("simulators", name)
        handle = registry.handle("simulator", name, pipeline.plugin_settings[loc])
        try:
            simulator = handle.build_new()
        except PluginFailure:  # reported as a problem by validate_inputs
            continue
        check = getattr(simulator, "environment_problems", None)
        if callable(check):
            warnings += [f"simulator {name!r}: {problem}" for problem in check()]
    return warnings


def timeout_warnings(pipeline: Pipeline, registry: PluginRegistry) -> list[str]:
    """Simulators from other packages than hydraopt that run without a ``timeout_s``: one
    whose evaluation hangs would hold its worker, and the study, for ever."""
    warnings = []
    for name, table in pipeline.config.simulators.items():
        package = registry.get("simulator", name).package
        if package != hookspecs.PROJECT_NAME and "timeout_s" not in table:
            warnings.append(
                f"simulator {name!r} (package {package}) has no timeout_s: an evaluation "
                f"that hangs would stall the study; set [simulators.{name}] timeout_s"
            )
    return warnings


def _engine_problems(pipeline: Pipeline) -> list[str]:
    """What the execution engine needs that this machine lacks (a run would stop there)."""
    execution = pipeline.config.execution
    dask = execution.dask
    if execution.engine != "dask" or dask.scheduler_address or dask.cluster == "local":
        return []
    import importlib.util

    if importlib.util.find_spec("dask_jobqueue") is None:
        return [
            f"{pipeline.path}: execution.dask.cluster = {dask.cluster!r} needs dask-jobqueue: "
            "pip install 'hydraopt[cluster]'"
        ]
    return []


def _run_dir_problems(pipeline: Pipeline) -> list[str]:
    run_dir = pipeline.run_dir
    existing = next((p for p in (run_dir, *run_dir.parents) if p.exists()), Path("/"))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return [
            f"{pipeline.path}: study.output_dir: cannot create the run directory {run_dir} "
            f"({existing} is not a writable folder)"
        ]
    problems = []
    owner = owner_problem(run_dir, pipeline.path)
    if owner:
        problems.append(f"{pipeline.path}: study.name: {owner}")
    if _locked(run_dir / LOCK_FILE):
        problems.append(f"{pipeline.path}: {run_dir} is in use by a run right now")
    return problems


def _locked(lock_file: Path) -> bool:
    if not lock_file.is_file():
        return False
    import fcntl

    with lock_file.open("a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return False
