"""The seeds' 60-patient cohort study from Python, with a cohort summary at the end.

The cohort is the seeds' shape: 10 reference patients and 50 synthetic ones. hydraopt ships
no patient data, so unless ``--reference-csv`` gives ten (or more) real patients (a cohort
CSV, their ``origin`` set to ``real``), ten more patients drawn from the published
post-infarction statistics stand in for them, named REF01...REF10 and marked synthetic.

Every stage of the pipeline file runs (by default the quickstart's: simulation, the Stage 1
surrogate, the Stage 2 policy, the Stage 3 design engine and the report), for all 60
patients. On 2 cores with the local engine that takes tens of minutes; on a cluster, pass
``--engine dask --scheduler tcp://HOST:8786`` (or set [execution.dask] in the pipeline
file). Killed, it resumes where it stopped; rerun under another ``--name``, it reads the
simulations the first study paid for from the shared evaluation cache.

    .venv/bin/python examples/cohort_study.py [--pipeline examples/quickstart.toml]
        [--reference-csv real.csv] [--engine local|dask] [--workers N] [--scheduler ADDR]
        [--to STAGE] [--name cohort-study]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from hydraopt.api import Study
from hydraopt.cohorts import read_cohort_csv
from hydraopt.synthetic_cohort import synthetic_cohort

HERE = Path(__file__).parent
N_REFERENCE, N_SYNTHETIC = 10, 50


def seeds_cohort(reference_csv: Path | None, seed: int) -> pd.DataFrame:
    """10 reference patients (the CSV's first ten, or stand-ins) and 50 synthetic ones."""
    if reference_csv is not None:
        reference = read_cohort_csv(reference_csv).to_columns()
        reference = pd.DataFrame(reference).head(N_REFERENCE)
        if len(reference) < N_REFERENCE:
            raise SystemExit(f"{reference_csv}: {len(reference)} patients; 10 are needed")
    else:
        stand_ins = synthetic_cohort(N_REFERENCE, seed=seed + 1, id_prefix="REF")
        reference = pd.DataFrame(stand_ins.to_columns())
        reference["patient_id"] = [f"REF{i + 1:02d}" for i in range(N_REFERENCE)]
    synthetic = pd.DataFrame(synthetic_cohort(N_SYNTHETIC, seed=seed).to_columns())
    return pd.concat([reference, synthetic], ignore_index=True)


def counts(column: pd.Series) -> str:
    return ", ".join(f"{value} {int(n)}" for value, n in column.value_counts().items())


def summary(study: Study) -> None:
    cohort = study.cohort()
    print(f"\ncohort: {len(cohort)} patients ({counts(cohort['origin'])})")
    failures = study.failures()
    if len(failures):
        print(f"failed units: {len(failures)}")
        print(failures.to_string(index=False, max_colwidth=80))
    outcomes = study.outcomes()
    failed = [c for c in outcomes.columns if c.endswith(".failed")]
    print(
        f"simulated designs: {len(outcomes)}, "
        + ", ".join(f"{c.removesuffix('.failed')} failed {int(outcomes[c].sum())}" for c in failed)
    )
    results = study.results()
    if "design_index" in results.columns:  # no design engine in this pipeline
        described = results.groupby("patient_id")[["delta_ef_pct"]].max()
        print("best simulated delta-EF per patient [%-points]:")
        print(described.describe().round(2).to_string())
        return
    print(f"\nchosen designs: {len(results)} of {len(cohort)} patients")
    print("polymers chosen:", counts(results["polymer"]))
    print("coverage chosen:", counts(results["coverage"]))
    design = ["stiffness_kpa", "t50_days", "conductivity_s_per_m", "thickness_mm"]
    effect = [
        c for c in results.columns if c.startswith(("predicted_delta_ef", "simulated_delta_ef"))
    ]
    numeric = [c for c in design if c in results.columns] + effect
    print(results[numeric].describe().round(3).to_string())
    if effect:
        print("\nmean by split:\n" + results.groupby("split")[effect].mean().round(3).to_string())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipeline", type=Path, default=HERE / "quickstart.toml")
    parser.add_argument("--reference-csv", type=Path, default=None)
    parser.add_argument("--engine", choices=["local", "dask"], default=None)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--scheduler", default=None, help="a Dask scheduler's address")
    parser.add_argument("--to", dest="to_stage", default=None)
    parser.add_argument("--name", default="cohort-study")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    overrides: dict[str, object] = {"study.name": args.name, "study.seed": args.seed}
    if args.engine:
        overrides["execution.engine"] = args.engine
    if args.workers is not None:
        overrides["execution.workers"] = args.workers
    if args.scheduler:
        overrides["execution.engine"] = "dask"
        overrides["execution.dask.scheduler_address"] = args.scheduler
    cohort = seeds_cohort(args.reference_csv, args.seed)
    study = Study.load(args.pipeline, overrides, cohort=cohort)
    result = study.run(quiet=False, to_stage=args.to_stage)
    for line in result.lines():
        print(line)
    if "cohort" in (*result.ran, *result.skipped) and result.ok:
        summary(study)


if __name__ == "__main__":
    main()
