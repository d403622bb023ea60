"""Hyperparameter search for the surrogate (Optuna), judged on patients held out of each fit.

Each trial draws the declared settings (TPE sampler, seeded), fits the surrogate and scores
one metric of one output on held-out patients: with ``folds = 1`` the dataset's validation
split, with ``folds = k`` a patient-grouped k-fold over the training and validation patients
(scikit-learn's GroupKFold, so no patient is both fitted and judged), the score being the
mean over folds. Test patients are never seen. Trials are stored in an SQLite file in the
stage's work folder: a killed search resumes with the trials it had finished.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.domain import TrainingData
from hydraopt.surrogate_evaluation import prediction_metrics

MAXIMISED = frozenset(
    {"r2", "auroc", "f1", "accuracy", "precision", "recall", "top_percent_recall"}
)

# (settings, key of the fit, training rows, held-out rows) -> fitted surrogate
FitFunction = Callable[[dict[str, Any], str, TrainingData, TrainingData], Any]


def folds_of(
    data: TrainingData, split: np.ndarray, folds: int
) -> list[tuple[TrainingData, TrainingData]]:
    """(fit, judge) pairs: the fixed split, or patient-grouped folds over train+validation."""
    if folds == 1:
        return [(data.take(split == "train"), data.take(split == "validation"))]
    from sklearn.model_selection import GroupKFold

    pool = data.take(np.isin(split, ["train", "validation"]))
    patients = np.asarray(pool.inputs.patient_id).astype(str)
    if len(set(patients)) < folds:
        raise ValueError(
            f"train.search.folds: {folds} folds need at least {folds} patients in the training "
            f"and validation splits, there are {len(set(patients))}"
        )
    splitter = GroupKFold(n_splits=folds)
    return [
        (pool.take(fit), pool.take(judge))
        for fit, judge in splitter.split(patients, groups=patients)
    ]


def search(
    space: Mapping[str, Mapping[str, Any]],
    pairs: list[tuple[TrainingData, TrainingData]],
    fit: FitFunction,
    objective: tuple[str, str],
    trials: int,
    seed: int,
    storage: Path,
    report: Callable[[str], None],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The best settings found and every finished trial (number, settings, score)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    output, metric = objective
    direction = "maximize" if metric in MAXIMISED else "minimize"
    study = optuna.create_study(
        study_name="surrogate",
        storage=f"sqlite:///{storage}",
        load_if_exists=True,
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=seed % 2**32),
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]

    def score(trial: Any) -> float:
        values = {name: _suggest(trial, name, spec) for name, spec in space.items()}
        scores = []
        for k, (train, held_out) in enumerate(pairs):
            model = fit(values, f"search-{trial.number}-fold-{k}", train, held_out)
            metrics = prediction_metrics(held_out, model.predict(held_out.inputs), 0.9)
            scores.append(metrics[output][metric])
        value = float(np.mean(scores))
        report(f"trial {trial.number}: {output} {metric} {value:.4g} with {values}")
        worst = -math.inf if direction == "maximize" else math.inf
        return value if math.isfinite(value) else worst

    remaining = trials - len(done)
    if remaining > 0:
        study.optimize(score, n_trials=remaining)
    finished = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    rows = [{"trial": t.number, **t.params, f"{output}_{metric}": t.value} for t in finished]
    return dict(study.best_params), rows


def _suggest(trial: Any, name: str, spec: Mapping[str, Any]) -> Any:
    if "choices" in spec:
        return trial.suggest_categorical(name, list(spec["choices"]))
    low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    if isinstance(low, int) and isinstance(high, int):
        return trial.suggest_int(name, low, high, log=log)
    return trial.suggest_float(name, float(low), float(high), log=log)


def write_trials(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = sorted({k for row in rows for k in row}, key=lambda k: (k != "trial", k))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(rows)
