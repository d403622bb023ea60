"""Stage ``train``: the Stage 1 surrogate, fitted on the dataset's training patients, selected
on its validation patients and judged on its test patients, never seen in training.

In the same stage, on the same split: the baselines (scikit-learn gradient boosting on the same
features; the surrogate without a polymer encoder), and leave-polymer-out, where a seeded
share of the distinct polymers (by PSMILES, so that two names of one chemistry leave
together) is held out of training and the test patients' rows of those polymers are
predicted: there a polymer encoder must earn its place.

Artifacts: ``surrogate`` (the fitted surrogate's saved folder, loaded by Stages 2 and 3) and
``surrogate_evaluation`` (``metrics.csv``, ``history.csv``, training curves and parity plots).
Each training keeps a checkpoint in the stage's work folder, so a killed run resumes from the
last finished epoch.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from hydraopt.config import Pipeline, PipelineConfig
from hydraopt.distributed_training import default_launcher, fit_in_processes
from hydraopt.domain import OutputSpec, PolymerInput, SurrogateInputs, TrainingData
from hydraopt.domain.training import DATASET_FEATURE_NAMES
from hydraopt.errors import DataError, HydraoptError, PluginError
from hydraopt.hyperparameter_search import folds_of, search, write_trials
from hydraopt.plugin_calls import PluginFailure, PluginHandle
from hydraopt.plugin_types import NoSettings
from hydraopt.registry import PluginRegistry
from hydraopt.seeding import derive_seed
from hydraopt.stages.base import Stage, StageContext
from hydraopt.store import TablesArtifact
from hydraopt.surrogate_evaluation import (
    gradient_boosting_predictions,
    metric_rows,
    output_metrics,
    patient_metric_rows,
    plot_parity,
    plot_training_curves,
    prediction_columns,
    prediction_metrics,
)

IS_OPTIMAL = OutputSpec(
    "is_optimal", "1", "1 when the design reaches every dataset.is_optimal threshold"
)
SPLITS = ("train", "validation", "test")
NO_ENCODER = "none"


def load_training_table(dataset: TablesArtifact) -> tuple[TrainingData, np.ndarray]:
    """The dataset artifact as surrogate rows with every output and is_optimal as targets,
    and each row's split."""
    features = dataset.table("features")
    outputs = dataset.table("outputs")
    rows = dataset.table("rows")
    names = np.asarray(rows["polymer"]).astype(str)
    distinct, first, index = np.unique(names, return_index=True, return_inverse=True)
    polymers = tuple(
        PolymerInput(str(name), str(rows["psmiles"][i]), str(rows["category"][i]))
        for name, i in zip(distinct, first, strict=True)
    )
    inputs = SurrogateInputs(
        features=np.column_stack([features[name] for name in DATASET_FEATURE_NAMES]),
        polymer_index=index.astype(np.int64),
        polymers=polymers,
        patient_id=np.asarray(rows["patient_id"], dtype=object),
    )
    declared = dataset.meta["outputs"]
    specs = tuple(
        OutputSpec(name, spec["unit"], spec["description"], tuple(spec["shape"]))
        for name, spec in declared.items()
    )
    targets = {name: np.asarray(outputs[name], dtype=np.float64) for name in declared}
    targets[IS_OPTIMAL.name] = np.asarray(rows["is_optimal"], dtype=np.float64)
    data = TrainingData(inputs, targets, (*specs, IS_OPTIMAL))
    return data, np.asarray(rows["split"]).astype(str)


def _run(context: StageContext) -> None:
    config = context.config
    say = context.reporter.say
    data, split = load_training_table(context.store.tables("dataset"))
    parts = {name: data.take(split == name) for name in SPLITS}
    for name, part in parts.items():
        if not len(part):
            raise DataError(
                f"{context.pipeline.path}: dataset.splits: the {name} split has no rows; the "
                "surrogate needs patients in train, validation and test"
            )
    encoder = context.plugin(("encoder",))
    _check_polymers(encoder.build(), data.inputs.polymers)
    none_encoder = context.registry.handle("encoder", NO_ENCODER, NoSettings())
    surrogate_handle = context.plugin(("surrogate",))
    searched: dict[str, Any] = {}
    if config.train.search is not None:
        surrogate_handle, searched = _search(context, surrogate_handle, encoder, data, split)
    assert config.surrogate is not None  # the stage is enabled by it
    label = f"{config.surrogate.plugin}/{config.encoder.plugin}"
    interval = config.train.interval
    fit = _Fitter(context, surrogate_handle)
    rows: list[dict[str, Any]] = []
    histories: dict[str, list[dict[str, Any]]] = {}

    say(f"  {label}: {len(parts['train'])} training rows, {len(parts['validation'])} validation")
    surrogate = fit("main", encoder, parts["train"], parts["validation"])
    predictions = surrogate.predict(parts["test"].inputs)
    main_metrics = prediction_metrics(parts["test"], predictions, interval)
    rows += metric_rows(label, "test patients", main_metrics)
    patient_rows = _patient_rows(label, parts["test"], predictions, interval)
    histories[label] = getattr(surrogate, "history", [])
    heads = [spec.name for spec in surrogate.outputs]

    baseline_rows, baseline_patients, baseline_histories = _baselines(
        context, fit, parts, heads, none_encoder
    )
    rows += baseline_rows
    patient_rows += baseline_patients
    histories.update(baseline_histories)

    held_out: list[str] = []
    if config.train.leave_polymer_out > 0:
        held_out, lpo = _leave_polymer_out(context, data, split, fit, encoder, none_encoder)
        rows += lpo

    folder = context.scratch_dir() / "surrogate"
    shutil.rmtree(folder, ignore_errors=True)  # what a killed run left
    folder.mkdir()
    surrogate.save(folder)
    meta = {"surrogate": label, "outputs": heads, "test_metrics": main_metrics}
    context.write_folder("surrogate", folder, meta=meta)
    report = context.scratch_dir() / "evaluation"
    shutil.rmtree(report, ignore_errors=True)
    _write_report(report, rows, patient_rows, histories, parts["test"], predictions, context)
    if searched:
        write_trials(report / "search.csv", searched["trials"])
    context.write_folder(
        "surrogate_evaluation",
        report,
        meta={
            "metrics": rows,
            "leave_polymer_out": held_out,
            "interval": interval,
            "search_best": searched.get("best", {}),
        },
    )
    for line in summary_lines(rows, label):
        say("  " + line)
    say("  " + patient_line(patient_rows, label, "delta_ef_pct"))


def _baselines(
    context: StageContext,
    fit: _Fitter,
    parts: dict[str, TrainingData],
    heads: list[str],
    none_encoder: PluginHandle,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
    """The configured baselines' test metrics, over all test rows and per patient, and their
    training histories, on the same split."""
    config = context.config
    assert config.surrogate is not None
    interval = config.train.interval
    rows: list[dict[str, Any]] = []
    patient_rows: list[dict[str, Any]] = []
    histories: dict[str, list[dict[str, Any]]] = {}
    test = parts["test"]
    if "no-encoder" in config.train.baselines and config.encoder.plugin != NO_ENCODER:
        name = f"{config.surrogate.plugin}/{NO_ENCODER}"
        context.reporter.say(f"  baseline {name}")
        baseline = fit("no-encoder", none_encoder, parts["train"], parts["validation"])
        predicted = baseline.predict(test.inputs)
        rows += metric_rows(name, "test patients", prediction_metrics(test, predicted, interval))
        patient_rows += _patient_rows(name, test, predicted, interval)
        histories[name] = getattr(baseline, "history", [])
    if "hist-gradient-boosting" in config.train.baselines:
        name = "hist-gradient-boosting"
        context.reporter.say(f"  baseline {name}")
        seed = derive_seed(config.study.seed, "train", name) % 2**32
        boosted = gradient_boosting_predictions(parts["train"], test, heads, seed)
        rows += metric_rows(name, "test patients", output_metrics(test, boosted, None, interval))
        patient_rows += patient_metric_rows(name, "test patients", test, boosted, None, interval)
    return rows, patient_rows, histories


def _patient_rows(
    model: str, test: TrainingData, predictions: Any, interval: float
) -> list[dict[str, Any]]:
    return patient_metric_rows(
        model, "test patients", test, *prediction_columns(predictions), interval
    )


class _Fitter:
    """Fits new surrogate objects, each with its own resumable work folder and seed, in this
    process or data-parallel in the launcher's processes."""

    def __init__(self, context: StageContext, handle: PluginHandle) -> None:
        self.context = context
        self.handle = handle

    def _report(self, line: str) -> None:
        self.context.reporter.say(f"    {line}")

    def __call__(
        self, key: str, encoder: PluginHandle, train: TrainingData, validation: TrainingData
    ) -> Any:
        config = self.context.config.train
        workdir = self.context.store.work_dir("train") / key
        workdir.mkdir(parents=True, exist_ok=True)
        seed = derive_seed(self.context.config.study.seed, "train", key)
        surrogate = self.handle.build_new()
        try:
            if config.processes > 1 or config.launcher:
                launcher = config.launcher or default_launcher(config.processes)
                fitted = fit_in_processes(
                    workdir / "job",
                    (self.handle, encoder),
                    train,
                    validation,
                    seed,
                    launcher,
                    self._report,
                )
                surrogate.load(fitted, encoder.build())
            else:
                surrogate.fit(train, validation, encoder.build(), workdir, seed, self._report)
        except ValueError as exc:
            raise DataError(f"{self.context.pipeline.path}: {exc}") from None
        except HydraoptError:
            raise
        except Exception as exc:
            raise PluginFailure(
                self.handle.label, f"fit raised {type(exc).__name__}: {exc}"
            ) from exc
        return surrogate


def _search(
    context: StageContext,
    handle: PluginHandle,
    encoder: PluginHandle,
    data: TrainingData,
    split: np.ndarray,
) -> tuple[PluginHandle, dict[str, Any]]:
    """The surrogate's handle with the best settings the search found, and the trials."""
    search_config = context.config.train.search
    assert search_config is not None
    where = f"{context.pipeline.path}: train.search"
    base = handle.settings.model_dump()

    def handle_with(values: dict[str, Any]) -> PluginHandle:
        try:
            settings = type(handle.settings).model_validate({**base, **values})
        except ValidationError as exc:
            raise DataError(f"{where}.space: {exc}") from None
        return context.registry.handle("surrogate", handle.name, settings)

    def fit_trial(
        values: dict[str, Any], key: str, train: TrainingData, held_out: TrainingData
    ) -> Any:
        return _Fitter(context, handle_with(values))(key, encoder, train, held_out)

    try:
        pairs = folds_of(data, split, search_config.folds)
    except ValueError as exc:
        raise DataError(f"{context.pipeline.path}: {exc}") from None
    space = {name: r.model_dump(exclude_none=True) for name, r in search_config.space.items()}
    objective = (search_config.objective_output, search_config.objective_metric)
    context.reporter.say(
        f"  searching {', '.join(space)} over {search_config.trials} trials, "
        f"{len(pairs)} fold(s), by {' '.join(objective)}"
    )
    best, trials = search(
        space,
        pairs,
        fit_trial,
        objective,
        search_config.trials,
        derive_seed(context.config.study.seed, "train", "search"),
        context.store.work_dir("train") / "search.sqlite3",
        lambda line: context.reporter.say(f"    {line}"),
    )
    context.reporter.say(f"  best: {best}")
    return handle_with(best), {"best": best, "trials": trials}


def _check_polymers(encoder: Any, polymers: tuple[PolymerInput, ...]) -> None:
    """Each polymer's PSMILES goes through the encoder, or the error names the polymer."""
    for polymer in polymers:
        try:
            encoder.encode([polymer.psmiles])
        except ValueError as exc:
            raise DataError(
                f"polymer {polymer.name!r}: the encoder cannot read its PSMILES "
                f"{polymer.psmiles!r} ({exc}); fix it in the polymer library"
            ) from None


def _leave_polymer_out(
    context: StageContext,
    data: TrainingData,
    split: np.ndarray,
    fit: _Fitter,
    encoder: PluginHandle,
    none_encoder: PluginHandle,
) -> tuple[list[str], list[dict[str, Any]]]:
    config = context.config
    psmiles = data.inputs.row_psmiles
    distinct = sorted(set(psmiles))
    count = max(1, round(config.train.leave_polymer_out * len(distinct)))
    held = set(context.rng("leave-polymer-out").choice(distinct, count, replace=False).tolist())
    held_row = np.isin(psmiles, list(held))
    train = data.take((split == "train") & ~held_row)
    validation = data.take((split == "validation") & ~held_row)
    test = data.take((split == "test") & held_row)
    names = sorted({p.name for p in data.inputs.polymers if p.psmiles in held})
    if not len(test):
        context.reporter.say(
            "  leave-polymer-out: the test patients have no row of the held-out polymers"
        )
        return names, []
    context.reporter.say(f"  leave-polymer-out: holding out {', '.join(names)}")
    rows = []
    assert config.surrogate is not None
    surrogate_name = config.surrogate.plugin
    encoders = {config.encoder.plugin: encoder, NO_ENCODER: none_encoder}
    for name, chosen in encoders.items():
        model = fit(f"leave-polymer-out-{name}", chosen, train, validation)
        metrics = prediction_metrics(test, model.predict(test.inputs), config.train.interval)
        rows += metric_rows(f"{surrogate_name}/{name}", "leave-polymer-out", metrics)
    return names, rows


def _write_report(
    folder: Path,
    rows: list[dict[str, Any]],
    patient_rows: list[dict[str, Any]],
    histories: dict[str, list[dict[str, Any]]],
    test: TrainingData,
    predictions: Any,
    context: StageContext,
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "metrics.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ["model", "evaluation", "output", "metric", "value"])
        writer.writeheader()
        writer.writerows(rows)
    with (folder / "by_patient.csv").open("w", newline="") as handle:
        fields = ["model", "evaluation", "patient_id", "output", "metric", "value"]
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(patient_rows)
    with (folder / "history.csv").open("w", newline="") as handle:
        fields = sorted({k for h in histories.values() for record in h for k in record})
        writer = csv.DictWriter(handle, ["model", *fields])
        writer.writeheader()
        for model, history in histories.items():
            writer.writerows({"model": model, **record} for record in history)
    if any(histories.values()):
        plot_training_curves(
            {k: v for k, v in histories.items() if v}, folder / "training_curves.png"
        )
    rng = context.rng("parity")
    for spec in predictions.mean.specs:
        if spec.name != IS_OPTIMAL.name:
            plot_parity(
                spec, test.targets[spec.name], predictions, folder / f"parity_{spec.name}.png", rng
            )
    (folder / "metrics.json").write_text(json.dumps(rows, indent=1))


def summary_lines(rows: list[dict[str, Any]], label: str) -> list[str]:
    """One line per model and evaluation: the headline metrics of every output."""
    lines = []
    keys = {"mae", "r2", "interval_coverage", "auroc", "f1"}
    groups: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        if row["metric"] in keys:
            groups.setdefault((row["model"], row["evaluation"]), []).append(
                f"{row['output']} {row['metric']} {row['value']:.3g}"
            )
    for (model, evaluation), parts in groups.items():
        lines.append(f"{model} on {evaluation}: " + ", ".join(parts))
    return lines


def patient_line(rows: list[dict[str, Any]], model: str, output: str) -> str:
    """``model``'s mean error (predicted − simulated) on ``output`` for each test patient."""
    errors = [
        f"{row['patient_id']} {row['value']:+.3g}"
        for row in rows
        if row["model"] == model and row["output"] == output and row["metric"] == "mean_error"
    ]
    return f"{model} on the test patients, {output} mean error by patient: " + ", ".join(errors)


def _preflight(pipeline: Pipeline, registry: PluginRegistry) -> list[str]:
    """The encoder is built before anything runs: missing weights are named up front."""
    config = pipeline.config
    if config.surrogate is None:
        return []
    problems = _search_problems(pipeline, registry)
    loc = ("encoder",)
    try:
        handle = registry.handle("encoder", config.encoder.plugin, pipeline.plugin_settings[loc])
        handle.build()
    except PluginFailure as exc:
        problems.append(f"{pipeline.path}: encoder: {exc}")
    except KeyError:  # an unknown plugin, reported by validation
        pass
    return problems


def _search_problems(pipeline: Pipeline, registry: PluginRegistry) -> list[str]:
    """Searched names that are no setting of the surrogate, and an objective no head has."""
    config = pipeline.config
    search_config = config.train.search
    if search_config is None or config.surrogate is None:
        return []
    try:
        model = registry.get("surrogate", config.surrogate.plugin).registration.settings
    except PluginError:  # an unknown plugin, reported by validation
        return []
    problems = [
        f"{pipeline.path}: train.search.space.{name}: the surrogate "
        f"{config.surrogate.plugin!r} has no setting {name!r} (settings: "
        f"{', '.join(model.model_fields)})"
        for name in search_config.space
        if name not in model.model_fields
    ]
    named = getattr(pipeline.plugin_settings.get(("surrogate",)), "heads", None)
    if named is not None and search_config.objective_output not in named:
        problems.append(
            f"{pipeline.path}: train.search.objective_output: no head predicts "
            f"{search_config.objective_output!r} (heads: {', '.join(named)})"
        )
    return problems


def _depends_on(config: PipelineConfig) -> Any:
    return {"train": config.train.model_dump(mode="json")}


STAGE = Stage(
    name="train",
    version="1",
    sections=("surrogate",),
    description="fit the surrogate on the training patients, judge it on the test patients",
    inputs=("dataset",),
    outputs={"surrogate": "folder", "surrogate_evaluation": "folder"},
    enabled=lambda config: config.surrogate is not None and config.dataset is not None,
    depends_on=_depends_on,
    plugins=lambda config: [("surrogate",), ("encoder",)],
    run=_run,
    preflight=_preflight,
)
