"""Stage ``simulate``: every configured simulator on every patient's designs.

One unit of work is a (patient, simulator) pair: the simulator evaluates all of the patient's
designs on the patient's mesh, and its answer is checked by the core (one row per design, the
declared outputs, NaN only where a design is marked failed). Units become the shards of the
``outcomes`` artifact. A unit is keyed by its own simulator's fingerprint, so changing one
simulator's settings redoes that simulator's units only.

Designs a simulator cannot evaluate (an infeasible gel, a patient its model cannot represent)
are marked failed, with the reason, in the outcomes: that is a result. A simulator that raises,
hangs past its ``timeout_s`` or returns a malformed answer fails its unit: nothing is stored for
it, the run reports it, and the next run retries it. Files a simulator leaves in its work
directory are kept under ``simulations/PATIENT/SIMULATOR``.
"""

from __future__ import annotations

import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.config import PipelineConfig
from hydraopt.domain import Cohort, DesignBatch, DesignSpace, Patient
from hydraopt.ledger import DoneUnit, UnitFailure
from hydraopt.mesh_io import read_mesh_h5
from hydraopt.plugin_calls import PluginHandle, call_plugin, checked_outcomes
from hydraopt.stages.base import (
    CACHE_COUNTS,
    Stage,
    StageContext,
    Unit,
    UnitsFailed,
    report_cache_counts,
)
from hydraopt.stages.designs import load_space
from hydraopt.store import (
    Shard,
    ShardedArtifact,
    h5_content_digest,
    read_h5_attrs,
    read_h5_table,
    write_h5,
)


@dataclass(frozen=True)
class SimulationJob:
    """One unit: files to read, not arrays, so that jobs stay small however many there are."""

    patient: Patient
    mesh_file: Path
    designs_file: Path
    space: DesignSpace
    simulator: PluginHandle
    scratch: Path
    files: Path
    cache: Path | None = None
    simulator_identity: dict[str, str] | None = None
    mesh_digest: str = ""
    rows: tuple[int, int] | None = None  # this task's slice of the patient's designs


def run_simulation(job: SimulationJob, output: Path) -> None:
    """Simulate one patient's designs with one simulator; write the checked outcomes.
    Designs the evaluation cache holds are read from it; only the others are simulated."""
    designs = DesignBatch.from_columns(job.space, read_h5_table(job.designs_file, "designs"))
    if job.rows is not None:
        designs = designs.take(np.arange(*job.rows))
    simulator = job.simulator.build()
    shutil.rmtree(job.scratch, ignore_errors=True)
    job.scratch.mkdir(parents=True)
    cache = keys = None
    todo = np.arange(len(designs))
    if job.cache is not None and job.simulator_identity is not None:
        from hydraopt.evaluation_cache import (
            EvaluationCache,
            context_key,
            design_keys,
            merged_outcomes,
        )

        context = context_key(job.simulator_identity, job.patient, job.mesh_digest)
        cache, keys = EvaluationCache(job.cache, context), design_keys(designs)
        found, cached = cache.lookup(keys, simulator.outputs)
        todo = np.flatnonzero(~found)
    simulated = None
    if len(todo):
        mesh = read_mesh_h5(job.mesh_file, job.patient.patient_id)
        batch = designs.take(todo)
        result = call_plugin(job.simulator, "simulate", job.patient, mesh, batch, job.scratch)
        simulated = checked_outcomes(job.simulator, result, len(batch), simulator.outputs)
        if cache is not None:
            cache.store(keys[todo], simulated)
    outcomes = (
        simulated if cache is None else merged_outcomes(simulator.outputs, cached, todo, simulated)
    )
    if any(job.scratch.iterdir()):
        shutil.rmtree(job.files, ignore_errors=True)
        job.files.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(job.scratch, job.files)
    columns = {
        **outcomes.values,
        "failed": outcomes.failed,
        "failure_reason": outcomes.failure_reason,
    }
    specs = {
        s.name: {"unit": s.unit, "shape": list(s.shape), "description": s.description}
        for s in outcomes.specs
    }
    meta = {"patient_id": job.patient.patient_id, "simulator": job.simulator.name}
    # How the outcomes were obtained is provenance, not content: outcomes read from the
    # cache equal those simulated, and so do their digests.
    provenance = {}
    if cache is not None:
        provenance[CACHE_COUNTS] = {
            "hits": cache.stats.hits,
            "misses": cache.stats.misses,
            "corrupt": cache.stats.corrupt,
        }
    write_h5(output, {"outcomes": columns}, provenance=provenance, meta={**meta, "outputs": specs})


def unit_key(patient_id: str, simulator: str) -> str:
    return f"{patient_id}__{simulator}"


def batch_key(patient_id: str, simulator: str, rows: tuple[int, int], n_designs: int) -> str:
    """A task's key: the shard's own key when it evaluates all of the patient's designs."""
    key = unit_key(patient_id, simulator)
    return key if rows == (0, n_designs) else f"{key}__rows{rows[0]}-{rows[1]}"


def design_batches(n_designs: int, batch: int) -> list[tuple[int, int]]:
    """The row ranges of the evaluation tasks for ``n_designs`` designs (``batch`` 0: one)."""
    size = batch or max(n_designs, 1)
    return [(start, min(start + size, n_designs)) for start in range(0, n_designs, size)]


def _simulator_locs(config: PipelineConfig) -> list[tuple[str, str]]:
    return [("simulators", name) for name in config.dataset_simulators()]


def _run(context: StageContext) -> None:
    store = context.store
    execution = context.config.execution
    cohort = Cohort.from_columns(store.tables("cohort").table("patients"))
    space = load_space(context)
    designs, meshes = store.shards("designs"), store.shards("meshes")
    simulators = {loc[1]: (context.plugin(loc), loc) for loc in _simulator_locs(context.config)}
    units: list[Unit] = []
    # shard key -> its simulator and its tasks (key, rows), in row order
    batches: dict[str, tuple[str, list[tuple[str, tuple[int, int]]]]] = {}
    for patient in cohort:
        pid = patient.patient_id
        n_designs = designs.n_rows(pid, "designs")
        for name, (handle, loc) in simulators.items():
            shard = unit_key(pid, name)
            batches[shard] = (name, [])
            for rows in design_batches(n_designs, execution.evaluation_batch):
                key = batch_key(pid, name, rows, n_designs)
                batches[shard][1].append((key, rows))
                job = _job(context, patient, handle, loc, rows, n_designs, space, meshes, designs)
                units.append(
                    Unit(
                        key=key,
                        function=run_simulation,
                        job=job,
                        plugin=handle,
                        depends_on={
                            "patient": patient.physical_record(),
                            "mesh": job.mesh_digest,
                            "designs": designs.content_digest(pid),
                            "rows": list(rows),
                        },
                        covers=("cohort", "designs", "meshes"),
                        timeout_s=context.pipeline.timeout_s(loc),
                    )
                )
    done = context.run_units(
        units, "simulations", tolerate_failures=execution.failed_evaluations == "record"
    )
    failed_tasks = {f.key: f for f in context.recorded_failures}
    if failed_tasks:
        shards = _shards_with_failures(context, batches, done, failed_tasks, simulators)
    else:
        shards = {shard: _joined(store, shard, keys, done) for shard, (_, keys) in batches.items()}
    _report_and_write(context, cohort, shards, simulators)


def _job(
    context: StageContext,
    patient: Patient,
    handle: PluginHandle,
    loc: tuple[str, str],
    rows: tuple[int, int],
    n_designs: int,
    space: DesignSpace,
    meshes: ShardedArtifact,
    designs: ShardedArtifact,
) -> SimulationJob:
    store, pid = context.store, patient.patient_id
    key = batch_key(pid, handle.name, rows, n_designs)
    whole = rows == (0, n_designs)
    return SimulationJob(
        patient=patient,
        mesh_file=meshes.path(pid),
        designs_file=designs.path(pid),
        space=space,
        simulator=handle,
        scratch=context.scratch_dir() / key,
        # A batch's files go to a folder of their own; a patient's single task keeps the
        # folder it always had.
        files=store.run_dir / "simulations" / pid / handle.name / ("" if whole else key),
        cache=context.pipeline.cache_dir,
        simulator_identity=context.plugins_used[loc],
        mesh_digest=meshes.content_digest(pid),
        rows=None if whole else rows,
    )


def _joined(
    store: Any, shard: str, keys: list[tuple[str, tuple[int, int]]], done: dict[str, DoneUnit]
) -> Shard:
    """One shard of the patient's and simulator's outcomes from its tasks' files, in row
    order; a single task's file is the shard as it is."""
    if len(keys) == 1:
        unit = done[keys[0][0]]
        return Shard(unit.file, unit.content_digest)
    parts = [read_h5_table(done[key].file, "outcomes") for key, _ in keys]
    return _write_joined(store, shard, parts, [read_h5_attrs(done[key].file) for key, _ in keys])


def _shards_with_failures(
    context: StageContext,
    batches: dict[str, tuple[str, list[tuple[str, tuple[int, int]]]]],
    done: dict[str, DoneUnit],
    failed_tasks: dict[str, UnitFailure],
    simulators: dict[str, tuple[PluginHandle, tuple[str, str]]],
) -> dict[str, Shard]:
    """The shards when some tasks failed and ``failed_evaluations = "record"``: a failed
    task's designs are marked failed with its reason. A simulator none of whose tasks
    finished has nothing to record: the stage fails."""
    metas = {}
    for unit in done.values():
        meta = read_h5_attrs(unit.file)["meta"]
        metas.setdefault(meta["simulator"], meta)
    hopeless = {name for name in simulators if name not in metas}
    if hopeless:
        raise UnitsFailed(
            context.stage.name,
            [
                failed_tasks[key]
                for name, keys in batches.values()
                if name in hopeless
                for key, _ in keys
                if key in failed_tasks
            ],
        )
    shards = {}
    for shard, (name, keys) in batches.items():
        if all(key in done for key, _ in keys):
            shards[shard] = _joined(context.store, shard, keys, done)
            continue
        parts, part_attrs = [], []
        for key, rows in keys:
            if key in done:
                parts.append(read_h5_table(done[key].file, "outcomes"))
                part_attrs.append(read_h5_attrs(done[key].file))
            else:
                parts.append(_failed_rows(metas[name]["outputs"], rows, failed_tasks[key].reason))
                patient_id = shard.removesuffix(f"__{name}")
                part_attrs.append(
                    {"meta": {**metas[name], "patient_id": patient_id}, "provenance": {}}
                )
        shards[shard] = _write_joined(context.store, shard, parts, part_attrs)
    return shards


def _failed_rows(
    outputs: dict[str, dict[str, Any]], rows: tuple[int, int], reason: str
) -> dict[str, np.ndarray]:
    n = rows[1] - rows[0]
    columns: dict[str, np.ndarray] = {
        name: np.full((n, *spec["shape"]), np.nan) for name, spec in outputs.items()
    }
    columns["failed"] = np.ones(n, dtype=bool)
    columns["failure_reason"] = np.array([f"evaluation failed: {reason}"[:300]] * n, dtype=str)
    return columns


def _write_joined(
    store: Any, shard: str, parts: list[dict[str, np.ndarray]], attrs: list[dict[str, Any]]
) -> Shard:
    columns = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    counts = [a["provenance"].get(CACHE_COUNTS) for a in attrs]
    provenance = {}
    if any(counts):
        provenance[CACHE_COUNTS] = {
            k: sum((c or {}).get(k, 0) for c in counts) for k in ("hits", "misses", "corrupt")
        }
    path = store.work_dir("simulate") / "joined" / f"{shard}.h5"
    write_h5(path, {"outcomes": columns}, provenance=provenance, meta=attrs[0]["meta"])
    return Shard(path, h5_content_digest(path))


def _report_and_write(
    context: StageContext,
    cohort: Cohort,
    shards: dict[str, Shard],
    simulators: dict[str, tuple[PluginHandle, tuple[str, str]]],
) -> None:
    outputs: dict[str, Any] = {}
    failed_designs: Counter[str] = Counter()
    n_designs: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = {name: Counter() for name in simulators}
    report_cache_counts(context, [shard.path for shard in shards.values()])
    for shard in shards.values():
        meta = read_h5_attrs(shard.path)["meta"]
        outputs.setdefault(meta["simulator"], meta["outputs"])
        table = read_h5_table(shard.path, "outcomes")
        failed = np.asarray(table["failed"], dtype=bool)
        failed_designs[meta["simulator"]] += int(failed.sum())
        n_designs[meta["simulator"]] += len(failed)
        reasons[meta["simulator"]].update(str(r)[:100] for r in table["failure_reason"][failed])
    if sum(failed_designs.values()):
        context.store.journal(
            "failed_designs",
            stage="simulate",
            designs={name: n_designs[name] for name in simulators},
            failed=dict(failed_designs),
            reasons={name: dict(reasons[name].most_common(10)) for name in simulators},
        )
    for name in simulators:
        if failed_designs[name]:
            common = ", ".join(f"{r} ({n})" for r, n in reasons[name].most_common(3))
            context.reporter.say(
                f"  {name}: {failed_designs[name]} of {n_designs[name]} designs marked failed: "
                f"{common}"
            )
    context.write_shard_files(
        "outcomes",
        shards,
        meta={
            "patients": list(cohort.ids),
            "simulators": {name: {"outputs": outputs.get(name, {})} for name in simulators},
            "failed_designs": {name: failed_designs[name] for name in simulators},
            "failure_reasons": {name: dict(reasons[name].most_common(10)) for name in simulators},
        },
    )


def _depends_on(config: PipelineConfig) -> Any:
    # Each simulator's settings are in its plugin fingerprint; which simulators run decides
    # which units exist, not what any unit computes.
    return {}


STAGE = Stage(
    name="simulate",
    # 2: one shard per (patient, simulator); failed units are retried, not stored.
    # 3: a shard may join several evaluation tasks; failed tasks may be recorded.
    version="3",
    sections=("dataset", "simulators"),
    description="simulate every patient's designs with every configured simulator",
    inputs=("cohort", "polymers", "designs", "meshes"),
    outputs={"outcomes": "shards"},
    enabled=lambda config: bool(config.simulators) and config.dataset is not None,
    depends_on=_depends_on,
    plugins=_simulator_locs,
    run=_run,
)
