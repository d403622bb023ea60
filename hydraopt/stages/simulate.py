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
from hydraopt.mesh_io import read_mesh_h5
from hydraopt.plugin_calls import PluginHandle, call_plugin, checked_outcomes
from hydraopt.stages.base import Stage, StageContext, Unit
from hydraopt.stages.designs import load_space
from hydraopt.store import read_h5_attrs, read_h5_table, write_h5


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


def run_simulation(job: SimulationJob, output: Path) -> None:
    """Simulate one patient's designs with one simulator; write the checked outcomes.
    Designs the evaluation cache holds are read from it; only the others are simulated."""
    designs = DesignBatch.from_columns(job.space, read_h5_table(job.designs_file, "designs"))
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
    if cache is not None:
        meta["cache"] = {
            "hits": cache.stats.hits,
            "misses": cache.stats.misses,
            "corrupt": cache.stats.corrupt,
        }
    write_h5(output, {"outcomes": columns}, provenance={}, meta={**meta, "outputs": specs})


def unit_key(patient_id: str, simulator: str) -> str:
    return f"{patient_id}__{simulator}"


def _simulator_locs(config: PipelineConfig) -> list[tuple[str, str]]:
    return [("simulators", name) for name in config.simulators]


def _run(context: StageContext) -> None:
    store = context.store
    cohort = Cohort.from_columns(store.tables("cohort").table("patients"))
    space = load_space(context)
    meshes = store.shards("meshes")
    designs = store.shards("designs")
    simulators = {loc[1]: (context.plugin(loc), loc) for loc in _simulator_locs(context.config)}
    scratch = context.scratch_dir()
    units = []
    for patient in cohort:
        pid = patient.patient_id
        for name, (handle, loc) in simulators.items():
            key = unit_key(pid, name)
            job = SimulationJob(
                patient=patient,
                mesh_file=meshes.path(pid),
                designs_file=designs.path(pid),
                space=space,
                simulator=handle,
                scratch=scratch / key,
                files=store.run_dir / "simulations" / pid / name,
                cache=context.pipeline.cache_dir,
                simulator_identity=context.plugins_used[loc],
                mesh_digest=meshes.content_digest(pid),
            )
            units.append(
                Unit(
                    key=key,
                    function=run_simulation,
                    job=job,
                    plugin=handle,
                    depends_on={
                        "patient": patient.physical_record(),
                        "mesh": meshes.content_digest(pid),
                        "designs": designs.content_digest(pid),
                    },
                    covers=("cohort", "designs", "meshes"),
                    timeout_s=context.pipeline.timeout_s(loc),
                )
            )
    done = context.run_units(units, "simulations")
    outputs: dict[str, Any] = {}
    failed_designs: Counter[str] = Counter()
    n_designs: Counter[str] = Counter()
    reasons: dict[str, Counter[str]] = {name: Counter() for name in simulators}
    hits = misses = 0
    for unit in done.values():
        meta = read_h5_attrs(unit.file)["meta"]
        hits += meta.get("cache", {}).get("hits", 0)
        misses += meta.get("cache", {}).get("misses", 0)
        outputs.setdefault(meta["simulator"], meta["outputs"])
        table = read_h5_table(unit.file, "outcomes")
        failed = np.asarray(table["failed"], dtype=bool)
        failed_designs[meta["simulator"]] += int(failed.sum())
        n_designs[meta["simulator"]] += len(failed)
        reasons[meta["simulator"]].update(str(r)[:100] for r in table["failure_reason"][failed])
    if hits or misses:
        context.reporter.say(
            f"  evaluation cache: {hits} designs read, {misses} simulated "
            f"({context.pipeline.cache_dir})"
        )
        context.store.journal("evaluation_cache", stage="simulate", hits=hits, misses=misses)
    for name in simulators:
        if failed_designs[name]:
            common = ", ".join(f"{r} ({n})" for r, n in reasons[name].most_common(3))
            context.reporter.say(
                f"  {name}: {failed_designs[name]} of {n_designs[name]} designs marked failed "
                f"by the simulator: {common}"
            )
    context.write_shards(
        "outcomes",
        done,
        meta={
            "patients": list(cohort.ids),
            "simulators": {name: {"outputs": outputs.get(name, {})} for name in simulators},
            "failed_designs": {name: failed_designs[name] for name in simulators},
        },
    )


def _depends_on(config: PipelineConfig) -> Any:
    # Each simulator's settings are in its plugin fingerprint; which simulators run decides
    # which units exist, not what any unit computes.
    return {}


STAGE = Stage(
    name="simulate",
    # 2: one shard per (patient, simulator); failed units are retried, not stored.
    version="2",
    sections=("dataset", "simulators"),
    description="simulate every patient's designs with every configured simulator",
    inputs=("cohort", "polymers", "designs", "meshes"),
    outputs={"outcomes": "shards"},
    enabled=lambda config: bool(config.simulators) and config.dataset is not None,
    depends_on=_depends_on,
    plugins=_simulator_locs,
    run=_run,
)
