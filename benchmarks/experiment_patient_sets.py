"""How much a Stage 1 target can move with the choice of a handful of held-out patients.

    python benchmarks/experiment_patient_sets.py PIPELINE [--set-size 5]

Uses the run's trained surrogate (the train stage's artifact) and its validation patients
only: the test patients are not read. Gradient boosting (the train stage's baseline) is fitted
on the same training rows. For every set of ``--set-size`` validation patients (as many as the
test split has) it computes ΔEF R² of both models, and the coverage of the surrogate's 90%
intervals when their scale is fitted on the other validation patients (the scale the train
stage fits on the validation split, here refitted without the patient judged: leave one
patient out). It prints per patient the mean error, the RMSE of both models and the
coverage, then over the sets the share that meets each target and the spread. It also tries
a calibration with a patient-level term: a variance tau^2 (the mean square of the other
patients' mean errors) added to the predicted one, and the scale refitted around it.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from statistics import NormalDist

import numpy as np
from sklearn.metrics import r2_score

from hydraopt.config import load_pipeline
from hydraopt.registry import PluginRegistry
from hydraopt.seeding import derive_seed
from hydraopt.stages.train import load_training_table
from hydraopt.store import RunStore
from hydraopt.surrogate_evaluation import gradient_boosting_predictions
from hydraopt.trained_surrogate import load_trained_surrogate

LEVEL = 0.9
OUTPUTS = ("delta_ef_pct", "bz_stress_reduction_pct")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", type=Path)
    parser.add_argument("--set-size", type=int, default=5)
    args = parser.parse_args()
    registry = PluginRegistry.discover()
    pipeline = load_pipeline(args.pipeline, registry)
    store = RunStore(pipeline.run_dir)
    data, split = load_training_table(store.tables("dataset"))
    validation = data.take(split == "validation")
    surrogate = load_trained_surrogate(
        registry.handle(
            "surrogate", pipeline.config.surrogate.plugin, pipeline.plugin_settings[("surrogate",)]
        ),
        registry.handle(
            "encoder", pipeline.config.encoder.plugin, pipeline.plugin_settings[("encoder",)]
        ),
        store.folder("surrogate").path,
    )
    predicted = surrogate.predict(validation.inputs)
    seed = derive_seed(pipeline.config.study.seed, "train", "hist-gradient-boosting") % 2**32
    boosted = gradient_boosting_predictions(
        data.take(split == "train"), validation, ["delta_ef_pct"], seed
    )
    patient = np.asarray(validation.inputs.patient_id).astype(str)
    patients = np.unique(patient)
    z90 = NormalDist().inv_cdf(0.5 + LEVEL / 2)
    covered: dict[str, dict[str, np.ndarray]] = {}
    with_term: dict[str, dict[str, np.ndarray]] = {}
    for output in OUTPUTS:
        y = np.asarray(validation.targets[output], dtype=float)
        mean, std = np.asarray(predicted[output]), np.asarray(predicted.std[output])
        ok = np.isfinite(y) & (std > 0)
        covered[output], with_term[output] = {}, {}
        error = np.abs(y - mean)
        bias = {p: np.mean((y - mean)[ok & (patient == p)]) for p in patients}
        for held in patients:
            others, mine = ok & (patient != held), ok & (patient == held)
            # The train stage's calibration, refitted on the other patients: the factor on
            # the predicted std that makes the 90% interval hold 90% of their targets.
            factor = np.quantile(error[others] / std[others], LEVEL) / z90
            covered[output][held] = error[mine] <= z90 * factor * std[mine]
            tau2 = np.mean([bias[p] ** 2 for p in patients if p != held])
            factor = _factor_with_term(error[others], std[others], tau2, z90)
            with_term[output][held] = error[mine] <= z90 * np.sqrt((factor * std[mine]) ** 2 + tau2)
    y = np.asarray(validation.targets["delta_ef_pct"], dtype=float)
    print(
        f"{len(patients)} validation patients: ΔEF R² {r2_score(y, predicted['delta_ef_pct']):.4f}"
        f", gradient boosting {r2_score(y, boosted['delta_ef_pct']):.4f}; per patient the ΔEF "
        "mean error (predicted - simulated) and RMSE:"
    )
    for held in patients:
        mine = patient == held
        error = np.mean(predicted["delta_ef_pct"][mine] - y[mine])
        rmse = _rmse(predicted["delta_ef_pct"][mine], y[mine])
        boosted_rmse = _rmse(boosted["delta_ef_pct"][mine], y[mine])
        cover = ", ".join(
            f"{o} {covered[o][held].mean():.0%} ({with_term[o][held].mean():.0%})" for o in OUTPUTS
        )
        print(
            f"  {held}: {error:+.3f} %-points, RMSE {rmse:.3f} (gradient boosting "
            f"{boosted_rmse:.3f}); leave-one-out 90% coverage {cover}"
        )
    print("  (in brackets: with the patient-level term)")
    for output in OUTPUTS:
        pooled = np.concatenate(list(covered[output].values())).mean()
        term = np.concatenate(list(with_term[output].values())).mean()
        print(
            f"{output}: leave-one-patient-out coverage over all of them {pooled:.3f} "
            f"({term:.3f} with the patient-level term)"
        )

    sets = list(itertools.combinations(patients, args.set_size))
    print(f"over the {len(sets)} sets of {args.set_size} validation patients:")
    network, trees = [], []
    coverage = {o: [] for o in OUTPUTS}
    coverage_term = {o: [] for o in OUTPUTS}
    for chosen in sets:
        rows = np.isin(patient, chosen)
        network.append(r2_score(y[rows], predicted["delta_ef_pct"][rows]))
        trees.append(r2_score(y[rows], boosted["delta_ef_pct"][rows]))
        for output in OUTPUTS:
            coverage[output].append(np.concatenate([covered[output][p] for p in chosen]).mean())
            coverage_term[output].append(
                np.concatenate([with_term[output][p] for p in chosen]).mean()
            )
    network, trees = np.array(network), np.array(trees)
    print(
        f"  ΔEF R², surrogate: {_spread(network)}; >= 0.97 in {np.mean(network >= 0.97):.0%}; "
        f"at least gradient boosting's in {np.mean(network >= trees):.0%}"
    )
    print(f"  ΔEF R², gradient boosting: {_spread(trees)}")
    for output in OUTPUTS:
        values = np.array(coverage[output])
        inside = np.mean((values >= 0.85) & (values <= 0.95))
        print(f"  {output} 90% coverage: {_spread(values)}; in 85-95% in {inside:.0%}")
        values = np.array(coverage_term[output])
        inside = np.mean((values >= 0.85) & (values <= 0.95))
        print(f"    with the patient-level term: {_spread(values)}; in 85-95% in {inside:.0%}")


def _rmse(predicted: np.ndarray, target: np.ndarray) -> float:
    return float(np.sqrt(np.mean((predicted - target) ** 2)))


def _factor_with_term(error: np.ndarray, std: np.ndarray, tau2: float, z: float) -> float:
    """The factor s for which |error| <= z * sqrt((s * std)^2 + tau2) holds for LEVEL of the
    rows (0 when tau alone covers that many), by bisection: coverage grows with s."""
    low, high = 0.0, 100.0
    for _ in range(60):
        middle = (low + high) / 2
        inside = np.mean(error <= z * np.sqrt((middle * std) ** 2 + tau2))
        low, high = (low, middle) if inside >= LEVEL else (middle, high)
    return high


def _spread(values: np.ndarray) -> str:
    low, middle, high = np.quantile(values, [0.05, 0.5, 0.95])
    return f"median {middle:.3f} (5-95%: {low:.3f}-{high:.3f})"


if __name__ == "__main__":
    main()
