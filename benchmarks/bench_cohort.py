"""Cohort studies at scale: the simulation stage's parallel efficiency, the Dask engine against
the local one, and a finished study rerun in a new run directory through the shared cache.

One study (synthetic patients, a Sobol' plan, both reference simulators as in the quickstart)
is run through the Python API in fresh run directories:

* ``scaling``: the simulate stage on 1 and on 2 local workers, the evaluation cache off;
  efficiency = t(1) / (2 t(2)).
* ``dask``: the same stage on a 2-worker Dask LocalCluster (its start-up included) against
  the local engine's 2 workers, measured in the same run.
* ``rerun``: the study once with a shared cache, then again under another name (a new run
  directory, the same cache): its simulations and meshes read from the cache, and its wall
  time.

    .venv/bin/python benchmarks/bench_cohort.py [--patients 6] [--designs 32] [--batch 8]
        [--part all|scaling|dask|rerun]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hydraopt.api import Study

STUDY = """\
[study]
name = "bench"
seed = 2026
output_dir = "runs"

[cohort]
n_patients = {patients}

[dataset]
designs_per_patient = {designs}
generator = {{ plugin = "sobol", scramble = true, within_polymer_ranges = true }}
is_optimal = {{ delta_ef_pct = 0.5, bz_stress_reduction_pct = 1.0 }}

[mesh]
element_size_mm = 4.0

[simulators.reference-mechanics]
fidelity = "screening"
followup_weeks = [1.0, 4.0, 12.0, 26.0]

[simulators.reference-ep]
earliest_activation_aha_segments = [2, 9, 15]
"""


def simulate_seconds(study: Study, **overrides: object) -> float:
    summary = study.run(to_stage="simulate")
    if not summary.ok or summary.recorded:
        raise SystemExit(f"the study failed: {summary.lines()}")
    record = json.loads((study.run_dir / "stages" / "simulate.json").read_text())
    return float(record["duration_s"])


def load(path: Path, name: str, **settings: object) -> Study:
    return Study.load(path, {"study.name": name, **settings})


def scaling(path: Path, batch: int) -> dict[int, float]:
    seconds = {}
    for workers in (1, 2):
        study = load(
            path,
            f"scaling-{workers}",
            **{
                "execution.workers": workers,
                "execution.evaluation_cache": False,
                "execution.evaluation_batch": batch,
            },
        )
        seconds[workers] = simulate_seconds(study)
    efficiency = seconds[1] / (2 * seconds[2])
    print(
        f"simulate stage, local engine: 1 worker {seconds[1]:.1f} s, 2 workers {seconds[2]:.1f} s"
    )
    print(f"parallel efficiency 1 -> 2 workers: {efficiency:.1%}")
    return seconds


def dask_against_local(path: Path, batch: int) -> None:
    seconds = {}
    for engine in ("local", "dask"):
        study = load(
            path,
            f"engine-{engine}",
            **{
                "execution.engine": engine,
                "execution.workers": 2,
                "execution.evaluation_cache": False,
                "execution.evaluation_batch": batch,
            },
        )
        start = time.perf_counter()
        stage = simulate_seconds(study)
        seconds[engine] = stage
        print(f"{engine}: simulate stage {stage:.1f} s (run {time.perf_counter() - start:.1f} s)")
    print(f"dask / local (2 workers each): {seconds['dask'] / seconds['local']:.3f}")


def rerun(path: Path, batch: int) -> None:
    cache = path.parent / "shared-cache"
    settings = {"execution.cache_dir": str(cache), "execution.evaluation_batch": batch}
    first = load(path, "first", **settings)
    start = time.perf_counter()
    first.run(to_stage="simulate")
    print(f"first study: {time.perf_counter() - start:.1f} s")
    second = load(path, "second", **settings)
    start = time.perf_counter()
    summary = second.run(to_stage="simulate")
    wall = time.perf_counter() - start
    events = [json.loads(line) for line in second.run_dir.joinpath("journal.jsonl").open()]
    cached = {e["stage"]: e for e in events if e["event"] == "evaluation_cache"}
    counts = cached["simulate"]
    meshes = cached.get("meshes", {"hits": 0, "misses": 0})
    stages = {e["stage"]: e["seconds"] for e in events if e["event"] == "stage_finished"}
    total = counts["hits"] + counts["misses"]
    print(
        f"second study (new run directory, shared cache): {wall:.1f} s; evaluations read "
        f"{counts['hits']} of {total} ({counts['hits'] / total:.0%}), simulated "
        f"{counts['misses']}; meshes read {meshes['hits']}, built {meshes['misses']}; "
        f"stages {stages}; ok={summary.ok}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=6)
    parser.add_argument("--designs", type=int, default=32)
    parser.add_argument("--batch", type=int, default=8, help="execution.evaluation_batch")
    parser.add_argument("--part", choices=["all", "scaling", "dask", "rerun"], default="all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "pipeline.toml"
        path.write_text(STUDY.format(patients=args.patients, designs=args.designs))
        print(f"{args.patients} patients x {args.designs} designs, evaluation_batch {args.batch}")
        if args.part in ("all", "scaling"):
            scaling(path, args.batch)
        if args.part in ("all", "dask"):
            dask_against_local(path, args.batch)
        if args.part in ("all", "rerun"):
            rerun(path, args.batch)


if __name__ == "__main__":
    main()
