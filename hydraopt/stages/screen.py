"""Stage ``screen``: Stage 3, the design engine. For every patient, ``[screen]``'s generator
makes the candidates (with the policy's proposals when a policy stage ran), the frozen
surrogate scores them chunk by chunk, and the filter chain narrows them to one design,
validated by the simulators where the chain simulates (seeds/000 section 8).

One unit per patient (:func:`run_screen`), so a killed run resumes with the patients not yet
done. Artifacts: ``screen`` (one HDF5 shard per patient: the funnel, the finalists with every
column, figures of the chain such as the Pareto front's hypervolume), ``final_designs`` (one
row per patient: the chosen design and its predicted and simulated outcomes) and
``final_designs_csv`` (the same, as CSV).
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.config import Pipeline, PipelineConfig, RewardConfig, ScreenConfig
from hydraopt.domain import CONTINUOUS_FIELDS, Cohort, DesignSpace
from hydraopt.errors import DataError
from hydraopt.plugin_calls import PluginHandle
from hydraopt.registry import PluginRegistry
from hydraopt.seeding import derive_seed
from hydraopt.stages.base import CACHE_COUNTS, Stage, StageContext, Unit, report_cache_counts
from hydraopt.stages.designs import load_space
from hydraopt.store import read_h5_attrs, read_h5_table, write_h5
from hydraopt.trained_surrogate import (
    domain_problems,
    load_trained_surrogate,
    patient_splits,
    report_extrapolation,
)


@dataclass(frozen=True)
class ScreenJob:
    """One patient's screen: what a worker process needs to build everything itself."""

    patient: Any
    space: DesignSpace
    mesh_file: Path | None
    surrogate: PluginHandle
    encoder: PluginHandle
    surrogate_folder: Path
    generator: PluginHandle
    filters: tuple[tuple[PluginHandle, dict[str, Any]], ...]
    simulators: dict[str, PluginHandle]
    # The simulators whose outcomes the surrogate learnt (its trajectories' follow-up times).
    dataset_simulators: tuple[str, ...]
    proposals: dict[str, np.ndarray] | None
    screen: ScreenConfig
    reward: RewardConfig
    seed: int
    workdir: Path
    files: Path | None = None
    cache: Path | None = None
    mesh_digest: str = ""


def run_screen(job: ScreenJob, output: Path) -> None:
    """Screen one patient's candidates and write its shard; the simulators' files (activation
    maps of the validated finalists, say) are kept in ``job.files``."""
    from hydraopt.screen_unit import screen_one_patient

    result, meta, cache_counts = screen_one_patient(job)
    if job.files is not None and job.workdir.is_dir() and any(job.workdir.rglob("*.*")):
        shutil.rmtree(job.files, ignore_errors=True)
        job.files.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(job.workdir, job.files)
    # How many evaluations the cache gave is provenance, not content (as in simulate).
    provenance = {CACHE_COUNTS: cache_counts} if job.cache is not None else {}
    write_h5(output, result, provenance=provenance, meta=meta)


def _run(context: StageContext) -> None:
    config = context.config
    assert config.screen is not None  # the stage is enabled by it
    store = context.store
    say = context.reporter.say
    cohort = Cohort.from_columns(store.tables("cohort").table("patients"))
    space = load_space(context)
    surrogate_folder = store.folder("surrogate").path
    surrogate = load_trained_surrogate(
        context.plugin(("surrogate",)), context.plugin(("encoder",)), surrogate_folder
    )
    problems = domain_problems(surrogate, space)
    if problems:
        raise DataError(
            "screen: the trained surrogate does not cover this study's design space:\n  "
            + "\n  ".join(problems)
        )
    report_extrapolation(surrogate, cohort, say, "screen")
    split_of = patient_splits(store.tables("dataset"))
    proposals = _proposals_by_patient(context, space)
    meshes = store.shards("meshes") if "meshes" in context.inputs else None
    simulators = {name: context.plugin(("simulators", name)) for name in config.simulators}
    filters = tuple(
        (context.plugin(("screen", "filters", i)), choice.settings)
        for i, choice in enumerate(config.screen.filters)
    )
    units = []
    for patient in cohort:
        pid = patient.patient_id
        job = ScreenJob(
            patient=patient,
            space=space,
            mesh_file=meshes.path(pid) if meshes is not None else None,
            surrogate=context.plugin(("surrogate",)),
            encoder=context.plugin(("encoder",)),
            surrogate_folder=surrogate_folder,
            generator=context.plugin(("screen", "generator")),
            filters=filters,
            simulators=simulators,
            dataset_simulators=tuple(config.dataset_simulators()),
            proposals=proposals.get(pid),
            screen=config.screen,
            reward=config.reward,
            seed=derive_seed(config.study.seed, "screen", pid),
            workdir=context.scratch_dir() / pid,
            files=store.run_dir / "screen_files" / pid,
            cache=context.pipeline.cache_dir,
            mesh_digest=meshes.content_digest(pid) if meshes is not None else "",
        )
        units.append(Unit(key=pid, function=run_screen, job=job))
    say(
        f"  {len(cohort)} patients, {config.screen.candidates_per_patient:,} candidates each, "
        f"{len(filters)} filters"
    )
    done = context.run_units(units, "patients")
    _report_throughput(context, done)
    report_cache_counts(context, [unit.file for unit in done.values()])
    context.write_shards("screen", done, meta={"filters": [f for _, f in filters]})
    table, emptied = _final_designs(done, split_of, space)
    meta = _final_meta(config, done)
    meta["emptied"] = emptied
    context.write_tables("final_designs", {"designs": table}, meta=meta)
    csv_path = context.scratch_dir() / "final_designs.csv"
    _write_csv(csv_path, table)
    context.write_file("final_designs_csv", csv_path, meta={"rows": len(table["patient_id"])})
    context.finish_units()
    for pid, reason in emptied.items():
        say(f"  [yellow]{pid}: no design survived: {reason}[/yellow]")
    chosen = len(table["patient_id"])
    say(f"  a design chosen for {chosen} of {len(cohort)} patients")


def _proposals_by_patient(context: StageContext, space: DesignSpace) -> dict[str, dict]:
    """Each patient's policy proposals as design columns, when the policy stage ran."""
    if "proposals" not in context.inputs:
        return {}
    table = context.store.tables("proposals").table("designs")
    patient_ids = np.asarray(table["patient_id"]).astype(str)
    names = ("polymer_index", "coverage_index", *CONTINUOUS_FIELDS)
    return {
        pid: {name: np.asarray(table[name])[patient_ids == pid] for name in names}
        for pid in np.unique(patient_ids)
    }


def _report_throughput(context: StageContext, done: dict[str, Any]) -> None:
    """Candidates generated and scored per second of a worker, over every patient."""
    candidates, seconds = 0, 0.0
    for unit in done.values():
        funnel = read_h5_table(unit.file, "funnel")
        head = np.asarray(funnel["position"]) == 0  # generation and scoring (and a cascade)
        candidates += int(np.asarray(funnel["entered"])[0])
        seconds += float(np.asarray(funnel["seconds"])[head].sum())
    if seconds > 0:
        rate = candidates / seconds
        context.reporter.say(
            f"  {candidates:,} candidates generated and scored in {seconds:.1f} worker-seconds "
            f"({rate:,.0f} candidates/s per worker)"
        )
        context.store.journal("screen_throughput", candidates=candidates, seconds=round(seconds, 3))


def _final_designs(
    done: dict[str, Any], split_of: dict[str, str], space: DesignSpace
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """One row per patient with a chosen design; the others by patient, with the reason."""
    rows: list[dict[str, Any]] = []
    emptied: dict[str, str] = {}
    for pid, unit in done.items():
        meta = read_h5_attrs(unit.file)["meta"]
        if meta["emptied_by"] is not None:
            emptied[pid] = meta["emptied_by"]["message"]
            continue
        finalists = read_h5_table(unit.file, "finalists")
        row = int(np.flatnonzero(finalists["chosen"])[0])
        record = {"patient_id": pid, "split": split_of.get(pid, "")}
        for name, values in finalists.items():
            if name in ("chosen", "survivor", "last_link"):
                continue
            record[name] = values[row]
        record["candidates"] = meta["candidates"]
        rows.append(record)
    if not rows:
        return {"patient_id": np.zeros(0, dtype=object)}, emptied
    names = list(rows[0])
    return {name: np.array([r[name] for r in rows]) for name in names}, emptied


def _final_meta(config: PipelineConfig, done: dict[str, Any]) -> dict[str, Any]:
    first = next(iter(done.values()), None)
    shard = read_h5_attrs(first.file)["meta"] if first is not None else {}
    return {
        "trajectory_weeks": shard.get("trajectory_weeks", {}),
        "objectives": shard.get("objectives", []),
        "filters": [choice.model_dump() for choice in config.screen.filters],
    }


def _write_csv(path: Path, table: dict[str, np.ndarray]) -> None:
    scalar = [name for name, values in table.items() if np.ndim(values) == 1]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(scalar)
        for i in range(len(table["patient_id"])):
            writer.writerow([_cell(table[name][i]) for name in scalar])


def _cell(value: Any) -> Any:
    if isinstance(value, float | np.floating):
        return f"{float(value):.6g}"
    return value


# ---- checks before anything runs --------------------------------------------------------------


def _preflight(pipeline: Pipeline, registry: PluginRegistry) -> list[str]:
    """The chain's columns against what the surrogate predicts and earlier filters add, the
    simulators a filter names, and a generator that needs the policy."""
    config = pipeline.config
    if config.screen is None or config.surrogate is None:
        return []
    from hydraopt.screen_unit import chain_problems

    return [f"{pipeline.path}: {problem}" for problem in chain_problems(pipeline, registry)]


def _depends_on(config: PipelineConfig) -> Any:
    assert config.screen is not None
    return {
        "screen": config.screen.model_dump(mode="json"),
        "reward": config.reward.model_dump(mode="json"),
        "simulators": config.simulators,
    }


def _plugins(config: PipelineConfig) -> list[tuple[str | int, ...]]:
    assert config.screen is not None
    return [
        ("surrogate",),
        ("encoder",),
        ("screen", "generator"),
        *(("screen", "filters", i) for i in range(len(config.screen.filters))),
        *(("simulators", name) for name in config.simulators),
    ]


STAGE = Stage(
    name="screen",
    version="1",
    sections=("screen",),
    description="screen candidates per patient through the surrogate and the filter chain",
    inputs=("cohort", "polymers", "dataset", "surrogate"),
    optional_inputs=("proposals", "meshes"),
    outputs={"screen": "shards", "final_designs": "tables", "final_designs_csv": "file"},
    enabled=lambda config: config.screen is not None and config.surrogate is not None,
    depends_on=_depends_on,
    plugins=_plugins,
    run=_run,
    preflight=_preflight,
)
