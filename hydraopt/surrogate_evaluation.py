"""Judging a surrogate on held-out rows: metrics, the gradient-boosting baseline, plots.

Regression outputs: MAE, RMSE, R², the mean error (predicted − simulated: a model that
misjudges a whole patient's level of response shows it here) and the coverage of the central
predictive interval (the share of targets inside mean ± z·std, z for the interval's
probability under a normal law). Classification outputs: accuracy, AUROC, F1, precision and
recall at probability 0.5. Every metric is given over all held-out rows and per patient: the
held-out unit is the patient, and a few patients carry most of the error.

What Stage 3 asks of a surrogate is the choice of a patient's best designs, which pooled
errors do not show: a model can fit the bulk of the designs well and flatten the few with
the largest effects. So each scalar regression output is also judged as a search that
maximises it would use it, per patient over that patient's held-out designs:
``top_design_shortfall`` is the best simulated value less the simulated value of the design
the model ranks first, and ``top_percent_recall`` the share of the model's best 1% of
designs that are among the patient's best 1% by simulation (a design tied with the last of
those counts); over all patients, their means. (For an output a search minimises, read them
for its negative.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from hydraopt.domain import OutputSpec, Predictions, TrainingData

CLASSIFICATION_UNIT = "1"
TOP_SHARE = 0.01  # the best designs' share that top_percent_recall compares
PARITY_POINTS = 20_000  # rows drawn for a parity plot; more only hide each other


def is_label(spec: OutputSpec, targets: np.ndarray) -> bool:
    """A 0/1 label (is_optimal) rather than a quantity."""
    values = np.asarray(targets)
    return spec.unit == CLASSIFICATION_UNIT and not spec.shape and np.isin(values, (0, 1)).all()


def regression_metrics(
    target: np.ndarray, mean: np.ndarray, std: np.ndarray | None, interval: float
) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y, m = np.ravel(target), np.ravel(mean)
    keep = np.isfinite(y) & np.isfinite(m)
    y, m = y[keep], m[keep]
    out = {
        "mae": float(mean_absolute_error(y, m)),
        "rmse": float(math.sqrt(mean_squared_error(y, m))),
        "r2": float(r2_score(y, m)) if np.var(y) > 0 else math.nan,
        "mean_error": float(np.mean(m - y)),
        "n": float(len(y)),
    }
    if std is not None:
        z = NormalDist().inv_cdf(0.5 + interval / 2)
        s = np.ravel(std)[keep]
        out["interval_coverage"] = float(np.mean(np.abs(y - m) <= z * s))
    return out


def design_choice_metrics(
    target: np.ndarray, mean: np.ndarray, patient_id: np.ndarray
) -> dict[str, float]:
    """The choice of each patient's best designs by ``mean``, judged by the simulated
    ``target`` (module docstring); the means over patients."""
    shortfall, recall = [], []
    for patient in np.unique(patient_id):
        mine = (patient_id == patient) & np.isfinite(target) & np.isfinite(mean)
        y, m = target[mine], mean[mine]
        if len(y) == 0:
            continue
        shortfall.append(float(y.max() - y[np.argmax(m)]))
        n_top = max(1, round(TOP_SHARE * len(y)))
        # Among the best: at least the n_top-th best simulated value, so that a design tied
        # with the last of them counts whichever of the two a sort would put first.
        threshold = np.partition(y, len(y) - n_top)[len(y) - n_top]
        chosen = np.argsort(-m, kind="stable")[:n_top]
        recall.append(float(np.mean(y[chosen] >= threshold)))
    if not shortfall:
        return {}
    return {
        "top_design_shortfall": float(np.mean(shortfall)),
        "top_percent_recall": float(np.mean(recall)),
    }


def classification_metrics(target: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    y = np.asarray(target).astype(int)
    p = np.asarray(probability, dtype=float)
    predicted = (p >= 0.5).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "accuracy": float(accuracy_score(y, predicted)),
        "auroc": float(roc_auc_score(y, p)) if both else math.nan,
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": float(recall_score(y, predicted, zero_division=0)),
        "n": float(len(y)),
    }


def prediction_metrics(
    data: TrainingData, predictions: Predictions, interval: float
) -> dict[str, dict[str, float]]:
    """Metrics of every predicted output that ``data`` has targets for."""
    return output_metrics(data, *prediction_columns(predictions), interval)


def prediction_columns(
    predictions: Predictions,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each output's predicted means and standard deviations, by name."""
    names = [spec.name for spec in predictions.mean.specs]
    return {n: predictions[n] for n in names}, {n: predictions.std[n] for n in names}


def output_metrics(
    data: TrainingData,
    mean: Mapping[str, np.ndarray],
    std: Mapping[str, np.ndarray] | None,
    interval: float,
) -> dict[str, dict[str, float]]:
    """Metrics of each output in ``mean`` (row-aligned with ``data``) that ``data`` has targets
    for; ``std`` (None for a model without uncertainty) gives the interval coverage."""
    out = {}
    patient_id = np.asarray(data.inputs.patient_id).astype(str)
    for name, predicted in mean.items():
        if name not in data.targets:
            continue
        target = data.targets[name]
        if is_label(data.spec(name), target):
            out[name] = classification_metrics(target, predicted)
        else:
            spread = None if std is None else std[name]
            out[name] = regression_metrics(target, predicted, spread, interval)
            if not data.spec(name).shape:
                out[name] |= design_choice_metrics(
                    np.asarray(target, dtype=float), np.asarray(predicted, dtype=float), patient_id
                )
    return out


def patient_metric_rows(
    model: str,
    evaluation: str,
    data: TrainingData,
    mean: Mapping[str, np.ndarray],
    std: Mapping[str, np.ndarray] | None,
    interval: float,
) -> list[dict[str, Any]]:
    """:func:`output_metrics` of each patient's rows apart, as table rows with the patient."""
    patient = np.asarray(data.inputs.patient_id).astype(str)
    rows = []
    for patient_id in np.unique(patient):
        mine = np.flatnonzero(patient == patient_id)
        metrics = output_metrics(
            data.take(mine),
            {n: v[mine] for n, v in mean.items()},
            None if std is None else {n: v[mine] for n, v in std.items()},
            interval,
        )
        for row in metric_rows(model, evaluation, metrics):
            rows.append({"patient_id": patient_id, **row})
    return rows


def gradient_boosting_predictions(
    train: TrainingData, test: TrainingData, outputs: Sequence[str], seed: int
) -> dict[str, np.ndarray]:
    """scikit-learn's histogram gradient boosting on the same 19 features plus the polymer and
    its category as categorical features, one model per scalar output: its prediction for
    each test row (the probability of the positive class for a label)."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    x_train, x_test = _tree_features(train), _tree_features(test)
    categorical = [x_train.shape[1] - 2, x_train.shape[1] - 1]
    out = {}
    for name in outputs:
        spec = train.spec(name)
        if spec.shape:
            continue
        y = np.asarray(train.targets[name], dtype=float)
        keep = np.isfinite(y)
        if is_label(spec, y):
            model = HistGradientBoostingClassifier(
                categorical_features=categorical, random_state=seed, early_stopping=False
            )
            model.fit(x_train[keep], y[keep].astype(int))
            out[name] = model.predict_proba(x_test)[:, 1]
        else:
            model = HistGradientBoostingRegressor(
                categorical_features=categorical, random_state=seed, early_stopping=False
            )
            model.fit(x_train[keep], y[keep])
            out[name] = model.predict(x_test)
    return out


def _tree_features(data: TrainingData) -> np.ndarray:
    inputs = data.inputs
    category = np.array([p.category_index for p in inputs.polymers])[inputs.polymer_index]
    polymer = _polymer_codes(inputs.polymers)[inputs.polymer_index]
    return np.column_stack([inputs.features, polymer, category])


def _polymer_codes(polymers: Sequence[Any]) -> np.ndarray:
    """One code per distinct PSMILES, stable across splits (sorted)."""
    distinct = sorted({p.psmiles for p in polymers})
    return np.array([distinct.index(p.psmiles) for p in polymers])


def metric_rows(
    model: str, evaluation: str, metrics: Mapping[str, Mapping[str, float]]
) -> list[dict[str, Any]]:
    return [
        {"model": model, "evaluation": evaluation, "output": output, "metric": k, "value": v}
        for output, values in metrics.items()
        for k, v in values.items()
    ]


def training_curves(
    histories: Mapping[str, list[dict[str, Any]]],
) -> dict[str, list[dict[str, Any]]]:
    """One curve per model, and per member of an ensemble (whose records name their
    ``member``): its label and its epochs' records."""
    curves: dict[str, list[dict[str, Any]]] = {}
    for name, history in histories.items():
        for record in history:
            member = record.get("member")
            label = name if member is None else f"{name}, member {member}"
            curves.setdefault(label, []).append(record)
    return curves


def plot_training_curves(histories: Mapping[str, list[dict[str, Any]]], path: Path) -> None:
    """Training objective and validation criterion per epoch, side by side: they are
    different quantities (a likelihood; the loss of the means)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (train_axis, validation_axis) = plt.subplots(1, 2, figsize=(9, 3.8))
    for label, records in training_curves(histories).items():
        epochs = [h["epoch"] for h in records]
        train_axis.plot(epochs, [h["train_loss"] for h in records], label=label)
        validation_axis.plot(epochs, [h["validation_loss"] for h in records], label=label)
    train_axis.set_title("training objective", fontsize=9)
    validation_axis.set_title("validation patients: loss of the means", fontsize=9)
    for axis in (train_axis, validation_axis):
        axis.set_xlabel("epoch")
        axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_parity(
    spec: OutputSpec,
    target: np.ndarray,
    predictions: Predictions,
    path: Path,
    rng: np.random.Generator,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y = np.ravel(target)
    m = np.ravel(predictions[spec.name])
    if len(y) > PARITY_POINTS:
        rows = rng.choice(len(y), PARITY_POINTS, replace=False)
        y, m = y[rows], m[rows]
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.scatter(y, m, s=3, alpha=0.3)
    low, high = float(np.nanmin([y.min(), m.min()])), float(np.nanmax([y.max(), m.max()]))
    axis.plot([low, high], [low, high], "k-", lw=0.8)
    axis.set_xlabel(f"simulated {spec.name} ({spec.unit})")
    axis.set_ylabel(f"predicted {spec.name} ({spec.unit})")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
