"""The stage contract: what a stage declares, what it is given, and how its units run.

A stage is a module of :mod:`hydraopt.stages` defining ``STAGE``, a :class:`Stage`. It
declares the artifacts it reads (``inputs``) and writes (``outputs``, with their kind); the
runner (:mod:`hydraopt.pipeline`) finds every stage module, orders the stages from those
declarations, and never lists stages itself. A stage module never imports the runner.

Long stages split their work into :class:`Unit`\\ s (a patient, a patient and simulator) and
hand them to :meth:`StageContext.run_units`, which skips units already done, runs the rest in
this process or in worker processes, keeps failures with their tracebacks, and raises
:class:`UnitsFailed` at the end if any unit failed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hydraopt.atomic import file_sha256
from hydraopt.config import Pipeline, PipelineConfig, stable_hash
from hydraopt.execution import ExecutionEngine, InlineExecutor, Task
from hydraopt.ledger import DoneUnit, StageLedger, UnitFailure
from hydraopt.plugin_calls import PluginHandle
from hydraopt.progress import Reporter
from hydraopt.provenance import provenance_record
from hydraopt.registry import PluginRegistry
from hydraopt.seeding import rng_for
from hydraopt.store import ArtifactRecord, RunStore, Shard, Table, h5_content_digest

PluginLoc = tuple[str | int, ...]
# The provenance key under which a unit's file records its evaluation cache counts.
CACHE_COUNTS = "evaluation_cache"
ArtifactKind = Literal["tables", "file", "folder", "shards"]


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    :param name: unique; also the name of its module.
    :param version: bump when the stage's outputs change for the same inputs, so existing
        runs redo it.
    :param description: one line, shown when the stage starts.
    :param sections: optional pipeline.toml sections it reads (see
        :meth:`PipelineConfig.present_sections`).
    :param inputs: artifacts of earlier stages it reads.
    :param outputs: artifacts it writes and their kinds, all through the context's
        ``write_*`` methods.
    :param enabled: whether the config switches the stage on.
    :param depends_on: the slice of the config its results depend on.
    :param plugins: key paths (into pipeline.toml) of the plugins it uses.
    :param run: does the work.
    :param extra_inputs: digests of files it reads from outside the run (say a cohort CSV).
    :param optional_inputs: artifacts it reads when the stage writing them runs (Stage 3
        reads the policy's proposals when there is a policy stage); it comes after that stage.
    :param preflight: problems it can see in the pipeline before any stage runs (a setting
        that names an output no simulator produces), each naming the file and key; checked
        by ``hydraopt validate`` and at the start of every run, so that nothing expensive
        runs first.
    """

    name: str
    version: str
    description: str
    sections: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: Mapping[str, ArtifactKind]
    enabled: Callable[[PipelineConfig], bool]
    depends_on: Callable[[PipelineConfig], Any]
    plugins: Callable[[PipelineConfig], list[PluginLoc]]
    run: Callable[[StageContext], None]
    extra_inputs: Callable[[Pipeline], dict[str, str]] = lambda pipeline: {}
    optional_inputs: tuple[str, ...] = ()
    preflight: Callable[[Pipeline, PluginRegistry], list[str]] = lambda pipeline, registry: []


@dataclass(frozen=True)
class Unit:
    """One independent piece of a stage's work.

    :param key: unique within the stage and safe as a file name (``SYN001__reference-ep``).
    :param function: ``function(job, output)`` writes the unit's result to the HDF5 file
        ``output`` (with :func:`hydraopt.store.write_h5`); it runs in a worker process when the
        pool is used, so it must be a module-level function and ``job`` must pickle.
    :param job: the unit's inputs.
    :param plugin: the plugin doing the unit's work: named when it fails, and its timeout and
        fingerprint apply.
    :param depends_on: the unit's own share of the stage's inputs (its patient, the digest of
        its patient's designs and mesh, ...). When given, the unit is keyed by it, by its own
        plugin (not the stage's other plugins), by the stage's config slice and by every
        input artifact it does not ``cover``: so another simulator's settings, or another
        patient's mesh, do not redo it. When None, the unit is redone whenever anything about
        the stage changes.
    :param covers: input artifacts whose part this unit reads is in ``depends_on``, so a
        change to the rest of them does not redo it.
    :param timeout_s: wall-clock limit; the unit fails when it is exceeded.
    """

    key: str
    function: Callable[[Any, Path], None]
    job: Any
    plugin: PluginHandle | None = None
    depends_on: Any = None
    covers: tuple[str, ...] = ()
    timeout_s: float | None = None


class UnitsFailed(Exception):
    """Some units of a stage failed; the others are done and kept for the next run."""

    def __init__(self, stage: str, failures: Sequence[UnitFailure]) -> None:
        self.stage = stage
        self.failures = list(failures)
        super().__init__(f"stage {stage}: {len(self.failures)} units failed")


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
    plugins_used: dict[PluginLoc, dict[str, str]]
    engine: ExecutionEngine
    outputs: dict[str, ArtifactRecord] = field(default_factory=dict)
    done_units: list[DoneUnit] = field(default_factory=list)
    ledger: StageLedger | None = None
    # Units that failed in a stage that goes on without them (``tolerate_failures``): the
    # stage finishes, and the next run retries them.
    recorded_failures: list[UnitFailure] = field(default_factory=list)

    @property
    def config(self) -> PipelineConfig:
        return self.pipeline.config

    def rng(self, *names: str) -> np.random.Generator:
        """A random stream of this stage, independent of every other stream and of order."""
        return rng_for(self.config.study.seed, self.stage.name, *names)

    def plugin(self, loc: PluginLoc) -> PluginHandle:
        """The plugin configured at ``loc`` with its validated settings. ``.build()`` gives
        the object in this process; units get the handle and build it in their worker."""
        record = self.plugins_used[loc]
        return self.registry.handle(
            record["kind"], record["name"], self.pipeline.plugin_settings[loc]
        )

    # ---- units -------------------------------------------------------------------------------

    def unit_fingerprint(self, unit: Unit) -> str:
        if unit.depends_on is None:
            return stable_hash({"stage": self.fingerprint, "unit": unit.key})
        plugin = None
        if unit.plugin is not None:
            loc = next(
                loc
                for loc, record in self.plugins_used.items()
                if record["kind"] == unit.plugin.kind and record["name"] == unit.plugin.name
            )
            plugin = self.plugins_used[loc]
        uncovered = {k: v for k, v in self.inputs.items() if k not in unit.covers}
        return stable_hash(
            {
                "stage": self.stage.name,
                "version": self.stage.version,
                "seed": self.config.study.seed,
                "config": self.stage.depends_on(self.config),
                "inputs": uncovered,
                "unit": unit.key,
                "plugin": plugin,
                "depends_on": unit.depends_on,
            }
        )

    def run_units(
        self, units: Sequence[Unit], label: str, tolerate_failures: bool = False
    ) -> dict[str, DoneUnit]:
        """Run every unit not already done (with progress) and return the finished ones,
        done now or before, by key. If any failed, raises :class:`UnitsFailed` after every
        unit was tried; with ``tolerate_failures``, returns without them and keeps them in
        :attr:`recorded_failures` for the run to report and the next run to retry."""
        ledger = StageLedger(
            self.store.work_dir(self.stage.name), self.store.failures_root / self.stage.name
        )
        done: dict[str, DoneUnit] = {}
        todo: list[tuple[Unit, str]] = []
        for unit in units:
            fingerprint = self.unit_fingerprint(unit)
            finished = ledger.done(unit.key, fingerprint)
            if finished is not None:
                done[unit.key] = finished
            else:
                todo.append((unit, fingerprint))
        if done:
            self.reporter.say(f"  {len(done)} of {len(units)} {label} already done")
        if not todo:
            self.done_units += done.values()
            self.ledger = ledger
            return {unit.key: done[unit.key] for unit in units}
        executor = self.engine.executor(len(todo), needs_timeout=any(u.timeout_s for u, _ in todo))
        if not isinstance(executor, InlineExecutor):  # plugins go to worker processes
            handles = {id(u.plugin): u.plugin for u, _ in todo if u.plugin is not None}
            for handle in handles.values():
                handle.check_picklable()
        by_key = {unit.key: (unit, fingerprint) for unit, fingerprint in todo}
        tasks = [
            Task(
                unit.key,
                run_unit,
                (unit.function, unit.job, ledger.unit_file(unit.key, fingerprint)),
                unit.timeout_s,
            )
            for unit, fingerprint in todo
        ]
        failures: list[UnitFailure] = []
        with self.reporter.task(label, total=len(units), unit=label, done=len(done)) as advance:
            for result in executor.run(tasks):
                unit, fingerprint = by_key[result.key]
                if result.error is not None:
                    blame = result.error.plugin or (unit.plugin.label if unit.plugin else "")
                    failures.append(
                        ledger.record_failure(
                            self.stage.name,
                            unit.key,
                            blame,
                            result.error.reason,
                            result.error.details,
                        )
                    )
                    self.reporter.say(f"  [red]failed[/red] {unit.key}: {result.error.reason}")
                else:
                    sha256, content = result.value
                    finished = DoneUnit(
                        unit.key,
                        fingerprint,
                        ledger.unit_file(unit.key, fingerprint),
                        sha256,
                        content,
                    )
                    ledger.record_done(finished)
                    done[unit.key] = finished
                advance(1)
        self.done_units += done.values()
        self.ledger = ledger
        if failures and not tolerate_failures:
            raise UnitsFailed(self.stage.name, failures)
        self.recorded_failures += failures
        return {unit.key: done[unit.key] for unit in units if unit.key in done}

    def finish_units(self) -> None:
        """The stage finished: keep only this generation of units in its work folder."""
        if self.ledger is not None:
            self.ledger.keep_only(self.done_units)

    # ---- artifacts ---------------------------------------------------------------------------

    def provenance(self) -> dict[str, Any]:
        return provenance_record(
            stage=self.stage.name,
            config_hash=self.pipeline.config_hash(),
            fingerprint=self.fingerprint,
            seed=self.config.study.seed,
            plugins=list(self.plugins_used.values()),
            inputs=self.inputs,
        )

    def write_tables(self, name: str, tables: Mapping[str, Table], meta: Mapping[str, Any]) -> None:
        self._declared(name, "tables")
        self.outputs[name] = self.store.write_tables(name, tables, self.provenance(), meta)

    def write_file(self, name: str, source: Path, meta: Mapping[str, Any]) -> None:
        self._declared(name, "file")
        self.outputs[name] = self.store.write_file(name, source, self.provenance(), meta)

    def write_folder(self, name: str, source: Path, meta: Mapping[str, Any]) -> None:
        """The files of folder ``source`` become artifact ``name``."""
        self._declared(name, "folder")
        self.outputs[name] = self.store.write_folder(name, source, self.provenance(), meta)

    def write_shards(
        self, name: str, units: Mapping[str, DoneUnit], meta: Mapping[str, Any]
    ) -> None:
        """The units' files, by key, become the shards of artifact ``name``."""
        shards = {key: Shard(unit.file, unit.content_digest) for key, unit in units.items()}
        self.write_shard_files(name, shards, meta)

    def write_shard_files(
        self, name: str, shards: Mapping[str, Shard], meta: Mapping[str, Any]
    ) -> None:
        """Files, by key, become the shards of artifact ``name`` (a stage that joins or
        completes its units' files)."""
        self._declared(name, "shards")
        self.outputs[name] = self.store.write_shards(name, shards, self.provenance(), meta)

    def _declared(self, name: str, kind: str) -> None:
        declared = self.stage.outputs.get(name)
        if declared != kind:
            raise RuntimeError(
                f"stage {self.stage.name} writes {kind} artifact {name!r} but declares "
                f"{declared or 'no such output'}"
            )

    def scratch_dir(self) -> Path:
        """A folder for temporary files of this stage, removed when the stage finishes."""
        folder = self.store.work_dir(self.stage.name) / "scratch"
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def run_unit(function: Callable[[Any, Path], None], job: Any, output: Path) -> tuple[str, str]:
    """Run one unit (in whichever process) and return its file's SHA-256 and content digest."""
    function(job, output)
    if not output.is_file():
        raise RuntimeError(f"the unit finished without writing {output}")
    return file_sha256(output), h5_content_digest(output)


def report_cache_counts(
    context: StageContext, files: Sequence[Path], what: str = "evaluations"
) -> None:
    """Say and journal how many evaluations the stage's units read from the evaluation
    cache and how many they made (from their files' provenance, :data:`CACHE_COUNTS`)."""
    from hydraopt.store import read_h5_attrs

    hits = misses = corrupt = 0
    for path in files:
        counts = read_h5_attrs(path)["provenance"].get(CACHE_COUNTS) or {}
        hits += counts.get("hits", 0)
        misses += counts.get("misses", 0)
        corrupt += counts.get("corrupt", 0)
    if hits or misses:
        context.reporter.say(
            f"  evaluation cache: {hits} {what} read, {misses} made ({context.pipeline.cache_dir})"
        )
        context.store.journal(
            "evaluation_cache",
            stage=context.stage.name,
            what=what,
            hits=hits,
            misses=misses,
            corrupt=corrupt,
        )
