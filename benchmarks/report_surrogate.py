"""The Stage 1 targets, checked on a finished run's surrogate evaluation.

    python benchmarks/report_surrogate.py runs/surrogate-seeds-scale

Reads ``artifacts/surrogate_evaluation/metrics.csv`` (written by the train stage, see
examples/surrogate_seeds_scale.toml) and prints each target of the Stage 1 issue with the
measured figure: on the test patients, delta-EF R² >= 0.97 and MAE <= 0.3 %-points,
is_optimal AUROC >= 0.98 and F1 >= 0.90, at least gradient boosting's delta-EF R² and
AUROC, 90% intervals holding 85-95% of the targets; leave-polymer-out, the encoder beating
no encoder on delta-EF MAE. Then, per model, the headline metrics and how each chooses the
test patients' best designs (top_design_shortfall, top_percent_recall: docs/surrogate.md).
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def main() -> None:
    run_dir = Path(sys.argv[1])
    path = run_dir / "artifacts" / "surrogate_evaluation" / "metrics.csv"
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    value = {
        (r["model"], r["evaluation"], r["output"], r["metric"]): float(r["value"]) for r in rows
    }
    models = {r["model"] for r in rows}
    main_model = next(m for m in models if m.startswith("hydrabert/") and not m.endswith("/none"))
    test, lpo = "test patients", "leave-polymer-out"

    def of(model: str, evaluation: str, output: str, metric: str) -> float:
        return value[(model, evaluation, output, metric)]

    r2 = of(main_model, test, "delta_ef_pct", "r2")
    auroc = of(main_model, test, "is_optimal", "auroc")
    checks = [
        ("delta-EF R² >= 0.97", r2, r2 >= 0.97),
        (
            "delta-EF MAE <= 0.3 %-points",
            of(main_model, test, "delta_ef_pct", "mae"),
            of(main_model, test, "delta_ef_pct", "mae") <= 0.3,
        ),
        ("is_optimal AUROC >= 0.98", auroc, auroc >= 0.98),
        (
            "is_optimal F1 >= 0.90",
            of(main_model, test, "is_optimal", "f1"),
            of(main_model, test, "is_optimal", "f1") >= 0.90,
        ),
    ]
    boosted = "hist-gradient-boosting"
    if boosted in models:
        b_r2, b_auroc = (
            of(boosted, test, "delta_ef_pct", "r2"),
            of(boosted, test, "is_optimal", "auroc"),
        )
        checks += [
            (f"R² >= gradient boosting's ({b_r2:.4f})", r2, r2 >= b_r2),
            (f"AUROC >= gradient boosting's ({b_auroc:.4f})", auroc, auroc >= b_auroc),
        ]
    for output in ("delta_ef_pct", "bz_stress_reduction_pct"):
        key = (main_model, test, output, "interval_coverage")
        if key in value:
            checks.append(
                (
                    f"{output} 90% interval coverage in 85-95%",
                    value[key],
                    0.85 <= value[key] <= 0.95,
                )
            )
    none = "hydrabert/none"
    if (main_model, lpo, "delta_ef_pct", "mae") in value:
        encoded, bare = (
            of(main_model, lpo, "delta_ef_pct", "mae"),
            of(none, lpo, "delta_ef_pct", "mae"),
        )
        checks.append(
            (f"leave-polymer-out MAE below no encoder's ({bare:.4f})", encoded, encoded < bare)
        )
    print(f"{main_model} on {run_dir}")
    for name, figure, ok in checks:
        print(f"  {'met ' if ok else 'MISS'}  {name}: {figure:.4f}")
    print()
    for model in sorted(models):
        for evaluation in (test, lpo):
            parts = [
                f"{o} {m} {v:.4g}"
                for (mm, e, o, m), v in value.items()
                if mm == model
                and e == evaluation
                and m
                in {
                    "mae",
                    "r2",
                    "auroc",
                    "f1",
                    "interval_coverage",
                    "top_design_shortfall",
                    "top_percent_recall",
                }
            ]
            if parts:
                print(f"  {model} / {evaluation}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
