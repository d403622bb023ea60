"""Stage 3's design engine: throughput, the cascade, the naive design, and the quality of the
chosen designs against an exhaustive search with the reference simulator.

Usage: python benchmarks/bench_screen.py PIPELINE [--part all|throughput|cascade|naive|quality]

PIPELINE is a pipeline file whose run directory holds a trained surrogate (the train stage),
its patients' meshes and the dataset's splits, with a [screen] section (the chain). Each part
runs in its own process (``--part all`` starts them one after another) so that its peak
memory is its own; results go to ``--out`` as JSON and are printed.

- throughput: ``--candidates`` (10,000,000) for one patient through generation, the full
  surrogate and the chain's first two filters; time, peak memory, and the time against the
  floor (the seeds' 1.5 MFLOP per candidate at this machine's measured bf16 and fp32 matrix
  product rates, measured in the same run); also the full surrogate's top 1,000 by reward.
- cascade: the same candidates through the distilled model first; time, and the share of the
  full surrogate's top 1,000 it keeps.
- naive: the transformer (polyBERT's architecture, untrained) encoding each candidate's PSMILES
  and the network on it, on a subsample; the engine's speed-up over it.
- quality: for held-out patients, the whole chain (``--quality-candidates`` each) against the
  best design of an exhaustive search with the reference mechanics on a reduced grid.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hydraopt.config import CascadeConfig, Pipeline, load_pipeline
from hydraopt.design_engine import Link, screen_patient
from hydraopt.design_environment import DesignReward, scorer_for
from hydraopt.domain import Cohort, DesignSpace
from hydraopt.domain.training import polymer_inputs
from hydraopt.mesh_io import read_mesh_h5
from hydraopt.registry import PluginRegistry
from hydraopt.screen_unit import (
    PatientScoring,
    _streamed_outputs,
    screen_one_patient,
    stream_designs,
)
from hydraopt.seeding import derive_seed, rng_for
from hydraopt.stages.designs import stored_space
from hydraopt.stages.screen import ScreenJob
from hydraopt.store import RunStore
from hydraopt.trained_surrogate import load_trained_surrogate, patient_splits

SEEDS_FLOP_PER_CANDIDATE = 1.5e6  # seeds/000 sections 4-6: about 757k multiply-adds
TOP = 1000


@dataclass
class Study:
    pipeline: Pipeline
    registry: PluginRegistry
    store: RunStore
    space: DesignSpace
    cohort: Cohort
    split_of: dict[str, str]
    surrogate: Any
    reward: DesignReward


def load_study(path: Path) -> Study:
    registry = PluginRegistry.discover()
    pipeline = load_pipeline(path, registry)
    config = pipeline.config
    assert config.screen is not None and config.surrogate is not None
    store = RunStore(pipeline.run_dir)
    space = stored_space(store, config)
    surrogate = load_trained_surrogate(
        handle(pipeline, registry, ("surrogate",)),
        handle(pipeline, registry, ("encoder",)),
        store.folder("surrogate").path,
    )
    reward = DesignReward(
        space, scorer_for(surrogate, polymer_inputs(space.polymers)), config.reward
    )
    cohort = Cohort.from_columns(store.tables("cohort").table("patients"))
    return Study(
        pipeline,
        registry,
        store,
        space,
        cohort,
        patient_splits(store.tables("dataset")),
        surrogate,
        reward,
    )


def handle(pipeline: Pipeline, registry: PluginRegistry, loc: tuple) -> Any:
    kind, name = pipeline.config.plugin_at(loc)
    return registry.handle(kind, name, pipeline.plugin_settings[loc])


def links_of(study: Study, count: int | None = None) -> list[Link]:
    filters = study.pipeline.config.screen.filters[:count]
    return [
        Link(
            i + 1,
            f.plugin,
            f.settings,
            handle(study.pipeline, study.registry, ("screen", "filters", i)).build_new(),
        )
        for i, f in enumerate(filters)
    ]


def candidates(study: Study, n: int, seed_name: str = "bench"):
    config = study.pipeline.config
    generator = handle(study.pipeline, study.registry, ("screen", "generator")).build_new()
    return stream_designs(
        generator, study.space, n, config.screen.chunk_size, rng_for(config.study.seed, seed_name)
    )


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def matmul_rate(dtype: torch.dtype) -> float:
    """FLOP/s of a [4096, 512] x [512, 512] product, the shape of the fusion's layers in one
    block of the scorer."""
    a, b = torch.randn(4096, 512, dtype=dtype), torch.randn(512, 512, dtype=dtype)
    for _ in range(2):
        a @ b
    start, repeats = time.perf_counter(), 5
    for _ in range(repeats):
        a @ b
    return repeats * 2 * a.shape[0] * 512 * 512 / (time.perf_counter() - start)


def network_flop_per_candidate(study: Study, streamed: set[str]) -> float:
    """Multiply-adds x 2 of the linear layers one candidate runs through (the folded fusion),
    in every member of an ensemble."""
    members = study.surrogate._members
    network = members[0].network
    per_row = sum(
        m.weight.numel() for m in network.properties.modules() if isinstance(m, torch.nn.Linear)
    )
    first = network.fusion.layers[0]
    per_row += first.out_features * network.properties[-3].out_features
    per_row += sum(
        m.weight.numel()
        for m in network.fusion.layers[1:].modules()
        if isinstance(m, torch.nn.Linear)
    )
    for name in {*study.pipeline.config.reward.outputs(), *streamed}:
        per_row += sum(
            m.weight.numel()
            for m in network.heads[name].modules()
            if isinstance(m, torch.nn.Linear)
        )
    return 2.0 * per_row * len(members)


class TopByReward:
    """Running best ``TOP`` candidates by reward over a stream, by position in it."""

    def __init__(self) -> None:
        self.seen, self.reward, self.position = 0, np.zeros(0), np.zeros(0, dtype=np.int64)

    def add(self, reward: np.ndarray) -> None:
        positions = np.arange(self.seen, self.seen + len(reward))
        self.seen += len(reward)
        rewards = np.concatenate([self.reward, reward])
        positions = np.concatenate([self.position, positions])
        best = np.argsort(-rewards, kind="stable")[:TOP]
        self.reward, self.position = rewards[best], positions[best]


def part_throughput(study: Study, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    patient = study.cohort.get(args.patient)
    links = links_of(study, 2)
    streamed = _streamed_outputs(links, study.surrogate.outputs)
    scoring = PatientScoring(study.surrogate, study.reward, patient, streamed)
    top = TopByReward()

    def score(designs):
        columns = scoring.score(designs)
        top.add(columns["reward"])
        return columns

    n = args.candidates
    start = time.perf_counter()
    result = screen_patient(patient, candidates(study, n), n, score, links, lambda c: c, None)
    seconds = time.perf_counter() - start
    peak = peak_rss_gb()
    generation = time.perf_counter()
    for _ in candidates(study, n):
        pass
    generation = time.perf_counter() - generation
    np.save(out / "top_full.npy", top.position)
    rates = {"fp32": matmul_rate(torch.float32), "bf16": matmul_rate(torch.bfloat16)}
    flop = network_flop_per_candidate(study, streamed)
    floor = {k: n * SEEDS_FLOP_PER_CANDIDATE / r for k, r in rates.items()}
    return {
        "patient": args.patient,
        "candidates": n,
        "seconds": seconds,
        "candidates_per_s": n / seconds,
        "generation_seconds": generation,
        "peak_rss_gb": peak,
        "funnel": [(r.filter, r.entered, r.kept, round(r.seconds, 2)) for r in result.funnel],
        "matmul_gflop_per_s": {k: r / 1e9 for k, r in rates.items()},
        "network_mflop_per_candidate": flop / 1e6,
        "floor_seconds_seeds_flop": floor,
        "time_over_floor": {k: seconds / f for k, f in floor.items()},
        "floor_seconds_issue_400_gflops": n * SEEDS_FLOP_PER_CANDIDATE / 400e9,
        "threads": torch.get_num_threads(),
    }


def part_cascade(study: Study, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from hydraopt.cascade import best_by_distilled, distil, in_chunks

    config = study.pipeline.config
    settings = config.screen.cascade or CascadeConfig()
    patient = study.cohort.get(args.patient)
    links = links_of(study, 2)
    scoring = PatientScoring(
        study.surrogate, study.reward, patient, _streamed_outputs(links, study.surrogate.outputs)
    )
    n = args.candidates
    generator = handle(study.pipeline, study.registry, ("screen", "generator")).build_new()
    # A process's first optimiser imports torch._dynamo (seconds, once per worker process):
    # timed apart, on a throwaway model.
    warm = time.perf_counter()
    distil(generator.generate(study.space, 256, np.random.default_rng(0)), np.zeros(256), 4, 0)
    warm_up = time.perf_counter() - warm
    start = time.perf_counter()
    sample = generator.generate(
        study.space, settings.distil_samples, rng_for(config.study.seed, "distil")
    )
    taught = np.concatenate(
        [scoring.score(p)["reward"] for p in in_chunks(sample, config.screen.chunk_size)]
    )
    distilled_at = time.perf_counter()
    model = distil(sample, taught, 4, seed=0)
    trained_at = time.perf_counter()
    keep = int(np.ceil(settings.keep_percent / 100 * n))
    pool, positions, _ = best_by_distilled(candidates(study, n), model, keep)
    pooled_at = time.perf_counter()
    top = TopByReward()

    def score(designs):
        columns = scoring.score(designs)
        top.add(columns["reward"])
        return columns

    result = screen_patient(
        patient, in_chunks(pool, config.screen.chunk_size), keep, score, links, lambda c: c, None
    )
    seconds = time.perf_counter() - start
    kept_top = positions[top.position]
    full_top = np.load(out / "top_full.npy") if (out / "top_full.npy").exists() else None
    retained = None if full_top is None else len(np.intersect1d(kept_top, full_top)) / TOP
    return {
        "candidates": n,
        "seconds": seconds,
        "process_warm_up_seconds": warm_up,
        "teaching_seconds": distilled_at - start,
        "distil_seconds": trained_at - distilled_at,
        "distilled_scoring_seconds": pooled_at - trained_at,
        "full_surrogate_and_filters_seconds": seconds - (pooled_at - start),
        "keep_percent": settings.keep_percent,
        "retained_of_full_top_1000": retained,
        "peak_rss_gb": peak_rss_gb(),
        "funnel": [(r.filter, r.entered, r.kept) for r in result.funnel],
    }


def part_naive(study: Study, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Each candidate's PSMILES through polyBERT's architecture, then the seeds' network."""
    from hydraopt_plugins.encoders.polybert import PolyBertEncoder, PolyBertSettings
    from hydraopt_plugins.encoders.polybert_untrained import (
        POLYBERT_ARCHITECTURE,
        write_untrained_polybert,
    )
    from hydraopt_plugins.surrogates import HydraBertSettings
    from hydraopt_plugins.surrogates.hydrabert.network import HydraBertNetwork

    folder = Path(tempfile.mkdtemp(prefix="polybert-naive-"))
    psmiles = [p.psmiles for p in study.space.polymers]
    write_untrained_polybert(folder, sorted(set(psmiles)) * 20, POLYBERT_ARCHITECTURE)
    # The LoRA model that the surrogate trains (adapters in the forward pass), as it would run
    encoder = PolyBertEncoder(PolyBertSettings(model=str(folder))).trainable_module().eval()
    network = HydraBertNetwork(HydraBertSettings(), 19, 600, {}).eval()
    designs = next(iter(candidates(study, args.naive_sample)))
    features = torch.randn(len(designs), 19)
    category = torch.zeros(len(designs), dtype=torch.long)
    start = time.perf_counter()
    with torch.inference_mode():
        for begin in range(0, len(designs), 64):
            rows = slice(begin, begin + 64)
            batch = [psmiles[i] for i in designs.polymer_index[rows]]
            embedding = encoder(batch)
            index = torch.arange(len(batch))
            network(features[rows], embedding, index, category[rows])
    per_candidate = (time.perf_counter() - start) / len(designs)
    throughput = (
        json.loads((out / "throughput.json").read_text())
        if (out / "throughput.json").exists()
        else None
    )
    engine = None if throughput is None else throughput["seconds"] / throughput["candidates"]
    return {
        "sample": len(designs),
        "naive_seconds_per_candidate": per_candidate,
        "engine_seconds_per_candidate": engine,
        "speed_up": None if engine is None else per_candidate / engine,
        "naive_seconds_for_10m": per_candidate * 1e7,
    }


def part_quality(study: Study, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The chain's chosen design against the reduced grid's best, both simulated by the
    reference mechanics at screening fidelity (and the chosen one at validation)."""
    from hydraopt_plugins.generators import GridGenerator, GridSettings

    config = study.pipeline.config
    held_out = sorted(p for p, s in study.split_of.items() if s in args.splits.split(","))
    if args.quality_patients:
        held_out = held_out[: args.quality_patients]
    mechanics = handle(study.pipeline, study.registry, ("simulators", "reference-mechanics"))
    from hydraopt.screen_unit import at_fidelity

    screening = at_fidelity(mechanics, "screening").build_new()
    grid = GridGenerator(
        GridSettings(stiffness_kpa=5, t50_days=4, conductivity_s_per_m=4, thickness_mm=4)
    )
    reduced = grid.generate(study.space, grid_size(study.space, grid), np.random.default_rng(0))
    screen = config.screen.model_copy(update={"candidates_per_patient": args.quality_candidates})
    rows = []
    for pid in held_out:
        patient = study.cohort.get(pid)
        mesh = read_mesh_h5(study.store.shards("meshes").path(pid), pid)
        began = time.perf_counter()
        job = ScreenJob(
            patient=patient,
            space=study.space,
            mesh_file=study.store.shards("meshes").path(pid),
            surrogate=handle(study.pipeline, study.registry, ("surrogate",)),
            encoder=handle(study.pipeline, study.registry, ("encoder",)),
            surrogate_folder=study.store.folder("surrogate").path,
            generator=handle(study.pipeline, study.registry, ("screen", "generator")),
            filters=tuple(
                (handle(study.pipeline, study.registry, ("screen", "filters", i)), f.settings)
                for i, f in enumerate(screen.filters)
            ),
            simulators={
                n: handle(study.pipeline, study.registry, ("simulators", n))
                for n in config.simulators
            },
            proposals=None,
            screen=screen,
            reward=config.reward,
            seed=derive_seed(config.study.seed, "screen", pid),
            workdir=Path(tempfile.mkdtemp(prefix=f"screen-{pid}-")),
        )
        tables, meta, _ = screen_one_patient(job)
        screened_s = time.perf_counter() - began
        finalists = tables["finalists"]
        if meta["emptied_by"] is not None:
            rows.append({"patient": pid, "emptied": meta["emptied_by"]["message"]})
            continue
        chosen = int(np.flatnonzero(finalists["chosen"])[0])
        chosen_design = _design_of(study.space, finalists, chosen)
        chosen_screening = float(
            screening.simulate(patient, mesh, chosen_design, None)["delta_ef_pct"][0]
        )
        exhaustive = screening.simulate(patient, mesh, reduced, None)
        values = np.where(exhaustive.failed, -np.inf, exhaustive["delta_ef_pct"])
        best = float(values.max())
        best_design = reduced.describe(int(np.argmax(values)))
        rows.append(
            {
                "patient": pid,
                "split": study.split_of[pid],
                "chosen_validation_delta_ef": float(finalists["simulated_delta_ef_pct"][chosen]),
                "chosen_screening_delta_ef": chosen_screening,
                "exhaustive_best_delta_ef": best,
                "exhaustive_designs": len(reduced),
                "gap": best - chosen_screening,
                "screen_seconds": screened_s,
                "chosen": chosen_design.describe(0),
                "exhaustive_best": best_design,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    gaps = np.array([r["gap"] for r in rows if "gap" in r])
    by_split = {
        split: float(np.mean([r["gap"] <= 1.0 for r in rows if r.get("split") == split]))
        for split in sorted({r["split"] for r in rows if "split" in r})
    }
    return {
        "within_1_point_by_split": by_split,
        "patients": len(held_out),
        "candidates_per_patient": args.quality_candidates,
        "within_1_point": float(np.mean(gaps <= 1.0)) if len(gaps) else None,
        "gap_percentiles_0_50_90_100": np.percentile(gaps, [0, 50, 90, 100]).tolist()
        if len(gaps)
        else None,
        "rows": rows,
    }


def grid_size(space: DesignSpace, grid: Any) -> int:
    from hydraopt_plugins.generators import makeable_polymers

    polymers, _ = makeable_polymers(space, True)
    s = grid.settings
    return (
        len(polymers)
        * len(space.coverages)
        * s.stiffness_kpa
        * s.t50_days
        * s.conductivity_s_per_m
        * s.thickness_mm
    )


def _design_of(space: DesignSpace, finalists: dict, row: int):
    from hydraopt.domain import DesignBatch

    names = (
        "polymer_index",
        "coverage_index",
        "stiffness_kpa",
        "t50_days",
        "conductivity_s_per_m",
        "thickness_mm",
    )
    return DesignBatch.from_columns(
        space, {k: np.asarray(finalists[k])[row : row + 1] for k in names}
    )


def _without_part(argv: list[str]) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--part":
            skip = True
        elif not arg.startswith("--part="):
            kept.append(arg)
    return kept


PARTS = {
    "throughput": part_throughput,
    "cascade": part_cascade,
    "naive": part_naive,
    "quality": part_quality,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", type=Path)
    parser.add_argument("--part", choices=["all", *PARTS], default="all")
    parser.add_argument(
        "--patient",
        default=None,
        help="patient of the throughput and cascade parts (default: the first test patient)",
    )
    parser.add_argument("--candidates", type=int, default=10_000_000)
    parser.add_argument("--naive-sample", type=int, default=256)
    parser.add_argument("--quality-candidates", type=int, default=1_000_000)
    parser.add_argument(
        "--quality-patients", type=int, default=0, help="at most this many (0: all)"
    )
    parser.add_argument(
        "--splits", default="test,validation", help="held-out splits of the quality part"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/screen"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.part == "all":
        for part in PARTS:
            subprocess.run(
                [sys.executable, __file__, *_without_part(sys.argv[1:]), "--part", part], check=True
            )
        return
    study = load_study(args.pipeline)
    if args.patient is None:
        args.patient = sorted(p for p, s in study.split_of.items() if s == "test")[0]
    result = PARTS[args.part](study, args, args.out)
    (args.out / f"{args.part}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"== {args.part}")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=2, default=str))


if __name__ == "__main__":
    main()
