"""The policy stage: a PPO policy trained on the training patients' surrogate rewards proposes
every patient's best designs; it refuses a surrogate that does not cover the study, a reward
no head can give and a library too small to choose from, before anything trains."""

import json

import numpy as np
import pytest

from hydraopt.config import load_pipeline
from hydraopt.domain import Cohort, DesignSpace
from hydraopt.errors import HydraoptError
from hydraopt.polymer_library import read_polymer_library
from hydraopt.registry import PluginRegistry
from hydraopt.store import RunStore
from hydraopt.trained_surrogate import (
    domain_problems,
    patient_extrapolation,
    patient_splits,
    report_extrapolation,
)
from hydraopt.validation import validate_inputs

from conftest import run_quietly

POLYMERS = ["gelma-lowdom", "alginate-ik5001", "fibrin", "pedot-pss"]
PIPELINE = f"""\
[study]
name = "pol"
seed = 3
output_dir = "runs"

[cohort]
n_patients = 6
chronic_fraction = 0.5

[polymers]
include = {json.dumps(POLYMERS)}

[dataset]
designs_per_patient = 16
generator = {{ plugin = "sobol", scramble = true, within_polymer_ranges = true }}
is_optimal = {{ delta_ef_pct = 0.05, bz_stress_reduction_pct = 0.0 }}
splits = {{ train = 0.5, validation = 0.25, test = 0.25 }}

[mesh]
element_size_mm = 8.0

[simulators.reference-mechanics]

[surrogate]
plugin = "hydrabert"
epochs = 3
batch_size = 16
fusion_dim = 32
smiles_dim = 16
adapter_hidden = 16
mc_samples = 2

[surrogate.heads.delta_ef_pct]
hidden = [16]

[surrogate.heads.is_optimal]
kind = "classification"
loss = "focal"
hidden = [8]

[encoder]
plugin = "morgan"
fp_size = 128

[train]
baselines = []
leave_polymer_out = 0.0

[policy]
plugin = "ppo"
episodes = 40
num_envs = 8
rollout_steps = 5
hidden = 32

[reward]
weights = {{ delta_ef_pct = 1.0, is_optimal = 0.2 }}
uncertainty = {{ delta_ef_pct = 0.1 }}

[environment]
episode_steps = 5

[proposals]
per_patient = 3
episodes = 2

[execution]
workers = 1
"""


@pytest.fixture(scope="module")
def registry():
    return PluginRegistry.discover()


@pytest.fixture(scope="module")
def study(tmp_path_factory, registry):
    folder = tmp_path_factory.mktemp("policy")
    path = folder / "pipeline.toml"
    path.write_text(PIPELINE, encoding="utf-8")
    summary = run_quietly(path, registry)
    assert summary.ok and "policy" in summary.ran, summary
    return path, summary.run_dir


def test_every_patient_gets_ranked_makeable_designs_from_the_trained_policy(study):
    _, run_dir = study
    store = RunStore(run_dir)
    policy = store.folder("policy")
    for name in ("policy.json", "policy.safetensors", "history.csv", "training_curve.png"):
        assert (policy.path / name).exists(), name
    assert policy.meta["surrogate_rows_scored"] == 40 * 5  # the budget, all scored
    assert len(policy.meta["training_patients"]) == 3
    proposals = store.tables("proposals")
    table = proposals.table("designs")
    cohort = Cohort.from_columns(store.tables("cohort").table("patients"))
    assert set(table["patient_id"]) == set(cohort.ids)
    library = read_polymer_library(None).subset(POLYMERS)
    for patient_id in cohort.ids:
        mine = table["patient_id"] == patient_id
        assert 1 <= mine.sum() <= 3
        assert table["rank"][mine].tolist() == list(range(1, mine.sum() + 1))
        feasible = table["feasible"][mine]
        assert np.all(np.diff(table["reward"][mine][feasible]) <= 0)
    for row in np.flatnonzero(table["feasible"]):
        polymer = library[library.index(str(table["polymer"][row]))]
        assert (
            polymer.stiffness_kpa.low <= table["stiffness_kpa"][row] <= polymer.stiffness_kpa.high
        )
    assert np.all(np.isfinite(table["predicted_delta_ef_pct"]))
    assert np.all(table["predicted_delta_ef_pct_std"] > 0)
    assert proposals.meta["surrogate_rows_per_patient"] == 2 * 5


def test_a_second_run_reuses_the_trained_policy(study, registry):
    path, _ = study
    summary = run_quietly(path, registry)
    assert summary.ok and "policy" not in summary.ran


def loaded_surrogate(study, registry):
    path, run_dir = study
    pipeline = load_pipeline(path, registry)
    encoder = registry.handle("encoder", "morgan", pipeline.plugin_settings[("encoder",)])
    surrogate = registry.handle(
        "surrogate", "hydrabert", pipeline.plugin_settings[("surrogate",)]
    ).build_new()
    surrogate.load(RunStore(run_dir).folder("surrogate").path, encoder.build())
    return pipeline, surrogate


def test_the_tensor_scorer_agrees_with_predict_and_encodes_patients(study, registry):
    import torch

    from hydraopt.config import RewardConfig
    from hydraopt.design_environment import DesignEnvironment, DesignReward, PatientScaling
    from hydraopt.domain import PolymerInput, SurrogateInputs

    _, surrogate = loaded_surrogate(study, registry)
    # fp32: the scorer folds the fusion's first layer, predict() does not, and under bf16
    # autocast (the default on a CPU with native bf16) the two round differently.
    surrogate.settings = surrogate.settings.model_copy(update={"precision": "fp32"})
    _, run_dir = study
    cohort = Cohort.from_columns(RunStore(run_dir).tables("cohort").table("patients"))
    space = DesignSpace(read_polymer_library(None).subset(POLYMERS))
    polymers = tuple(PolymerInput(p.name, p.psmiles, p.category) for p in space.polymers)
    designs = space.designs_from_unit(
        np.arange(8) % 4, np.arange(8) % 4, np.random.default_rng(0).random((8, 4))
    )
    patient = next(iter(cohort))
    inputs = SurrogateInputs.for_designs(patient, designs)
    inputs = SurrogateInputs(inputs.features, designs.polymer_index, polymers, inputs.patient_id)
    scorer = surrogate.tensor_scorer(polymers)
    scored = scorer(
        torch.as_tensor(inputs.features, dtype=torch.float32),
        torch.as_tensor(designs.polymer_index),
        ["delta_ef_pct"],
    )
    assert list(scored) == ["delta_ef_pct"]  # only what was asked for
    surrogate.settings = surrogate.settings.model_copy(update={"mc_samples": 1})
    predicted = surrogate.predict(inputs)
    np.testing.assert_allclose(
        scored["delta_ef_pct"][0].numpy(), predicted["delta_ef_pct"], rtol=1e-4
    )
    np.testing.assert_allclose(
        scored["delta_ef_pct"][1].numpy(), predicted.std["delta_ef_pct"], rtol=1e-4
    )
    features = np.stack([p.features() for p in cohort])
    reward = DesignReward(space, scorer, RewardConfig())
    env = DesignEnvironment(reward, features, 4, 3, PatientScaling.of(features), True)
    observation, _ = env.reset(seed=0)
    width = surrogate.settings.property_dim
    assert env.observation_dim == 11 + width + len(POLYMERS) + 4 + 4 + 3
    assert torch.isfinite(observation).all()


def test_a_surrogate_that_never_saw_a_polymer_or_a_range_is_refused(study, registry):
    pipeline, surrogate = loaded_surrogate(study, registry)
    config = pipeline.config
    library = read_polymer_library(None)
    assert domain_problems(surrogate, DesignSpace(library.subset(POLYMERS))) == []
    problems = domain_problems(surrogate, DesignSpace(library.subset([*POLYMERS, "matrigel"])))
    assert problems == [
        "polymer 'matrigel' (" + library[library.index("matrigel")].psmiles + ") is not among the "
        "surrogate's training polymers"
    ]
    from hydraopt.config import build_design_space

    wide = config.design_space.model_copy(
        update={
            "conductivity_s_per_m": config.design_space.conductivity_s_per_m.model_copy(
                update={"max": 100.0}
            )
        }
    )
    problems = domain_problems(surrogate, build_design_space(wide, library.subset(POLYMERS)))
    assert len(problems) == 1 and problems[0].startswith("design_space.conductivity_s_per_m")
    assert "beyond the surrogate's training range" in problems[0]


def test_a_patient_outside_the_surrogates_training_patients_is_named(study, registry):
    import dataclasses

    _, surrogate = loaded_surrogate(study, registry)
    _, run_dir = study
    cohort = Cohort.from_columns(RunStore(run_dir).tables("cohort").table("patients"))
    splits = patient_splits(RunStore(run_dir).tables("dataset"))
    trained = next(p for p in cohort if splits[p.patient_id] == "train")
    assert patient_extrapolation(surrogate, trained) == []
    low, high = surrogate.training_domain.feature_ranges["wall_thickness_mm"]
    thick = dataclasses.replace(trained, patient_id="THICK", wall_thickness_mm=high + 1.0)
    assert patient_extrapolation(surrogate, thick) == [
        f"wall_thickness_mm {high + 1.0:.4g} mm (trained on {low:.4g} to {high:.4g})"
    ]
    low, _ = surrogate.training_domain.feature_ranges["transmurality"]
    assert low > 0.05  # the study's training patients all have some transmural scar
    shallow = dataclasses.replace(trained, transmurality=low - 0.05)
    assert patient_extrapolation(surrogate, shallow)[0].startswith(  # no unit printed for "1"
        f"transmurality {low - 0.05:.4g} (trained on"
    )
    lines: list[str] = []
    report_extrapolation(surrogate, [trained, thick], lines.append, "screen")
    assert len(lines) == 1 and "patient THICK lies outside" in lines[0]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            ("uncertainty = { delta_ef_pct = 0.1 }", "uncertainty = { qrs_ms = 0.1 }"),
            "reward: no surrogate head predicts 'qrs_ms'",
        ),
        (
            (f"include = {json.dumps(POLYMERS)}", 'include = ["fibrin"]'),
            "the library holds 1 polymer(s)",
        ),
        (
            (
                "weights = { delta_ef_pct = 1.0, is_optimal = 0.2 }",
                "weights = { delta_ef_pct = 0.0 }",
            ),
            "every weight is zero",
        ),
    ],
)
def test_bad_reward_or_library_is_reported_before_anything_runs(tmp_path, registry, edit, message):
    path = tmp_path / "pipeline.toml"
    path.write_text(PIPELINE.replace(*edit), encoding="utf-8")
    try:
        problems = validate_inputs(load_pipeline(path, registry), registry)
    except HydraoptError as exc:
        problems = [str(exc)]
    assert any(message in p for p in problems), problems
