"""A training-data study end to end: wall time per stage, peak memory, and the
electrophysiology's speed-up over solving every design with the monodomain.

Runs ``hydraopt run PIPELINE`` (by default ``examples/dataset_seeds_scale.toml``: 60 patients x
7,458 designs, both reference simulators) into a fresh run directory, samples the resident
memory of the whole process tree (driver and workers) from /proc every half second, and reads
each stage's time from the run's journal. Then, in the same run, solves a sample of one
patient's designs with the monodomain (the validation fidelity) to price the
electrophysiology as if every design had been solved.

Usage: ``python benchmarks/bench_dataset_scale.py [PIPELINE] [--sample 64] [--keep]``
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def tree_rss_kb(root_pid: int) -> int:
    """Resident memory of a process and all its descendants, in kB."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            statm = (entry / "statm").read_text().split()
        except OSError:
            continue
        pid = int(entry.name)
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(pid)
        rss[pid] = int(statm[1]) * PAGE_KB
    total, stack = 0, [root_pid]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


def run_study(pipeline: Path, workdir: Path) -> tuple[float, int, Path]:
    """Run the pipeline from a copy whose output folder is ``workdir``; return wall seconds,
    peak tree memory (kB) and the run directory."""
    text = pipeline.read_text(encoding="utf-8")
    copy = workdir / pipeline.name
    lines = [
        f'output_dir = "{workdir / "runs"}"' if line.startswith("output_dir") else line
        for line in text.splitlines()
    ]
    copy.write_text("\n".join(lines) + "\n", encoding="utf-8")
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "hydraopt", "run", str(copy), "-q"],
        stdout=subprocess.PIPE,
        text=True,
    )
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss_kb(process.pid))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = process.communicate()
    stop.set()
    sampler.join()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"the study failed (exit {process.returncode})")
    return wall, peak, Path(out.strip().splitlines()[-1])


def stage_seconds(run_dir: Path) -> dict[str, float]:
    events = [json.loads(line) for line in (run_dir / "journal.jsonl").open()]
    return {e["stage"]: e["seconds"] for e in events if e["event"] == "stage_finished"}


def monodomain_seconds_per_design(run_dir: Path, sample: int) -> tuple[float, int]:
    """Seconds per design of the validation fidelity on the run's first patient (a random
    sample of its feasible designs, batched by stiffness as the validation fidelity batches
    all of them), and the designs it would have solved."""
    from hydraopt.config import DesignSpaceConfig, build_design_space
    from hydraopt.domain import Cohort, DesignBatch
    from hydraopt.mesh_io import read_mesh_h5
    from hydraopt.polymer_library import library_from_columns
    from hydraopt.store import RunStore
    from hydraopt_simulators.ep.activation import design_quantities
    from hydraopt_simulators.ep.reference import ReferenceEP, ReferenceEPSettings

    store = RunStore(run_dir)
    cohort = Cohort.from_columns(store.tables("cohort").table("patients"))
    polymers = store.tables("polymers")
    library = library_from_columns(polymers.table("polymers"), source=polymers.meta["source"])
    space = build_design_space(DesignSpaceConfig(), library)
    patient = cohort.patients[0]
    designs = DesignBatch.from_columns(
        space, store.shards("designs").table(patient.patient_id, "designs")
    )
    mesh = read_mesh_h5(store.shards("meshes").path(patient.patient_id), patient.patient_id)
    settings = ReferenceEPSettings(fidelity="validation", write_activation_maps=False)
    simulator = ReferenceEP(settings)
    simulator.tuned(mesh)
    infeasible, _, _, _ = design_quantities(patient, designs, settings)
    feasible = np.flatnonzero(~infeasible)
    picked = np.random.default_rng(0).choice(feasible, size=min(sample, len(feasible)))
    start = time.perf_counter()
    simulator.simulate(patient, mesh, designs.take(picked), None)
    return (time.perf_counter() - start) / sample, len(designs) * len(cohort)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "pipeline", nargs="?", type=Path, default=ROOT / "examples" / "dataset_seeds_scale.toml"
    )
    parser.add_argument("--sample", type=int, default=64, help="monodomain designs timed")
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="hydraopt-bench-"))
    try:
        wall, peak_kb, run_dir = run_study(args.pipeline.resolve(), workdir)
        stages = stage_seconds(run_dir)
        print(f"pipeline: {args.pipeline}")
        print(f"wall: {wall:.0f} s ({wall / 60:.1f} min); peak memory {peak_kb / 1e6:.2f} GB")
        for stage, seconds in stages.items():
            print(f"  {stage:<10}{seconds:>9.1f} s")
        meta = RunMeta(run_dir)
        print(
            f"dataset: {meta.rows:,} rows of {meta.designs:,} designs simulated, "
            f"{meta.patients} patients, is_optimal {100 * meta.positive_rate:.2f}%"
        )
        per_design, designs = monodomain_seconds_per_design(run_dir, args.sample)
        simulate = stages.get("simulate", float("nan"))
        print(
            f"electrophysiology at validation fidelity: {per_design:.3f} s/design x "
            f"{designs:,} designs = {per_design * designs / 3600:.1f} core-hours; the whole "
            f"simulate stage took {simulate / 60:.1f} min on {os.cpu_count()} cores"
        )
        print(
            f"speed-up of the simulate stage over the monodomain alone, per core: "
            f"{per_design * designs / (simulate * os.cpu_count()):.0f}x"
        )
    finally:
        if args.keep:
            print(f"run directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


class RunMeta:
    """The dataset's counts, from its artifact's metadata."""

    def __init__(self, run_dir: Path) -> None:
        from hydraopt.store import RunStore

        dataset = RunStore(run_dir).tables("dataset")
        meta = dataset.meta
        self.rows = meta["rows"]
        self.designs = meta["designs_simulated"]
        self.patients = len(meta["patients"])
        self.positive_rate = float(np.mean(dataset.table("rows")["is_optimal"]))


if __name__ == "__main__":
    main()
