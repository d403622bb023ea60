"""One patient's Stage 3 screen, as a worker process runs it: the surrogate and its reward,
the candidate stream (and the cascade), the filter chain with its simulators, and the
shard's tables; and the checks of a chain before a run starts."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.config import Pipeline
from hydraopt.design_engine import (
    FINALIST_LIMIT,
    FunnelRow,
    Link,
    ScreenResult,
    screen_patient,
    streaming_prefix,
)
from hydraopt.domain import (
    COVERAGE_PATTERNS,
    DesignBatch,
    DesignSpace,
    OutputSpec,
    SurrogateInputs,
)
from hydraopt.domain.mesh import PatientMesh
from hydraopt.domain.training import polymer_inputs
from hydraopt.errors import DataError
from hydraopt.evaluation_cache import merged_outcomes
from hydraopt.plugin_calls import PluginHandle, call_plugin, checked_outcomes
from hydraopt.plugin_types import Candidates, FilterContext
from hydraopt.registry import PluginRegistry
from hydraopt.seeding import rng_for

FIDELITY = "fidelity"


def screen_one_patient(
    job: Any,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any], dict[str, int]]:
    """Run the job's patient through the design engine: the shard's tables and meta, and
    how many evaluations its simulators read from the evaluation cache and made."""
    from hydraopt.design_environment import DesignReward, scorer_for
    from hydraopt.mesh_io import read_mesh_h5
    from hydraopt.trained_surrogate import load_trained_surrogate

    surrogate = load_trained_surrogate(job.surrogate, job.encoder, job.surrogate_folder)
    scorer = scorer_for(surrogate, polymer_inputs(job.space.polymers))
    reward = DesignReward(job.space, scorer, job.reward)
    links = [
        Link(i + 1, handle.name, settings, handle.build_new())
        for i, (handle, settings) in enumerate(job.filters)
    ]
    patient = job.patient
    streaming = links[: streaming_prefix(links)]
    scoring = PatientScoring(
        surrogate, reward, patient, _streamed_outputs(streaming, scorer.outputs)
    )
    score, refine = scoring.score, scoring.refine

    mesh = read_mesh_h5(job.mesh_file, patient.patient_id) if job.mesh_file else None
    shutil.rmtree(job.workdir, ignore_errors=True)
    contexts = _Contexts(job, mesh)
    chunks, funnel_head, n_upper = _candidate_stream(job, score, reward)
    result = screen_patient(patient, chunks, n_upper, score, links, refine, contexts.context)
    if funnel_head:  # the cascade: its rows replace the engine's, which saw only its pool
        scored = result.funnel[0].seconds
        cascade = funnel_head[1]
        funnel_head[1] = FunnelRow(
            0, cascade.filter, cascade.entered, cascade.kept, cascade.seconds + scored
        )
        result.funnel[0:1] = funnel_head
        result.candidates = funnel_head[0].entered
    tables, meta = _shard(job, result, links, surrogate.outputs, contexts)
    return tables, meta, contexts.cache_counts()


class PatientScoring:
    """The surrogate's view of one patient's candidates: ``score`` for every candidate (the
    tensor scorer, dropout off, only the outputs the reward and the streaming links read) and
    ``refine`` for the few that pass the cheap links (``predict``: MC dropout, every output)."""

    def __init__(self, surrogate: Any, reward: Any, patient: Any, streamed: set[str]) -> None:
        import torch

        self.surrogate, self.reward = surrogate, reward
        self.patient, self.streamed = patient, streamed
        self.features = torch.as_tensor(
            patient.features(), dtype=torch.float32, device=reward.device
        )

    def score(self, designs: DesignBatch) -> dict[str, np.ndarray]:
        action = self.reward.action_of(designs)
        scored = self.reward(self.features.expand(len(designs), -1), action, self.streamed)
        return _columns(scored.reward, scored.predictions)

    def refine(self, candidates: Candidates) -> Candidates:
        import torch

        inputs = SurrogateInputs.for_designs(self.patient, candidates.designs)
        predicted = self.surrogate.predict(inputs)
        device = self.reward.device
        pairs = {
            name: (
                torch.as_tensor(predicted[name], device=device),
                torch.as_tensor(predicted.std[name], device=device),
            )
            for name in predicted.mean.names
        }
        scalar = {n: p for n, p in pairs.items() if p[0].dim() == 1}
        rescored = self.reward.score(scalar, self.reward.action_of(candidates.designs))
        return candidates.with_columns(_columns(rescored.reward, pairs))


def _streamed_outputs(links: list[Link], outputs: tuple[OutputSpec, ...]) -> set[str]:
    """Outputs the streaming links read (besides the reward's): no other head runs on every
    candidate."""
    names = {spec.name for spec in outputs if not spec.shape}
    read = {column for link in links for column in getattr(link.filter, "reads", ())}
    wanted = set()
    for column in read:
        base = column.removeprefix("predicted_").removesuffix("_std")
        if column.startswith("predicted_") and base in names:
            wanted.add(base)
    return wanted


def _columns(reward: Any, predictions: dict[str, tuple[Any, Any]]) -> dict[str, np.ndarray]:
    columns = {"reward": reward.detach().cpu().double().numpy()}
    for name, (mean, std) in predictions.items():
        columns[f"predicted_{name}"] = mean.detach().cpu().double().numpy()
        columns[f"predicted_{name}_std"] = std.detach().cpu().double().numpy()
    return columns


def _candidate_stream(
    job: Any, score: Any, reward: Any
) -> tuple[Iterator[DesignBatch], list[FunnelRow], int]:
    """The candidates in chunks (the policy's proposals first), through the cascade when one
    is configured; the funnel rows the cascade adds; an upper bound on the count."""
    import time

    settings = job.screen
    generator = job.generator.build_new()
    if callable(getattr(generator, "around", None)):
        if job.proposals is None:
            raise DataError(
                f"screen: generator {job.generator.name!r} samples around the policy's "
                f"proposals, and the proposals table has none for patient "
                f"{job.patient.patient_id!r}"
            )
        generator = generator.around(DesignBatch.from_columns(job.space, job.proposals))
    rng = rng_for(job.seed, "candidates")
    proposals = (
        DesignBatch.from_columns(job.space, job.proposals)
        if job.proposals is not None and settings.include_proposals
        else None
    )
    n = settings.candidates_per_patient
    total = n + (len(proposals) if proposals is not None else 0)

    def chunks() -> Iterator[DesignBatch]:
        if proposals is not None:
            yield proposals
        yield from stream_designs(generator, job.space, n, settings.chunk_size, rng)

    if settings.cascade is None:
        return chunks(), [], total
    from hydraopt.cascade import best_by_distilled, distil, in_chunks

    started = time.perf_counter()
    sample = generator.generate(
        job.space, settings.cascade.distil_samples, rng_for(job.seed, "distil")
    )
    taught = np.concatenate(
        [score(part)["reward"] for part in in_chunks(sample, settings.chunk_size)]
    )
    model = distil(sample, taught, len(COVERAGE_PATTERNS), seed=job.seed % 2**31)
    keep = max(1, int(np.ceil(settings.cascade.keep_percent / 100 * total)))
    pool, _, seen = best_by_distilled(chunks(), model, keep)
    seconds = time.perf_counter() - started
    head = [
        FunnelRow(0, "generated", seen, seen, 0.0),
        FunnelRow(0, "cascade", seen, 0 if pool is None else len(pool), seconds),
    ]
    return in_chunks(pool, settings.chunk_size), head, keep


def stream_designs(
    generator: Any, space: DesignSpace, n: int, chunk_size: int, rng: np.random.Generator
) -> Iterator[DesignBatch]:
    """``n`` designs in chunks: the generator's own ``stream`` where it has one (it knows how
    its chunks fit together), else one ``generate`` call per chunk with its own stream."""
    stream = getattr(generator, "stream", None)
    if callable(stream):
        yield from stream(space, n, chunk_size, rng)
        return
    for start, child in zip(range(0, n, chunk_size), rng.spawn(-(-n // chunk_size)), strict=True):
        yield generator.generate(space, min(chunk_size, n - start), child)


class _Contexts:
    """Each link's context: the patient's mesh, the simulators (built once per fidelity),
    a random stream and a folder of its own."""

    def __init__(self, job: Any, mesh: PatientMesh | None) -> None:
        self.job, self.mesh = job, mesh
        self.built: dict[tuple[str, str | None], Any] = {}
        self.simulated: dict[str, tuple[OutputSpec, ...]] = {}

    def cache_counts(self) -> dict[str, int]:
        """Evaluations read from the cache and made, over every simulator built."""
        counts = [simulator.cache_stats for simulator in self.built.values()]
        return {k: sum(getattr(c, k) for c in counts) for k in ("hits", "misses", "corrupt")}

    def context(self, link: Link) -> FilterContext:
        workdir = self.job.workdir / f"{link.position}-{link.name}"
        workdir.mkdir(parents=True, exist_ok=True)
        return FilterContext(
            mesh=self.mesh,
            simulator=self.simulator,
            simulator_names=tuple(self.job.simulators),
            rng=rng_for(self.job.seed, "filter", str(link.position)),
            workdir=workdir,
        )

    def simulator(self, name: str, fidelity: str | None = None) -> Any:
        if name not in self.job.simulators:
            raise ValueError(
                f"no simulator {name!r} in the pipeline (it has: "
                f"{', '.join(self.job.simulators) or 'none'})"
            )
        if self.mesh is None:
            raise ValueError("simulating needs the patients' meshes ([mesh] or [simulators])")
        key = (name, fidelity)
        if key not in self.built:
            handle = at_fidelity(self.job.simulators[name], fidelity)
            cache = None
            if self.job.cache is not None and self.job.mesh_digest:
                cache = (self.job.cache, self.job.mesh_digest)
            self.built[key] = _CheckedSimulator(handle, cache)
        # Most recently used last: a link's simulated_* columns replace an earlier link's.
        self.simulated.pop(name, None)
        self.simulated[name] = self.built[key].outputs
        return self.built[key]


class _CheckedSimulator:
    """A simulator whose answers are checked as the simulate stage checks them, whose
    exceptions name the plugin, and whose evaluations go through the evaluation cache when
    ``cache`` (its folder and this patient's mesh digest) is given."""

    def __init__(self, handle: PluginHandle, cache: tuple[Path, str] | None = None) -> None:
        from hydraopt.evaluation_cache import CacheStats

        self.handle, self.cache = handle, cache
        self.outputs = handle.build().outputs
        self.cache_stats = CacheStats()

    def simulate(self, patient: Any, mesh: Any, designs: DesignBatch, workdir: Any) -> Any:
        if self.cache is None:
            return self._simulate(patient, mesh, designs, workdir)
        from hydraopt.evaluation_cache import EvaluationCache, context_key, design_keys

        folder, mesh_digest = self.cache
        cache = EvaluationCache(folder, context_key(self.handle.identity(), patient, mesh_digest))
        keys = design_keys(designs)
        found, cached = cache.lookup(keys, self.outputs)
        todo = np.flatnonzero(~found)
        self.cache_stats.hits += cache.stats.hits
        self.cache_stats.misses += cache.stats.misses
        self.cache_stats.corrupt += cache.stats.corrupt
        simulated = None
        if len(todo):
            simulated = self._simulate(patient, mesh, designs.take(todo), workdir)
            cache.store(keys[todo], simulated)
        return merged_outcomes(self.outputs, cached, todo, simulated)

    def _simulate(self, patient: Any, mesh: Any, designs: DesignBatch, workdir: Any) -> Any:
        result = call_plugin(self.handle, "simulate", patient, mesh, designs, workdir)
        return checked_outcomes(self.handle, result, len(designs), self.outputs)


def at_fidelity(handle: PluginHandle, fidelity: str | None) -> PluginHandle:
    """``handle`` with its settings' ``fidelity`` replaced (unchanged for None)."""
    if fidelity is None:
        return handle
    settings = type(handle.settings).model_validate(
        {**handle.settings.model_dump(), FIDELITY: fidelity}
    )
    return PluginHandle(handle.plugin, settings)


# ---- the shard -------------------------------------------------------------------------------


def _shard(
    job: Any,
    result: ScreenResult,
    links: list[Link],
    predicted: tuple[OutputSpec, ...],
    contexts: _Contexts,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    funnel = {
        "position": np.array([r.position for r in result.funnel], dtype=np.int64),
        "filter": np.array([r.filter for r in result.funnel], dtype=object),
        "entered": np.array([r.entered for r in result.funnel], dtype=np.int64),
        "kept": np.array([r.kept for r in result.funnel], dtype=np.int64),
        "seconds": np.array([r.seconds for r in result.funnel], dtype=np.float64),
    }
    tables = {"funnel": funnel, "finalists": _finalists(job.space, result)}
    tables["metrics"] = {k: np.array([v], dtype=np.float64) for k, v in result.metrics.items()}
    emptied = None
    if result.emptied_by is not None:
        emptied = {
            "position": result.emptied_by.position,
            "filter": result.emptied_by.name,
            "settings": dict(result.emptied_by.settings),
            "message": result.emptied_message(),
        }
    pareto = next((link for link in links if hasattr(link.filter, "objectives")), None)
    meta = {
        "patient_id": job.patient.patient_id,
        "candidates": result.candidates,
        "emptied_by": emptied,
        # Pairs, not a table: the meta is stored with sorted keys, and the order matters.
        "objectives": list(pareto.filter.objectives.items()) if pareto is not None else [],
        "trajectory_weeks": _trajectory_weeks(job, predicted, contexts),
        "finalist_limit": FINALIST_LIMIT,
    }
    return tables, meta


def _finalists(space: DesignSpace, result: ScreenResult) -> dict[str, np.ndarray]:
    if result.finalists is None:
        return {"chosen": np.zeros(0, dtype=bool)}
    candidates = result.finalists
    designs = candidates.designs
    names = space.polymers.names
    table: dict[str, np.ndarray] = {
        **designs.columns(),
        "polymer": np.array([names[i] for i in designs.polymer_index], dtype=object),
        "coverage": np.array([COVERAGE_PATTERNS[i] for i in designs.coverage_index], dtype=object),
        **{name: np.asarray(values) for name, values in candidates.columns.items()},
        "last_link": result.last_link,
        "survivor": result.survivor,
        "chosen": np.zeros(len(designs), dtype=bool),
    }
    if result.chosen is not None:
        table["chosen"][result.chosen] = True
    return table


def _trajectory_weeks(
    job: Any, predicted: tuple[OutputSpec, ...], contexts: _Contexts
) -> dict[str, list[float]]:
    """Follow-up weeks of each trajectory column, from the simulators' settings. A
    ``simulated_`` column holds the last link's results, so the simulator used last decides
    its weeks; a ``predicted_`` one takes the weeks of a simulator that made the dataset (the
    surrogate learnt its trajectories from theirs) whose trajectory has the surrogate's
    shape."""

    def followup_of(name: str) -> list[float] | None:
        followup = getattr(job.simulators[name].settings, "followup_weeks", None)
        return None if followup is None else list(followup)

    def outputs_of(name: str) -> tuple[OutputSpec, ...]:
        return contexts.simulated.get(name) or job.simulators[name].build().outputs

    weeks: dict[str, list[float]] = {}
    for name in list(contexts.simulated) or list(job.simulators):
        followup = followup_of(name)
        for spec in outputs_of(name):
            if followup is not None and spec.shape == (len(followup),):
                weeks[f"simulated_{spec.name}"] = followup
    for prediction in predicted:
        for name in job.dataset_simulators or tuple(job.simulators):
            followup = followup_of(name)
            if (
                followup is not None
                and prediction.shape == (len(followup),)
                and any(spec.name == prediction.name for spec in outputs_of(name))
            ):
                weeks[f"predicted_{prediction.name}"] = followup
                break
    return weeks


# ---- checks before a run ---------------------------------------------------------------------


def chain_problems(pipeline: Pipeline, registry: PluginRegistry) -> list[str]:
    """Every column a link reads that neither the surrogate nor an earlier link provides,
    every simulator or fidelity a link names that the pipeline cannot give, and a generator
    that needs a policy stage that is not there."""
    config = pipeline.config
    screen = config.screen
    problems: list[str] = []
    if screen.generator.plugin == "policy" and config.policy is None:
        problems.append(
            "screen.generator: the 'policy' generator samples around the policy's proposals; "
            "add a [policy] section (Stage 2) or choose another generator"
        )
    heads = getattr(pipeline.plugin_settings.get(("surrogate",)), "heads", None)
    available = {"reward"}
    if heads is not None:
        for name in heads:
            available |= {f"predicted_{name}", f"predicted_{name}_std"}
        for name in sorted(config.reward.outputs()):
            if name not in heads:
                problems.append(
                    f"reward: no surrogate head predicts {name!r} (heads: {', '.join(heads)})"
                )
    simulator_outputs, simulator_problems = _simulator_outputs(pipeline, registry)
    problems += simulator_problems
    for i, choice in enumerate(screen.filters):
        settings = pipeline.plugin_settings.get(("screen", "filters", i))
        if settings is None:  # the plugin or its settings are reported by validation
            continue
        where = f"screen.filters[{i}] ({choice.plugin})"
        try:
            instance = registry.handle("filter", choice.plugin, settings).build_new()
        except Exception as exc:  # a bad combination of settings, named
            problems.append(f"{where}: {exc}")
            continue
        problems += _simulated_by(where, settings, pipeline, registry)
        if heads is not None or not any(c.startswith("predicted_") for c in instance.reads):
            for column in instance.reads:
                if column not in available:
                    problems.append(
                        f"{where}: reads {column!r}, which neither the surrogate nor an "
                        f"earlier filter provides (available: {', '.join(sorted(available))})"
                    )
        produces = getattr(instance, "produces", None)
        if callable(produces):
            try:
                available |= set(produces(simulator_outputs))
            except ValueError as exc:  # names a simulator the pipeline lacks, say
                problems.append(f"{where}: {exc}")
                continue
        for column in getattr(instance, "scores", ()):
            if column not in available:
                problems.append(
                    f"{where}: score: {column!r} is neither a column of the candidates nor "
                    f"one this link adds (available: {', '.join(sorted(available))})"
                )
    return problems


def _simulator_outputs(
    pipeline: Pipeline, registry: PluginRegistry
) -> tuple[dict[str, tuple[str, ...]], list[str]]:
    outputs, problems = {}, []
    for name in pipeline.config.simulators:
        settings = pipeline.plugin_settings.get(("simulators", name))
        if settings is None:
            continue
        try:
            simulator = registry.handle("simulator", name, settings).build()
            outputs[name] = tuple(spec.name for spec in simulator.outputs)
        except Exception as exc:
            problems.append(f"simulators.{name}: cannot be built ({exc})")
    return outputs, problems


def _simulated_by(
    where: str, settings: Any, pipeline: Pipeline, registry: PluginRegistry
) -> list[str]:
    """A simulating link's simulators must be configured, and take its fidelity."""
    configured = pipeline.config.simulators
    names = getattr(settings, "simulators", None)
    fidelity = getattr(settings, FIDELITY, None)
    if not hasattr(settings, "simulators"):
        return []
    if not configured:
        return [f"{where}: simulates, but the pipeline configures no [simulators.NAME]"]
    problems = [
        f"{where}: simulators: no simulator {name!r} in the pipeline "
        f"(it has: {', '.join(configured)})"
        for name in names or ()
        if name not in configured
    ]
    if fidelity is not None:
        for name in names or list(configured):
            loc_settings = pipeline.plugin_settings.get(("simulators", name))
            if loc_settings is None:
                continue
            if FIDELITY not in type(loc_settings).model_fields:
                problems.append(f"{where}: fidelity: simulator {name!r} has no fidelity setting")
                continue
            try:
                at_fidelity(registry.handle("simulator", name, loc_settings), fidelity)
            except Exception as exc:
                problems.append(f"{where}: fidelity {fidelity!r} for {name!r}: {exc}")
    return problems
