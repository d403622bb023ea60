"""The train stage: the surrogate fitted on the training patients and judged on the test
patients, against its baselines and leave-polymer-out; its artifacts; clear errors."""

import csv
import json

import numpy as np
import pytest

from hydraopt.registry import PluginRegistry
from hydraopt.stages.train import load_training_table
from hydraopt.store import RunStore

from conftest import run_quietly

PIPELINE = """\
[study]
name = "tr"
seed = 5
output_dir = "runs"

[cohort]
n_patients = 6
chronic_fraction = 0.5

[dataset]
designs_per_patient = 24
is_optimal = { delta_ef_pct = 0.05, bz_stress_reduction_pct = 0.0 }
splits = { train = 0.5, validation = 0.25, test = 0.25 }

[mesh]
element_size_mm = 8.0

[simulators.reference-mechanics]

[surrogate]
plugin = "hydrabert"
epochs = 4
batch_size = 16
fusion_dim = 32
smiles_dim = 16
adapter_hidden = 16
mc_samples = 4

[surrogate.heads.delta_ef_pct]
loss = "huber"
hidden = [32]

[surrogate.heads.is_optimal]
kind = "classification"
loss = "focal"
hidden = [16]

[encoder]
plugin = "morgan"
fp_size = 128

[train]
leave_polymer_out = 0.3

[execution]
workers = 1
"""


@pytest.fixture(scope="module")
def registry():
    return PluginRegistry.discover()


@pytest.fixture(scope="module")
def study(tmp_path_factory, registry):
    folder = tmp_path_factory.mktemp("train")
    path = folder / "pipeline.toml"
    path.write_text(PIPELINE, encoding="utf-8")
    summary = run_quietly(path, registry)
    assert summary.ok and "train" in summary.ran, summary
    return path, summary.run_dir


def test_the_surrogate_is_saved_and_judged_on_the_test_patients(study, registry):
    _, run_dir = study
    store = RunStore(run_dir)
    evaluation = store.folder("surrogate_evaluation")
    with (evaluation.path / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    models = {(r["model"], r["evaluation"]) for r in rows}
    assert models == {
        ("hydrabert/morgan", "test patients"),
        ("hydrabert/none", "test patients"),
        ("hist-gradient-boosting", "test patients"),
        ("hydrabert/morgan", "leave-polymer-out"),
        ("hydrabert/none", "leave-polymer-out"),
    }
    main = {
        (r["output"], r["metric"]): float(r["value"])
        for r in rows
        if r["model"] == "hydrabert/morgan" and r["evaluation"] == "test patients"
    }
    assert {"mae", "rmse", "r2", "interval_coverage"} <= {m for o, m in main if o == "delta_ef_pct"}
    assert {"accuracy", "auroc", "f1", "precision", "recall"} <= {
        m for o, m in main if o == "is_optimal"
    }
    data, split = load_training_table(store.tables("dataset"))
    assert main[("delta_ef_pct", "n")] == (split == "test").sum()
    for name in ("training_curves.png", "parity_delta_ef_pct.png", "history.csv"):
        assert (evaluation.path / name).stat().st_size > 0

    # Per patient: every test patient, each model; the rows' mean error weighs back to the whole
    with (evaluation.path / "by_patient.csv").open() as handle:
        by_patient = list(csv.DictReader(handle))
    test_patients = set(np.asarray(data.inputs.patient_id)[split == "test"].astype(str))
    assert {r["patient_id"] for r in by_patient} == test_patients
    assert {r["model"] for r in by_patient} == {m for m, e in models if e == "test patients"}
    for model in ("hydrabert/morgan", "hist-gradient-boosting"):
        mine = [r for r in by_patient if r["model"] == model and r["output"] == "delta_ef_pct"]
        n = {r["patient_id"]: float(r["value"]) for r in mine if r["metric"] == "n"}
        error = {r["patient_id"]: float(r["value"]) for r in mine if r["metric"] == "mean_error"}
        assert sum(n.values()) == main[("delta_ef_pct", "n")]
        overall = next(
            float(r["value"])
            for r in rows
            if (r["model"], r["evaluation"], r["output"], r["metric"])
            == (model, "test patients", "delta_ef_pct", "mean_error")
        )
        weighted = sum(n[p] * error[p] for p in n) / sum(n.values())
        assert weighted == pytest.approx(overall, rel=1e-6, abs=1e-9)
    assert evaluation.meta["leave_polymer_out"]

    # Stages 2 and 3 load the saved surrogate and get what the stage measured
    from hydraopt_plugins.encoders import MorganSettings
    from hydraopt_plugins.encoders.morgan import MorganEncoder
    from hydraopt_plugins.surrogates import HydraBertSettings
    from hydraopt_plugins.surrogates.hydrabert.surrogate import HydraBertSurrogate

    saved = store.folder("surrogate").path
    meta = json.loads((saved / "surrogate.json").read_text())
    surrogate = HydraBertSurrogate(HydraBertSettings.model_validate(meta["settings"]))
    surrogate.load(saved, MorganEncoder(MorganSettings(fp_size=128)))
    test = data.take(split == "test")
    predicted = surrogate.predict(test.inputs)
    mae = np.abs(predicted["delta_ef_pct"] - test.targets["delta_ef_pct"]).mean()
    assert mae == pytest.approx(main[("delta_ef_pct", "mae")], rel=1e-6)


def test_a_second_run_reuses_the_trained_surrogate(study, registry):
    path, _ = study
    summary = run_quietly(path, registry)
    assert "train" in summary.skipped


def test_a_head_naming_an_output_the_dataset_lacks_is_a_clear_error(study, registry):
    from hydraopt.errors import DataError

    path, _ = study
    other = path.with_name("other-head.toml")
    other.write_text(PIPELINE.replace("[surrogate.heads.is_optimal]", "[surrogate.heads.rvi_ms]"))
    with pytest.raises(DataError, match=r"surrogate\.heads\.rvi_ms: the dataset has no output"):
        run_quietly(other, registry, adopt_run_dir=True)
    run_quietly(path, registry, adopt_run_dir=True)  # the study's own file again


def test_a_search_judges_trials_on_held_out_patients_and_trains_the_best(study, registry):
    path, run_dir = study
    searched = path.with_name("searched.toml")
    searched.write_text(
        PIPELINE.replace(
            "[train]",
            "[train.search]\ntrials = 2\nfolds = 2\n"
            "space = { learning_rate = { low = 1e-4, high = 1e-2, log = true }, "
            "dropout = { choices = [0.0, 0.2] } }\n\n[train]",
        )
    )
    summary = run_quietly(searched, registry, adopt_run_dir=True)
    assert summary.ok and "train" in summary.ran
    evaluation = RunStore(run_dir).folder("surrogate_evaluation")
    with (evaluation.path / "search.csv").open() as handle:
        trials = list(csv.DictReader(handle))
    assert [t["trial"] for t in trials] == ["0", "1"]
    best = evaluation.meta["search_best"]
    assert set(best) == {"learning_rate", "dropout"}
    saved = json.loads((RunStore(run_dir).folder("surrogate").path / "surrogate.json").read_text())
    assert saved["settings"]["learning_rate"] == best["learning_rate"]
    bad = path.with_name("bad-search.toml")
    bad.write_text(searched.read_text().replace("dropout = {", "droput = {"))
    from hydraopt.config import load_pipeline
    from hydraopt.validation import validate_inputs

    problems = validate_inputs(load_pipeline(bad, registry), registry)
    assert any(
        "train.search.space.droput: the surrogate 'hydrabert' has no setting" in p for p in problems
    )
    run_quietly(path, registry, adopt_run_dir=True)  # the study's own file again
