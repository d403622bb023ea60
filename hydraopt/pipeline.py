"""The runner: finds the stages, orders them from their inputs and outputs, skips, resumes.

A stage's *fingerprint* hashes all it depends on: its name and version, its slice of the
config, the study seed, the plugins it uses (name, package, version, settings and a digest of
their source code) and the content digests of its input artifacts. A stage whose recorded
fingerprint matches, and whose recorded files still have their recorded SHA-256, is skipped; a
changed input reruns it and, through the changed artifact digests, every stage after it.
``--from STAGE`` and ``--force`` rerun on purpose.

A stage whose units failed is not recorded as finished: its finished units are kept and the
next run retries only the failed ones. By default the run stops after such a stage; with
``keep_going`` it goes on with every stage that does not need the failed one (as ``make -k``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import tomli_w

from hydraopt.config import Pipeline, PipelineConfig, stable_hash
from hydraopt.errors import ConfigError, HydraoptError
from hydraopt.execution import ExecutionEngine
from hydraopt.ledger import StageLedger, UnitFailure
from hydraopt.plugin_calls import PluginFailure, forget_built_plugins
from hydraopt.progress import Reporter
from hydraopt.registry import PluginRegistry
from hydraopt.run_lock import check_owner, run_lock
from hydraopt.run_summary import RunSummary, write_summary
from hydraopt.stages import discover_stages
from hydraopt.stages.base import PluginLoc, Stage, StageContext, UnitsFailed
from hydraopt.store import RunStore


def ordered_stages(stages: Iterable[Stage] | None = None) -> tuple[Stage, ...]:
    """The stages in an order where every stage comes after those whose outputs it reads;
    among stages free to go, alphabetical, so the order is stable."""
    stages = tuple(discover_stages() if stages is None else stages)
    producer: dict[str, str] = {}
    for stage in stages:
        for output in stage.outputs:
            if output in producer:
                raise RuntimeError(
                    f"artifact {output!r} is written by both stage {producer[output]} and "
                    f"stage {stage.name}"
                )
            producer[output] = stage.name
    needs: dict[str, set[str]] = {}
    for stage in stages:
        missing = [i for i in (*stage.inputs, *stage.optional_inputs) if i not in producer]
        if missing:
            raise RuntimeError(f"stage {stage.name} reads {missing}, which no stage writes")
        needs[stage.name] = {producer[i] for i in (*stage.inputs, *stage.optional_inputs)}
    by_name = {stage.name: stage for stage in stages}
    order: list[Stage] = []
    placed: set[str] = set()
    while len(order) < len(stages):
        ready = sorted(n for n in by_name if n not in placed and needs[n] <= placed)
        if not ready:
            cycle = sorted(n for n in by_name if n not in placed)
            raise RuntimeError(f"stages {cycle} read each other's outputs in a cycle")
        order.append(by_name[ready[0]])
        placed.add(ready[0])
    return tuple(order)


def enabled_stages(config: PipelineConfig) -> list[Stage]:
    return [stage for stage in ordered_stages() if stage.enabled(config)]


def stage_reads(stage: Stage, config: PipelineConfig) -> tuple[str, ...]:
    """The artifacts ``stage`` reads under ``config``: its inputs, and those optional inputs
    whose writing stage the config switches on."""
    producers = {out: s for s in ordered_stages() for out in s.outputs}
    optional = tuple(i for i in stage.optional_inputs if producers[i].enabled(config))
    return (*stage.inputs, *optional)


def stages_up_to(stages: list[Stage], target: str) -> list[Stage]:
    """``target`` and the stages it needs, directly or through others, in order."""
    producers = {out: s for s in stages for out in s.outputs}
    needed = {target}
    for stage in reversed(stages):  # ordered, so a stage comes after all it needs
        if stage.name in needed:
            reads = (*stage.inputs, *stage.optional_inputs)
            needed |= {producers[i].name for i in reads if i in producers}
    return [s for s in stages if s.name in needed]


def sections_without_stage(config: PipelineConfig) -> list[str]:
    """Sections the file fills in that no stage of this version reads: they are validated,
    and the user is told that they do nothing yet."""
    read = {section for stage in ordered_stages() for section in stage.sections}
    return [name for name in config.present_sections() if name not in read]


def run_pipeline(
    pipeline: Pipeline,
    registry: PluginRegistry,
    reporter: Reporter,
    from_stage: str | None = None,
    force: bool = False,
    keep_going: bool = False,
    adopt_run_dir: bool = False,
    to_stage: str | None = None,
) -> RunSummary:
    """Run every enabled stage in order (or, with ``to_stage``, that stage and those it
    needs), skipping those already complete and intact."""
    stages = enabled_stages(pipeline.config)
    names = [s.name for s in stages]
    for option, stage in (("--from", from_stage), ("--to", to_stage)):
        if stage is not None and stage not in names:
            known = ", ".join(s.name for s in ordered_stages())
            raise HydraoptError(
                f"{option} {stage}: no such stage in this pipeline (its stages: "
                f"{', '.join(names)}; all stages: {known})"
            )
    if to_stage is not None:
        stages = stages_up_to(stages, to_stage)
        names = [s.name for s in stages]
        if from_stage is not None and from_stage not in names:
            raise HydraoptError(f"--from {from_stage}: not a stage that {to_stage} needs")
    problems = [p for stage in stages for p in stage.preflight(pipeline, registry)]
    if problems:
        raise ConfigError(problems)
    store = RunStore(pipeline.run_dir)
    store.create()
    with run_lock(store.run_dir):
        check_owner(store.run_dir, pipeline.path, adopt_run_dir)
        leftovers = store.remove_temporaries()
        if leftovers:
            reporter.say(f"  removed {len(leftovers)} temporary files of an interrupted run")
        store.write_resolved_config(tomli_w.dumps(pipeline.resolved_dict()))
        redo = (
            set(names) if force else set(names[names.index(from_stage) :]) if from_stage else set()
        )
        store.journal("run_started", config_hash=pipeline.config_hash(), redo=sorted(redo))
        summary = RunSummary(store.run_dir, pipeline.path, order=names)

        def announce(text: str, fields: dict[str, object]) -> None:
            reporter.say(f"  tasks run on {text}")
            store.journal("engine_started", **fields)

        engine = ExecutionEngine(pipeline.config.execution, announce)
        try:
            for stage in stages:
                _run_stage(stage, pipeline, registry, store, reporter, redo, summary, engine)
                if summary.failed and not keep_going:
                    summary.not_run += [n for n in names if n not in summary.accounted()]
                    break
        finally:
            engine.close()
            forget_built_plugins()
            current = [s for s in stages if s.name in (*summary.ran, *summary.skipped)]
            summary.artifacts = _artifacts(store, current)
            write_summary(summary)
            store.journal(
                "run_finished",
                ran=summary.ran,
                skipped=summary.skipped,
                failed=sorted(summary.failed),
                blocked=summary.blocked,
                failures={
                    stage: [_failure_fields(f) for f in failures]
                    for stage, failures in summary.failed.items()
                },
                recorded_failures={
                    stage: [_failure_fields(f) for f in failures]
                    for stage, failures in summary.recorded.items()
                },
            )
    return summary


def _run_stage(
    stage: Stage,
    pipeline: Pipeline,
    registry: PluginRegistry,
    store: RunStore,
    reporter: Reporter,
    redo: set[str],
    summary: RunSummary,
    engine: ExecutionEngine,
) -> None:
    producers = {out: s.name for s in ordered_stages() for out in s.outputs}
    missing = sorted(
        {producers[i] for i in stage_reads(stage, pipeline.config)}
        & (set(summary.failed) | set(summary.blocked))
    )
    if missing:
        reporter.say(f"[yellow]stage {stage.name}: not run (needs {', '.join(missing)})[/yellow]")
        store.journal("stage_blocked", stage=stage.name, needs=missing)
        summary.blocked.append(stage.name)
        return
    context = _prepare(stage, pipeline, registry, store, reporter, engine)
    if stage.name in redo:  # redo from scratch: no partial work
        store.clear_work(stage.name)
    elif (record := store.stage_record(stage.name) or {}).get("fingerprint") == context.fingerprint:
        damaged = store.damaged_outputs(stage.name)
        retry = record.get("failed_units", [])
        if retry and not damaged:
            reporter.say(
                f"[yellow]stage {stage.name}: retrying {len(retry)} units that failed "
                "in an earlier run[/yellow]"
            )
            store.journal("stage_retrying", stage=stage.name, units=retry)
        elif not damaged:
            reporter.stage_skipped(stage.name, "finished earlier with the same inputs")
            store.journal("stage_skipped", stage=stage.name, fingerprint=context.fingerprint)
            summary.skipped.append(stage.name)
            return
        reporter.say(f"[yellow]stage {stage.name}: redoing, {'; '.join(damaged)}[/yellow]")
        store.journal("stage_damaged", stage=stage.name, problems=damaged)
    # Until it finishes, the stage has no record: its previous outputs are not its outputs
    # for these inputs, and no reader may take them for current.
    store.forget_stage(stage.name)
    reporter.stage_started(stage.name, stage.description)
    store.journal("stage_started", stage=stage.name, fingerprint=context.fingerprint)
    start = time.perf_counter()
    try:
        stage.run(context)
    except UnitsFailed as exc:
        _failed(stage, store, reporter, summary, exc.failures)
        return
    except PluginFailure as exc:  # a plugin failed in the driver (its factory, say)
        ledger = StageLedger(store.work_dir(stage.name), store.failures_root / stage.name)
        failure = ledger.record_failure(
            stage.name, "stage", exc.plugin_label, str(exc), _traceback(exc)
        )
        _failed(stage, store, reporter, summary, [failure])
        return
    missing_outputs = set(stage.outputs) - set(context.outputs)
    if missing_outputs:
        raise RuntimeError(f"stage {stage.name} did not write {sorted(missing_outputs)}")
    elapsed = time.perf_counter() - start
    recorded = context.recorded_failures
    store.record_stage(
        stage.name, context.fingerprint, context.outputs, elapsed, [f.key for f in recorded]
    )
    context.finish_units()
    store.clear_scratch(stage.name)
    if recorded:  # their tracebacks stay beside the outputs that record them
        summary.recorded[stage.name] = recorded
        reporter.say(
            f"[yellow]stage {stage.name}: {len(recorded)} units failed and are recorded as "
            "failed; the study goes on, and the next run retries them[/yellow]"
        )
    else:
        store.clear_failures(stage.name)
    store.journal(
        "stage_finished",
        stage=stage.name,
        seconds=round(elapsed, 3),
        recorded_failures=[_failure_fields(f) for f in recorded],
    )
    reporter.stage_finished(stage.name, elapsed)
    summary.ran.append(stage.name)


def _failed(
    stage: Stage,
    store: RunStore,
    reporter: Reporter,
    summary: RunSummary,
    failures: list[UnitFailure],
) -> None:
    summary.failed[stage.name] = failures
    store.journal(
        "stage_failed",
        stage=stage.name,
        failures=[_failure_fields(f) for f in failures],
    )
    reporter.say(
        f"[red]stage {stage.name}: {len(failures)} units failed; the others are kept[/red]"
    )


def _failure_fields(failure: UnitFailure) -> dict[str, str]:
    return {"unit": failure.key, "plugin": failure.plugin, "reason": failure.reason}


def _traceback(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))


def _artifacts(store: RunStore, stages: list[Stage]) -> dict[str, Path]:
    found = {}
    for stage in stages:
        record = store.stage_record(stage.name) or {}
        for name, output in record.get("outputs", {}).items():
            found[name] = store.run_dir / output["path"]
    return found


def plugin_fingerprints(
    stage: Stage, pipeline: Pipeline, registry: PluginRegistry
) -> dict[PluginLoc, dict[str, str]]:
    """Everything about each of the stage's plugins that can change its results."""
    records = {}
    for loc in stage.plugins(pipeline.config):
        kind, name = pipeline.config.plugin_at(loc)
        records[loc] = registry.handle(kind, name, pipeline.plugin_settings[loc]).identity()
    return records


def _prepare(
    stage: Stage,
    pipeline: Pipeline,
    registry: PluginRegistry,
    store: RunStore,
    reporter: Reporter,
    engine: ExecutionEngine,
) -> StageContext:
    """Resolve the stage's inputs and plugins and compute its fingerprint."""
    inputs: dict[str, str] = dict(stage.extra_inputs(pipeline))
    producers = {out: s.name for s in ordered_stages() for out in s.outputs}
    for artifact in stage_reads(stage, pipeline.config):
        inputs[artifact] = store.output_digests(producers[artifact])[artifact]
    plugins = plugin_fingerprints(stage, pipeline, registry)
    fingerprint = stable_hash(
        {
            "stage": stage.name,
            "version": stage.version,
            "config": stage.depends_on(pipeline.config),
            "seed": pipeline.config.study.seed,
            "inputs": inputs,
            "plugins": list(plugins.values()),
        }
    )
    return StageContext(
        stage, pipeline, registry, store, reporter, fingerprint, inputs, plugins, engine
    )
