"""The stages, their order, and running them with skipping and resume.

A stage reads artifacts of earlier stages and writes its own. Its *fingerprint* hashes all it
depends on: its name and version, its slice of the config, the study seed, the plugins it uses
with their versions, and the digests of its input artifacts. A stage whose recorded fingerprint
matches is skipped; a changed input reruns it and, through the changed artifact digests, every
stage after it. ``--from STAGE`` and ``--force`` rerun on purpose.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w

from hydraopt.config import Pipeline, PipelineConfig, stable_hash
from hydraopt.errors import HydraoptError
from hydraopt.execution import make_executor
from hydraopt.progress import Reporter
from hydraopt.provenance import provenance_record
from hydraopt.registry import PluginRegistry
from hydraopt.seeding import rng_for
from hydraopt.store import RunStore, Table

PluginLoc = tuple[str | int, ...]


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    :param version: bump when the stage's outputs change for the same inputs, so existing
        runs redo it.
    :param inputs: artifacts of earlier stages it reads.
    :param outputs: artifacts it writes, all through :meth:`StageContext.write_artifact`.
    :param enabled: whether the config switches the stage on.
    :param depends_on: the slice of the config its results depend on.
    :param plugins: key paths (into pipeline.toml) of the plugins it uses.
    :param run: does the work.
    :param sections: optional pipeline.toml sections it reads (see
        :meth:`PipelineConfig.present_sections`).
    :param extra_inputs: digests of files it reads from outside the run (say a cohort CSV).
    """

    name: str
    version: str
    description: str
    sections: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    enabled: Callable[[PipelineConfig], bool]
    depends_on: Callable[[PipelineConfig], Any]
    plugins: Callable[[PipelineConfig], list[PluginLoc]]
    run: Callable[[StageContext], None]
    extra_inputs: Callable[[Pipeline], dict[str, str]] = lambda pipeline: {}


@dataclass
class StageContext:
    """What a running stage gets: config, plugins, store, seeds, executor and progress."""

    stage: Stage
    pipeline: Pipeline
    registry: PluginRegistry
    store: RunStore
    reporter: Reporter
    fingerprint: str
    inputs: dict[str, str]
    plugins_used: list[dict[str, str]]
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def config(self) -> PipelineConfig:
        return self.pipeline.config

    def rng(self, *names: str) -> np.random.Generator:
        """A random stream of this stage, independent of every other stream and of order."""
        return rng_for(self.config.study.seed, self.stage.name, *names)

    def plugin(self, loc: PluginLoc) -> Any:
        """Construct the plugin configured at ``loc`` with its validated settings."""
        table = _plugin_table(self.config, loc)
        return self.registry.create(
            table["kind"], table["name"], self.pipeline.plugin_settings[loc]
        )

    def run_units(self, function: Callable[[Any], Any], jobs: list[Any], label: str) -> None:
        """Run ``function`` on every job whose ``output`` file does not exist yet, with
        progress: the units an interrupted run finished are not redone."""
        todo = [job for job in jobs if not job.output.exists()]
        done = len(jobs) - len(todo)
        if done:
            self.reporter.say(f"  resuming: {done} of {len(jobs)} {label} already done")
        with self.reporter.task(label, total=len(jobs), unit=label, done=done) as advance:
            executor = make_executor(self.config.execution, len(todo))
            for _job, _result in executor.map_unordered(function, todo):
                advance(1)

    def provenance(self) -> dict[str, Any]:
        return provenance_record(
            stage=self.stage.name,
            config_hash=self.pipeline.config_hash(),
            fingerprint=self.fingerprint,
            seed=self.config.study.seed,
            plugins=self.plugins_used,
            inputs=self.inputs,
        )

    def work_dir(self) -> Path:
        """Folder for partial results, private to this fingerprint: a changed config never
        resumes from stale work."""
        folder = self.store.work_dir(self.stage.name) / self.fingerprint[:16]
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def write_artifact(self, name: str, tables: dict[str, Table], meta: dict[str, Any]) -> None:
        if name not in self.stage.outputs:
            raise RuntimeError(f"stage {self.stage.name} does not declare output {name!r}")
        self.outputs[name] = self.store.write_artifact(name, tables, self.provenance(), meta)


def _plugin_table(config: PipelineConfig, loc: PluginLoc) -> dict[str, Any]:
    for choice_loc, kind, name, settings in config.plugin_choices():
        if choice_loc == loc:
            return {"kind": kind, "name": name, "settings": settings}
    raise KeyError(f"no plugin configured at {loc}")


def all_stages() -> tuple[Stage, ...]:
    """Every stage hydraopt knows, in execution order."""
    from hydraopt.stages.cohort import COHORT_STAGE
    from hydraopt.stages.designs import DESIGNS_STAGE
    from hydraopt.stages.meshes import MESHES_STAGE
    from hydraopt.stages.simulate import SIMULATE_STAGE

    return (COHORT_STAGE, DESIGNS_STAGE, MESHES_STAGE, SIMULATE_STAGE)


def enabled_stages(config: PipelineConfig) -> list[Stage]:
    return [stage for stage in all_stages() if stage.enabled(config)]


def sections_without_stage(config: PipelineConfig) -> list[str]:
    """Sections the file fills in that no stage of this version reads: they are validated,
    and the user is told that they do nothing yet."""
    read = {section for stage in all_stages() for section in stage.sections}
    return [name for name in config.present_sections() if name not in read]


@dataclass(frozen=True)
class RunSummary:
    run_dir: Path
    ran: list[str]
    skipped: list[str]


def run_pipeline(
    pipeline: Pipeline,
    registry: PluginRegistry,
    reporter: Reporter,
    from_stage: str | None = None,
    force: bool = False,
) -> RunSummary:
    """Run every enabled stage in order, skipping those already complete."""
    stages = enabled_stages(pipeline.config)
    names = [s.name for s in stages]
    if from_stage is not None and from_stage not in names:
        known = ", ".join(s.name for s in all_stages())
        raise HydraoptError(
            f"--from {from_stage}: no such stage in this pipeline (its stages: {', '.join(names)};"
            f" all stages: {known})"
        )
    store = RunStore(pipeline.run_dir)
    store.create()
    store.write_resolved_config(tomli_w.dumps(pipeline.resolved_dict()))
    redo = set(names) if force else set(names[names.index(from_stage) :]) if from_stage else set()
    store.journal("run_started", config_hash=pipeline.config_hash(), redo=sorted(redo))
    ran, skipped = [], []
    for stage in stages:
        context = _prepare(stage, pipeline, registry, store, reporter)
        if stage.name in redo:  # redo from scratch: no record, no partial work
            store.forget_stage(stage.name)
            store.clear_work(stage.name)
        elif store.is_complete(stage.name, context.fingerprint):
            reporter.stage_skipped(stage.name, "finished earlier with the same inputs")
            store.journal("stage_skipped", stage=stage.name, fingerprint=context.fingerprint)
            skipped.append(stage.name)
            continue
        reporter.stage_started(stage.name, stage.description)
        store.journal("stage_started", stage=stage.name, fingerprint=context.fingerprint)
        start = time.perf_counter()
        stage.run(context)
        missing = set(stage.outputs) - set(context.outputs)
        if missing:
            raise RuntimeError(f"stage {stage.name} did not write {sorted(missing)}")
        elapsed = time.perf_counter() - start
        store.record_stage(stage.name, context.fingerprint, context.outputs, elapsed)
        store.clear_work(stage.name)
        store.journal("stage_finished", stage=stage.name, seconds=round(elapsed, 3))
        reporter.stage_finished(stage.name, elapsed)
        ran.append(stage.name)
    store.journal("run_finished", ran=ran, skipped=skipped)
    return RunSummary(store.run_dir, ran, skipped)


def _prepare(
    stage: Stage,
    pipeline: Pipeline,
    registry: PluginRegistry,
    store: RunStore,
    reporter: Reporter,
) -> StageContext:
    """Resolve the stage's inputs and plugins and compute its fingerprint."""
    inputs: dict[str, str] = dict(stage.extra_inputs(pipeline))
    producers = {out: s.name for s in all_stages() for out in s.outputs}
    for artifact in stage.inputs:
        inputs[artifact] = store.output_digests(producers[artifact])[artifact]
    plugins_used = []
    for loc in stage.plugins(pipeline.config):
        table = _plugin_table(pipeline.config, loc)
        plugin = registry.get(table["kind"], table["name"])
        plugins_used.append(
            {
                "kind": plugin.kind,
                "name": plugin.name,
                "version": plugin.version,
                "package": plugin.package,
                "settings": stable_hash(pipeline.plugin_settings[loc].model_dump(mode="json")),
            }
        )
    fingerprint = stable_hash(
        {
            "stage": stage.name,
            "version": stage.version,
            "config": stage.depends_on(pipeline.config),
            "seed": pipeline.config.study.seed,
            "inputs": inputs,
            "plugins": plugins_used,
        }
    )
    return StageContext(
        stage, pipeline, registry, store, reporter, fingerprint, inputs, plugins_used
    )
