"""The hydrabert surrogate on rows with a known answer: it learns them, predicts with calibrated
uncertainty, saves and loads exactly, resumes a killed training as if never stopped, and
refuses what it cannot use with errors that name the head, file or split."""

import json

import numpy as np
import pytest

from hydraopt.domain import OutputSpec, PolymerInput, SurrogateInputs, TrainingData
from hydraopt.domain.training import DATASET_FEATURE_NAMES
from hydraopt_plugins.encoders import MorganSettings
from hydraopt_plugins.surrogates import HydraBertSettings

POLYMERS = (
    PolymerInput("peg", "[*]CCO[*]", "PEGDA"),
    PolymerInput("pedot", "[*]c1sc([*])c2c1OCCO2", "Conductive"),
    PolymerInput("chitosan", "[*]OC1C(CO)OC([*])C(N)C1O", "Chitosan"),
)
SPECS = (
    OutputSpec("delta_ef_pct", "%-points", "change in EF"),
    OutputSpec("is_optimal", "1", "label"),
    OutputSpec("bz_stress_reduction_pct", "%", "stress reduction"),
    OutputSpec("delta_ef_trajectory_pct", "%-points", "trajectory", (3,)),
)
NOISE = 0.05
STIFFNESS = DATASET_FEATURE_NAMES.index("stiffness_kpa")
THICKNESS = DATASET_FEATURE_NAMES.index("thickness_mm")


def rows(n: int, patient: str, seed: int) -> TrainingData:
    """delta-EF rises with log stiffness and thickness, and differs by polymer."""
    rng = np.random.default_rng(seed)
    features = rng.uniform(1.0, 2.0, (n, len(DATASET_FEATURE_NAMES)))
    features[:, STIFFNESS] = 10 ** rng.uniform(0, 2, n)
    polymer = rng.integers(0, len(POLYMERS), n)
    clean = np.log10(features[:, STIFFNESS]) + features[:, THICKNESS] + 0.5 * polymer
    delta_ef = clean + NOISE * rng.normal(size=n)
    targets = {
        "delta_ef_pct": delta_ef,
        "is_optimal": (clean > 2.3).astype(float),
        "bz_stress_reduction_pct": 4 * clean + rng.normal(size=n),
        "delta_ef_trajectory_pct": np.outer(delta_ef, [0.3, 0.7, 1.0]),
    }
    inputs = SurrogateInputs(features, polymer, POLYMERS, np.full(n, patient, dtype=object))
    return TrainingData(inputs, targets, SPECS)


HEADS = {
    "delta_ef_pct": {"kind": "regression", "loss": "huber", "hidden": [64]},
    "is_optimal": {"kind": "classification", "loss": "focal", "hidden": [32]},
    "bz_stress_reduction_pct": {"weight": 0.3, "hidden": [32]},
    "delta_ef_trajectory_pct": {"kind": "sequence", "hidden": [32]},
}


def settings(**changes) -> HydraBertSettings:
    base = {
        "heads": HEADS,
        "epochs": 25,
        "batch_size": 128,
        "fusion_dim": 64,
        "smiles_dim": 32,
        "adapter_hidden": 32,
        "patience": 25,
        "mc_samples": 8,
        "design_scale": "log",  # the rows' delta-EF is linear in log10 stiffness
    }
    return HydraBertSettings.model_validate({**base, **changes})


def surrogate(**changes):
    from hydraopt_plugins.surrogates.hydrabert.surrogate import HydraBertSurrogate

    return HydraBertSurrogate(settings(**changes))


def morgan():
    from hydraopt_plugins.encoders.morgan import MorganEncoder

    return MorganEncoder(MorganSettings(fp_size=256))


@pytest.fixture(scope="module")
def data():
    return rows(1500, "P1", 1), rows(400, "P2", 2), rows(600, "P3", 3)


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory):
    train, validation, _ = data
    model = surrogate()
    model.fit(train, validation, morgan(), tmp_path_factory.mktemp("fit"), seed=7)
    return model


def test_it_learns_every_head_and_its_intervals_hold_what_they_claim(fitted, data):
    from sklearn.metrics import r2_score, roc_auc_score

    test = data[2]
    predicted = fitted.predict(test.inputs)
    y = test.targets["delta_ef_pct"]
    assert r2_score(y, predicted["delta_ef_pct"]) > 0.95
    assert roc_auc_score(test.targets["is_optimal"], predicted["is_optimal"]) > 0.95
    assert (
        r2_score(test.targets["bz_stress_reduction_pct"], predicted["bz_stress_reduction_pct"])
        > 0.8
    )
    trajectory = predicted["delta_ef_trajectory_pct"]
    assert trajectory.shape == (600, 3)
    assert r2_score(test.targets["delta_ef_trajectory_pct"].ravel(), trajectory.ravel()) > 0.9
    std = predicted.std["delta_ef_pct"]
    assert np.all(std > 0)
    for name in ("delta_ef_pct", "bz_stress_reduction_pct", "delta_ef_trajectory_pct"):
        inside = np.abs(test.targets[name] - predicted[name]) <= 1.645 * predicted.std[name]
        assert 0.85 <= inside.mean() <= 0.95, name  # a 90% interval holds about 90%
    # calibrated at 90% on the validation patients: there the intervals hold 90% exactly
    validation = data[1]
    on_validation = fitted.predict(validation.inputs)
    error = np.abs(validation.targets["delta_ef_pct"] - on_validation["delta_ef_pct"])
    inside = error <= 1.6449 * on_validation.std["delta_ef_pct"]
    assert inside.mean() == pytest.approx(0.9, abs=0.005)
    assert np.all((predicted["is_optimal"] >= 0) & (predicted["is_optimal"] <= 1))
    assert predicted.mean.units()["delta_ef_pct"] == "%-points"
    history = fitted.history
    assert history[-1]["validation_loss"] < history[0]["validation_loss"]


def test_predictions_are_reproducible_and_survive_save_and_load(fitted, data, tmp_path):
    test = data[2].inputs
    first, again = fitted.predict(test), fitted.predict(test)
    np.testing.assert_array_equal(first["delta_ef_pct"], again["delta_ef_pct"])
    np.testing.assert_array_equal(first.std["delta_ef_pct"], again.std["delta_ef_pct"])
    fitted.save(tmp_path)
    restored = surrogate()
    restored.load(tmp_path, morgan())
    loaded = restored.predict(test)
    for name in ("delta_ef_pct", "is_optimal", "delta_ef_trajectory_pct"):
        np.testing.assert_allclose(loaded[name], first[name], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(loaded.std[name], first.std[name], rtol=1e-5, atol=1e-6)


def test_batched_prediction_equals_one_batch_and_inference_settings_may_change(
    fitted, data, tmp_path
):
    test = data[2].inputs
    fitted.save(tmp_path)
    # fp32: in bf16 (a GPU's 'auto') a batch's shape picks the kernel and so the rounding
    whole = surrogate(mc_samples=1, precision="fp32")
    batched = surrogate(mc_samples=1, predict_batch_size=37, precision="fp32")
    whole.load(tmp_path, morgan())
    batched.load(tmp_path, morgan())
    for name in ("delta_ef_pct", "is_optimal", "delta_ef_trajectory_pct"):
        # to rounding: matrix products block by batch size (on an H200 in fp32, 3e-6 apart)
        np.testing.assert_allclose(
            whole.predict(test)[name], batched.predict(test)[name], rtol=1e-5, atol=1e-6
        )


def test_load_refuses_another_configuration_or_encoder(fitted, tmp_path):
    from hydraopt_plugins.encoders import NoEncoder
    from hydraopt_plugins.encoders.morgan import MorganEncoder

    fitted.save(tmp_path)
    with pytest.raises(ValueError, match=r"surrogate\.json: saved with other surrogate settings"):
        surrogate(dropout=0.2).load(tmp_path, morgan())
    with pytest.raises(ValueError, match="another polymer encoder"):
        surrogate().load(tmp_path, MorganEncoder(MorganSettings(fp_size=512)))
    with pytest.raises(ValueError, match="another polymer encoder"):
        surrogate().load(tmp_path, NoEncoder(None))
    # A surrogate saved before a setting existed loads: the setting takes its default.
    meta = json.loads((tmp_path / "surrogate.json").read_text())
    del meta["settings"]["weight_average_epochs"]
    (tmp_path / "surrogate.json").write_text(json.dumps(meta))
    surrogate().load(tmp_path, morgan())
    with pytest.raises(ValueError, match="saved with other surrogate settings"):
        surrogate(weight_average_epochs=1.0).load(tmp_path, morgan())
    meta["settings"]["a_setting_no_version_has"] = 1
    (tmp_path / "surrogate.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="saved with other surrogate settings"):
        surrogate().load(tmp_path, morgan())
    (tmp_path / "surrogate.json").write_text('{"format": "someone-else/3"}')
    with pytest.raises(ValueError, match="format 'someone-else/3'"):
        surrogate().load(tmp_path, morgan())


def polybert(folder):
    from hydraopt_plugins.encoders import PolyBertSettings
    from hydraopt_plugins.encoders.polybert import PolyBertEncoder

    return PolyBertEncoder(PolyBertSettings(model=str(folder)))


@pytest.fixture(scope="module")
def polybert_folder(tmp_path_factory):
    from hydraopt_plugins.encoders.polybert_untrained import write_untrained_polybert

    psmiles = [p.psmiles for p in POLYMERS]
    return write_untrained_polybert(tmp_path_factory.mktemp("polybert"), psmiles * 5)


def fit_killed(model, train, validation, encoder, workdir, in_validation_pass=3) -> None:
    """Fit ``model`` (seed 3) and stop it in its ``in_validation_pass``-th validation pass of
    all, as a kill would: by default in its third epoch, so that its checkpoint holds two
    finished epochs."""
    from hydraopt_plugins.surrogates.hydrabert import training

    calls = {"n": 0}
    original = training.evaluate_loss

    def dies(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == in_validation_pass:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    training.evaluate_loss = dies
    try:
        with pytest.raises(KeyboardInterrupt):
            model.fit(train, validation, encoder, workdir, seed=3)
    finally:
        training.evaluate_loss = original


@pytest.mark.parametrize("encoder", ["morgan", "polybert"])
def test_a_killed_training_resumes_and_ends_as_an_uninterrupted_one(
    encoder, data, tmp_path, polybert_folder
):
    """Also with LoRA on a polyBERT encoder, whose dropout masks come from torch's generator
    through the checkpoint; its checkpoint holds the adapters, not the frozen encoder."""
    import torch

    def new_encoder():
        return morgan() if encoder == "morgan" else polybert(polybert_folder)

    train, validation, test = (d.take(slice(0, 300)) for d in data)
    whole = surrogate(epochs=4)
    whole.fit(train, validation, new_encoder(), tmp_path / "whole", seed=3)

    fit_killed(surrogate(epochs=4), train, validation, new_encoder(), tmp_path / "killed")
    saved = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 2
    if encoder == "polybert":
        for state in (saved["model"], saved["best_model"]):
            assert any("lora_A" in k for k in state) and any("network." in k for k in state)
            assert not any("query_proj.base_layer.weight" in k for k in state)
            assert not any("word_embeddings" in k for k in state)
    lines = []
    resumed = surrogate(epochs=4)
    resumed.fit(train, validation, new_encoder(), tmp_path / "killed", seed=3, report=lines.append)
    assert lines[0].startswith("resuming after epoch 2")
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    np.testing.assert_array_equal(
        resumed.predict(test.inputs)["delta_ef_pct"], whole.predict(test.inputs)["delta_ef_pct"]
    )


def test_surrogates_trained_with_one_polybert_encoder_keep_their_own_adapters(
    data, tmp_path, polybert_folder
):
    """The train stage fits several surrogates with one encoder object (main, leave-polymer-
    out, search trials): a later training must not change an earlier surrogate's adapters,
    neither in its predictions nor in what it saves."""
    train, validation, test = (d.take(slice(0, 300)) for d in data)
    encoder = polybert(polybert_folder)
    first = surrogate(epochs=2)
    first.fit(train, validation, encoder, tmp_path / "first", seed=1)
    predicted = first.predict(test.inputs)["delta_ef_pct"]
    second = surrogate(epochs=2)
    second.fit(data[0].take(slice(300, 600)), validation, encoder, tmp_path / "second", seed=2)
    (tmp_path / "saved").mkdir()
    first.save(tmp_path / "saved")
    loaded = surrogate(epochs=2)
    loaded.load(tmp_path / "saved", encoder)
    np.testing.assert_allclose(loaded.predict(test.inputs)["delta_ef_pct"], predicted, rtol=1e-5)
    assert not np.allclose(second.predict(test.inputs)["delta_ef_pct"], predicted, rtol=1e-3)


def test_a_head_needs_its_output_and_a_label_needs_both_classes(data, tmp_path):
    train, validation, _ = data
    model = surrogate(heads={"edp_mmhg": {}})
    with pytest.raises(ValueError, match=r"surrogate\.heads\.edp_mmhg: the dataset has no output"):
        model.fit(train, validation, morgan(), tmp_path)
    model = surrogate(heads={"delta_ef_trajectory_pct": {"kind": "regression"}})
    with pytest.raises(ValueError, match="needs a scalar output"):
        model.fit(train, validation, morgan(), tmp_path)
    one_class = TrainingData(
        train.inputs, {**train.targets, "is_optimal": np.zeros(len(train))}, SPECS
    )
    with pytest.raises(ValueError, match="the training split has no positive row"):
        surrogate().fit(one_class, validation, morgan(), tmp_path)


def test_no_encoder_the_fusion_transformer_and_task_attention_train_too(data, tmp_path):
    import torch

    from hydraopt_plugins.encoders import NoEncoder
    from hydraopt_plugins.lane_dropout import LaneDropout

    train, validation, test = (d.take(slice(0, 400)) for d in data)
    for model, encoder in (
        (surrogate(epochs=3), NoEncoder(None)),
        (surrogate(epochs=3, fusion="transformer", fusion_layers=1, fusion_heads=4), morgan()),
        (
            surrogate(
                epochs=3,
                fusion="transformer",
                fusion_layers=1,
                fusion_heads=4,
                pooling="task-attention",
            ),
            morgan(),
        ),
    ):
        model.fit(train, validation, encoder, tmp_path / str(id(model)), seed=1)
        # every dropout of the network (the transformer's too) draws its masks from lanes,
        # and MC dropout still samples through each of them
        dropouts = [
            m for m in model._members[0].network.modules() if isinstance(m, torch.nn.Dropout)
        ]
        assert dropouts and all(type(m) is LaneDropout for m in dropouts)
        predicted = model.predict(test.inputs)
        assert np.all(np.isfinite(predicted["delta_ef_pct"]))
        assert np.all(predicted.std["delta_ef_pct"] > 0)
        assert model.history[-1]["validation_loss"] < model.history[0]["validation_loss"]
    with pytest.raises(ValueError, match="task-attention' needs fusion = 'transformer'"):
        settings(pooling="task-attention")


@pytest.mark.parametrize("weight_average_epochs", [0.0, 1.0])
def test_two_processes_train_data_parallel_as_one_does(data, tmp_path, weight_average_epochs):
    """torchrun with two CPU processes (gloo): each takes half of every batch and the
    gradients are averaged, which without dropout is the one-process gradient (in fp32: bf16
    autocast rounds the two halves' products differently from the whole batch's). With a
    weight average, every process averages the same weights."""
    from hydraopt.distributed_training import default_launcher, fit_in_processes
    from hydraopt.registry import PluginRegistry

    train, validation, test = (d.take(slice(0, 256)) for d in data)
    registry = PluginRegistry.discover()
    # device "cpu": two CPU processes also where the machine has a GPU
    changes = {
        "epochs": 3,
        "dropout": 0.0,
        "batch_size": 64,
        "precision": "fp32",
        "device": "cpu",
        "weight_average_epochs": weight_average_epochs,
    }
    surrogate_handle = registry.handle("surrogate", "hydrabert", settings(**changes))
    encoder_handle = registry.handle("encoder", "morgan", MorganSettings(fp_size=256))
    lines = []
    fitted = fit_in_processes(
        tmp_path / "job",
        (surrogate_handle, encoder_handle),
        train,
        validation,
        11,
        default_launcher(2),
        lines.append,
    )
    assert any("[rank 0 of 2] epoch 3/3" in line for line in lines)
    parallel = surrogate(**changes)
    parallel.load(fitted, morgan())
    single = surrogate(**changes)
    single.fit(train, validation, morgan(), tmp_path / "single", seed=11)
    np.testing.assert_allclose(
        [h["validation_loss"] for h in parallel.history],
        [h["validation_loss"] for h in single.history],
        rtol=1e-4,
    )
    np.testing.assert_allclose(
        parallel.predict(test.inputs)["delta_ef_pct"],
        single.predict(test.inputs)["delta_ef_pct"],
        rtol=1e-4,
        atol=1e-4,
    )


def test_native_bf16_is_recognised_as_the_kernel_reports_it():
    """The check read torch helpers that torch 2.13 removed and so always said no: on Linux
    it must agree with the CPU flags the kernel lists."""
    from pathlib import Path

    from hydraopt_plugins.surrogates.hydrabert.training import cpu_has_native_bf16

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo to compare with")
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    if not flags:
        pytest.skip("/proc/cpuinfo lists no x86 flags")
    assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16"})


def test_bf16_autocast_trains_and_fp32_is_chosen_where_the_cpu_lacks_bf16(data, tmp_path):
    import torch

    from hydraopt_plugins.surrogates.hydrabert.training import autocast_dtype, cpu_has_native_bf16

    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, "auto") == (torch.bfloat16 if cpu_has_native_bf16() else None)
    assert autocast_dtype(cpu, "fp32") is None
    train, validation, test = (d.take(slice(0, 300)) for d in data)
    model = surrogate(epochs=2, precision="bf16")
    model.fit(train, validation, morgan(), tmp_path, seed=1)
    predicted = model.predict(test.inputs)
    assert predicted["delta_ef_pct"].dtype == np.float64
    assert np.all(np.isfinite(predicted["delta_ef_pct"]))
    assert np.all(np.isfinite(predicted.std["delta_ef_pct"]))


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(not _has_gpu(), reason="torch sees no GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_on_a_gpu_mixed_precision_learns_and_the_saved_surrogate_predicts_alike_on_a_cpu(
    precision, data, tmp_path
):
    """bf16 autocast, or fp16 with the gradient scaler, trains on the GPU as fp32 does on the
    CPU; saved there, the surrogate loads on a machine without one and predicts the same."""
    import torch
    from sklearn.metrics import r2_score

    train, validation, test = data
    model = surrogate(precision=precision, device="cuda")
    model.fit(train, validation, morgan(), tmp_path / "fit", seed=7)
    assert all(p.device.type == "cuda" for p in model._members[0].parameters())
    scaler = torch.load(tmp_path / "fit" / "checkpoint.pt", weights_only=True)["scaler"]
    assert bool(scaler) == (precision == "fp16")  # the scaler runs for fp16 alone
    predicted = model.predict(test.inputs)
    assert r2_score(test.targets["delta_ef_pct"], predicted["delta_ef_pct"]) > 0.95
    model.save(tmp_path)
    on_gpu = surrogate(device="cuda", precision="fp32")
    on_cpu = surrogate(device="cpu", precision="fp32")
    on_gpu.load(tmp_path, morgan())
    on_cpu.load(tmp_path, morgan())
    gpu, cpu = on_gpu.predict(test.inputs), on_cpu.predict(test.inputs)
    for name in ("delta_ef_pct", "is_optimal", "delta_ef_trajectory_pct"):
        np.testing.assert_allclose(gpu[name], cpu[name], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(gpu.std[name], cpu.std[name], rtol=1e-4, atol=1e-5)
    # and the mixed-precision prediction is the fp32 one to the precision's rounding
    np.testing.assert_allclose(predicted["delta_ef_pct"], gpu["delta_ef_pct"], atol=0.05)


def test_two_processes_per_gpu_are_refused_with_a_way_out(monkeypatch):
    import torch

    from hydraopt_plugins.surrogates.hydrabert.training import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ValueError, match=r"process 1 \(LOCAL_RANK\) has no GPU of its own"):
        pick_device("auto")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert pick_device("auto") == torch.device("cuda", 0)
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("design_scale", ["linear", "log"])
def test_the_design_scale_is_saved_and_the_tensor_scorer_applies_it(design_scale, data, tmp_path):
    import torch

    train, validation, test = (d.take(slice(0, 300)) for d in data)
    model = surrogate(epochs=2, design_scale=design_scale, precision="fp32", mc_samples=1)
    model.fit(train, validation, morgan(), tmp_path / "fit", seed=3)
    (tmp_path / "saved").mkdir()
    model.save(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "surrogate.json").read_text())
    logged = {"linear": [], "log": ["conductivity_s_per_m", "stiffness_kpa", "t50_days"]}
    assert saved["log10_features"] == logged[design_scale]
    # The scorer (Stages 2 and 3) scales the raw features as predict() does
    scorer = model.tensor_scorer(POLYMERS)
    scored = scorer(
        torch.as_tensor(test.inputs.features, dtype=torch.float32),
        torch.as_tensor(test.inputs.polymer_index),
        ["delta_ef_pct"],
    )
    np.testing.assert_allclose(
        scored["delta_ef_pct"][0].cpu().numpy(),
        model.predict(test.inputs)["delta_ef_pct"],
        rtol=1e-4,
    )


def test_periodic_embeddings_keep_the_features_and_embed_only_the_chosen_columns():
    import torch

    from hydraopt_plugins.surrogates.hydrabert.numeric_embedding import PeriodicEmbedding

    torch.manual_seed(0)
    embedding = PeriodicEmbedding(5, [1, 3], frequencies=4, sigma=1.0, width=6)
    assert embedding.out_features == 5 + 2 * 6
    x = torch.randn(8, 5)
    out = embedding(x)
    assert out.shape == (8, 17)
    torch.testing.assert_close(out[:, :5], x)  # the scaled features pass through
    changed = x.clone()
    changed[:, [0, 2, 4]] += 1.0  # columns that are not embedded
    torch.testing.assert_close(embedding(changed)[:, 5:], out[:, 5:])
    changed = x.clone()
    changed[:, 3] += 0.5
    moved = (embedding(changed)[:, 5:] - out[:, 5:]).abs().sum(0)
    assert moved[:6].sum() == 0 and moved[6:].sum() > 0  # only column 3's embedding moves
    # Beyond the training range the embedding holds its value at the range's end; the
    # feature itself still passes through as it is.
    embedding.fit_range(x)
    beyond = x.clone()
    beyond[:, 3] = x[:, 3].max() + torch.arange(1.0, 9.0)
    at_end = x.clone()
    at_end[:, 3] = x[:, 3].max()
    torch.testing.assert_close(embedding(beyond)[:, 5:], embedding(at_end)[:, 5:])
    torch.testing.assert_close(embedding(beyond)[:, :5], beyond)


@pytest.mark.parametrize("columns", ["design", "all"])
def test_a_periodic_embedding_trains_saves_and_scores_as_predict_does(columns, data, tmp_path):
    import torch

    train, validation, test = (d.take(slice(0, 300)) for d in data)
    kwargs = {"feature_embedding": "periodic", "periodic_features": columns}
    model = surrogate(epochs=2, precision="fp32", mc_samples=1, **kwargs)
    model.fit(train, validation, morgan(), tmp_path / "fit", seed=3)
    embedding = model._members[0].network.numeric_embedding
    assert embedding.columns.tolist() == (
        [11, 12, 13, 14] if columns == "design" else list(range(15))
    )
    scaled = model._scaled_features(train.inputs.features)[:, embedding.columns.numpy()]
    np.testing.assert_allclose(embedding.low.numpy(), scaled.min(0), rtol=1e-6)
    np.testing.assert_allclose(embedding.high.numpy(), scaled.max(0), rtol=1e-6)
    (tmp_path / "saved").mkdir()
    model.save(tmp_path / "saved")
    loaded = surrogate(epochs=2, precision="fp32", mc_samples=1, **kwargs)
    loaded.load(tmp_path / "saved", morgan())
    saved_range = loaded._members[0].network.numeric_embedding
    torch.testing.assert_close(saved_range.low.cpu(), embedding.low.cpu())
    torch.testing.assert_close(saved_range.high.cpu(), embedding.high.cpu())
    predicted = model.predict(test.inputs)["delta_ef_pct"]
    np.testing.assert_array_equal(loaded.predict(test.inputs)["delta_ef_pct"], predicted)
    scored = loaded.tensor_scorer(POLYMERS)(
        torch.as_tensor(test.inputs.features, dtype=torch.float32),
        torch.as_tensor(test.inputs.polymer_index),
        ["delta_ef_pct"],
    )
    np.testing.assert_allclose(scored["delta_ef_pct"][0].cpu().numpy(), predicted, rtol=1e-4)
    # a surrogate saved with the embedding does not load into a pipeline without it
    with pytest.raises(ValueError, match="other surrogate settings"):
        surrogate(epochs=2, precision="fp32", mc_samples=1).load(tmp_path / "saved", morgan())


def test_rows_are_matched_to_polymers_by_psmiles_not_by_position(data, tmp_path):
    train, validation, _ = (d.take(slice(0, 300)) for d in data)
    reordered = POLYMERS[::-1]
    position = {p.psmiles: i for i, p in enumerate(reordered)}
    index = np.array([position[POLYMERS[i].psmiles] for i in validation.inputs.polymer_index])
    inputs = validation.inputs
    shuffled = TrainingData(
        SurrogateInputs(inputs.features, index, reordered, inputs.patient_id),
        validation.targets,
        SPECS,
    )
    first = surrogate(epochs=2)
    first.fit(train, validation, morgan(), tmp_path / "a", seed=2)
    second = surrogate(epochs=2)
    second.fit(train, shuffled, morgan(), tmp_path / "b", seed=2)
    assert [h["validation_loss"] for h in first.history] == pytest.approx(
        [h["validation_loss"] for h in second.history], rel=1e-6
    )
    np.testing.assert_allclose(
        first.predict(validation.inputs)["delta_ef_pct"],
        second.predict(shuffled.inputs)["delta_ef_pct"],
        rtol=1e-5,
    )


def test_platt_scaling_recovers_the_slope_and_the_criterion_ignores_overconfidence():
    """The epoch-selection criterion of a classification head is its log-loss after Platt
    scaling: a logit multiplied by 5 (overconfident) scores as the logit itself, a logit
    that ranks the rows worse scores worse."""
    import torch

    from hydraopt_plugins.surrogates.hydrabert.losses import fit_platt, recalibrated_log_loss

    generator = torch.Generator().manual_seed(0)
    logit = 3 * torch.randn(50_000, generator=generator)
    label = (torch.rand(50_000, generator=generator) < torch.sigmoid(0.7 * logit - 2)).double()
    slope, intercept = fit_platt(logit, label)
    assert slope == pytest.approx(0.7, abs=0.03) and intercept == pytest.approx(-2, abs=0.06)
    assert fit_platt(5 * logit, label)[0] == pytest.approx(slope / 5, rel=1e-6)
    calibrated = recalibrated_log_loss(logit, label)
    assert recalibrated_log_loss(5 * logit, label) == pytest.approx(calibrated, rel=1e-9)
    blurred = logit + 3 * torch.randn(50_000, generator=generator)
    assert recalibrated_log_loss(blurred, label) > calibrated + 0.02
    assert fit_platt(logit, torch.zeros(50_000)) == (1.0, 0.0)  # one class: nothing to fit


@pytest.mark.parametrize("loss", ["huber", "mse"])
def test_at_beta_one_the_means_learn_as_under_the_heads_loss_whatever_their_variance(loss):
    """beta-NLL weights each row by its predicted variance ** beta (held fixed): at beta 1 the
    gradient on every mean is that of the head's own loss (Huber or MSE), so the rows the
    network fits worst, the largest treatment effects, are not discounted; at beta 0.5 a row
    with 100 times the variance pulls its mean 10 times less."""
    import torch

    from hydraopt_plugins.surrogates import HeadSettings
    from hydraopt_plugins.surrogates.hydrabert.losses import head_loss

    target = torch.tensor([0.0, 0.0, 3.0, 3.0])
    log_var = torch.log(torch.tensor([0.01, 1.0, 0.01, 1.0]))
    valid = torch.ones(4, dtype=torch.bool)

    def mean_gradient(beta: float, heteroscedastic: bool) -> torch.Tensor:
        mean = torch.tensor([0.5, 0.5, 1.0, 1.0], requires_grad=True)
        head = HeadSettings(loss=loss, nll_beta=beta, heteroscedastic=heteroscedastic)
        output = torch.stack([mean, log_var], -1) if heteroscedastic else mean
        head_loss(head, output, target, valid, huber_beta=1.0, pos_weight=1.0).backward()
        return mean.grad

    plain = mean_gradient(1.0, heteroscedastic=False)  # the loss of the means alone
    scale = 1.0 if loss == "huber" else 0.5  # smooth L1 is rho / beta; MSE is 2 rho
    torch.testing.assert_close(mean_gradient(1.0, heteroscedastic=True), scale * plain)
    half = mean_gradient(0.5, heteroscedastic=True)
    torch.testing.assert_close(half[1] / half[0], plain[1] / plain[0] / 10)
    torch.testing.assert_close(half[3] / half[2], plain[3] / plain[2] / 10)
    assert HeadSettings().nll_beta == 1.0


def test_the_weight_average_is_the_mean_of_the_first_steps_then_an_exponential_one():
    """Over the first steps the average is their plain mean (the random initial weights are
    not carried), then each step moves it by 1/horizon; the model holds the average only
    inside ``swapped_in``, and the state round-trips."""
    import torch

    from hydraopt_plugins.surrogates.hydrabert.weight_average import WeightAverage

    model = torch.nn.Linear(2, 1)
    model.bias.requires_grad_(False)  # frozen: never averaged
    average = WeightAverage(model, horizon_steps=3)
    for step in range(1, 6):
        with torch.no_grad():
            model.weight.fill_(float(step))
        average.update()
    # steps 1-3: the mean of 1, 2, 3 = 2; then 2 + (4 - 2) / 3, and that + (5 - it) / 3
    expected = 2.0 + (4.0 - 2.0) / 3
    expected += (5.0 - expected) / 3
    torch.testing.assert_close(average.averaged[0], torch.full((1, 2), expected))
    assert len(average.averaged) == 1
    with average.swapped_in():
        torch.testing.assert_close(model.weight.detach(), torch.full((1, 2), expected))
    assert torch.equal(model.weight.detach(), torch.full((1, 2), 5.0))
    other = WeightAverage(model, horizon_steps=3)
    other.load_state_dict(average.state_dict())
    assert torch.equal(other.averaged[0], average.averaged[0]) and other.updates == 5
    with pytest.raises(ValueError, match="at least one"):
        WeightAverage(model, horizon_steps=0.5)


def test_with_a_weight_average_the_average_is_kept_and_a_killed_training_resumes_alike(
    data, tmp_path
):
    import torch

    train, validation, test = (d.take(slice(0, 300)) for d in data)
    plain = surrogate(epochs=4)
    plain.fit(train, validation, morgan(), tmp_path / "plain", seed=3)
    whole = surrogate(epochs=4, weight_average_epochs=1.0)
    whole.fit(train, validation, morgan(), tmp_path / "whole", seed=3)
    # the same steps, the same training losses; what is judged and kept is the average
    assert [h["train_loss"] for h in whole.history] == [h["train_loss"] for h in plain.history]
    assert [h["validation_loss"] for h in whole.history] != [
        h["validation_loss"] for h in plain.history
    ]
    assert not np.allclose(
        whole.predict(test.inputs)["delta_ef_pct"], plain.predict(test.inputs)["delta_ef_pct"]
    )

    fit_killed(
        surrogate(epochs=4, weight_average_epochs=1.0),
        train,
        validation,
        morgan(),
        tmp_path / "killed",
    )
    saved = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 2 and saved["weight_average"]["updates"] > 0
    resumed = surrogate(epochs=4, weight_average_epochs=1.0)
    resumed.fit(train, validation, morgan(), tmp_path / "killed", seed=3)
    assert [h["validation_loss"] for h in resumed.history] == [
        h["validation_loss"] for h in whole.history
    ]
    np.testing.assert_array_equal(
        resumed.predict(test.inputs)["delta_ef_pct"], whole.predict(test.inputs)["delta_ef_pct"]
    )


def test_an_ensemble_pools_members_trained_from_their_own_seeds_and_resumes_member_by_member(
    data, tmp_path
):
    """A deep ensemble: member k trains as a lone surrogate with seed + k does, the means
    average, the variances mix (the members' mean variance plus the variance of their
    means), and a kill in the second member's training loses only its unfinished epoch."""
    import torch

    train, validation, test = (d.take(slice(0, 300)) for d in data)
    kwargs = {"epochs": 3, "mc_samples": 1, "precision": "fp32"}
    alone = []
    for seed in (3, 4):
        model = surrogate(**kwargs)
        model.fit(train, validation, morgan(), tmp_path / f"alone-{seed}", seed=seed)
        alone.append(model)
    lines: list[str] = []
    ensemble = surrogate(ensemble_members=2, **kwargs)
    # The first member's folder holds the lone seed-3 training: an ensemble grows from it.
    ensemble.fit(train, validation, morgan(), tmp_path / "alone-3", seed=3, report=lines.append)
    assert lines[0] == "member 1/2: resuming after epoch 3 (from {})".format(
        tmp_path / "alone-3" / "checkpoint.pt"
    )
    assert [h["member"] for h in ensemble.history] == [1, 1, 1, 2, 2, 2]
    for member, model in enumerate(alone, start=1):
        mine = [h for h in ensemble.history if h["member"] == member]
        assert [h["train_loss"] for h in mine] == [h["train_loss"] for h in model.history]

    name = "delta_ef_pct"
    pooled = ensemble.predict(test.inputs)
    means = [model.predict(test.inputs)[name] for model in alone]
    np.testing.assert_allclose(pooled[name], np.mean(means, axis=0), rtol=1e-5, atol=1e-6)
    # each member's own spread, before its calibration factor
    own = [m.predict(test.inputs).std[name] / m._meta["std_scale"][name] for m in alone]
    mixed = np.sqrt(((means[0] - means[1]) / 2) ** 2 + (own[0] ** 2 + own[1] ** 2) / 2)
    np.testing.assert_allclose(
        pooled.std[name], mixed * ensemble._meta["std_scale"][name], rtol=1e-4
    )
    assert np.all(np.abs(means[0] - means[1]) > 0)

    scored = ensemble.tensor_scorer(POLYMERS)(
        torch.as_tensor(test.inputs.features, dtype=torch.float32),
        torch.as_tensor(test.inputs.polymer_index),
    )
    for output in (name, "is_optimal", "bz_stress_reduction_pct"):
        np.testing.assert_allclose(scored[output][0].numpy(), pooled[output], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(
            scored[output][1].numpy(), pooled.std[output], rtol=1e-4, atol=1e-5
        )

    (tmp_path / "saved").mkdir()
    ensemble.save(tmp_path / "saved")
    assert (tmp_path / "saved" / "model-2.safetensors").is_file()
    loaded = surrogate(ensemble_members=2, **kwargs)
    loaded.load(tmp_path / "saved", morgan())
    np.testing.assert_array_equal(loaded.predict(test.inputs)[name], pooled[name])
    with pytest.raises(ValueError, match="saved with other surrogate settings"):
        surrogate(**kwargs).load(tmp_path / "saved", morgan())
    (tmp_path / "saved" / "model-2.safetensors").unlink()
    with pytest.raises(ValueError, match=r"model-2\.safetensors: cannot read"):
        surrogate(ensemble_members=2, **kwargs).load(tmp_path / "saved", morgan())

    # Killed in the second member's second epoch (the fifth validation pass of all).
    fit_killed(
        surrogate(ensemble_members=2, **kwargs),
        train,
        validation,
        morgan(),
        tmp_path / "killed",
        in_validation_pass=5,
    )
    checkpoint = tmp_path / "killed" / "member-2" / "checkpoint.pt"
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    lines = []
    resumed = surrogate(ensemble_members=2, **kwargs)
    resumed.fit(train, validation, morgan(), tmp_path / "killed", seed=3, report=lines.append)
    assert lines[0].startswith("member 1/2: resuming after epoch 3")
    assert any(line.startswith("member 2/2: resuming after epoch 1") for line in lines)
    np.testing.assert_array_equal(resumed.predict(test.inputs)[name], pooled[name])


def test_with_lora_each_member_of_an_ensemble_adapts_its_own_encoder(
    data, tmp_path, polybert_folder
):
    import torch

    train, validation, test = (d.take(slice(0, 200)) for d in data)
    kwargs = {"epochs": 1, "mc_samples": 1, "precision": "fp32", "ensemble_members": 2}
    ensemble = surrogate(**kwargs)
    ensemble.fit(train, validation, polybert(polybert_folder), tmp_path / "fit", seed=5)
    first, second = (m.embedding.encoder for m in ensemble._members)
    assert first is not second
    adapters = [
        {k: v for k, v in module.state_dict().items() if "lora_A" in k}
        for module in (first, second)
    ]
    assert adapters[0].keys() == adapters[1].keys() and adapters[0]
    assert any(not torch.equal(adapters[0][k], adapters[1][k]) for k in adapters[0])
    psmiles = [p.psmiles for p in POLYMERS]
    assert not np.allclose(ensemble._embeddings(0, psmiles), ensemble._embeddings(1, psmiles))
    (tmp_path / "saved").mkdir()
    ensemble.save(tmp_path / "saved")
    loaded = surrogate(**kwargs)
    loaded.load(tmp_path / "saved", polybert(polybert_folder))
    np.testing.assert_allclose(
        loaded.predict(test.inputs)["delta_ef_pct"],
        ensemble.predict(test.inputs)["delta_ef_pct"],
        rtol=1e-5,
        atol=1e-6,
    )
