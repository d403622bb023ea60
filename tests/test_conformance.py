"""Every plugin hydraopt ships passes the conformance check of its kind, the one a third-party
author runs (hydraopt.testing), and each check catches what it is there to catch."""

import numpy as np
import pytest
from pydantic import Field

from hydraopt.plugin_types import NoSettings, PluginSettings
from hydraopt.registry import PluginRegistry
from hydraopt.testing import (
    EXAMPLE_OUTPUTS,
    check_encoder_plugin,
    check_filter_plugin,
    check_generator_plugin,
    check_mesher_plugin,
    check_policy_plugin,
    check_surrogate_plugin,
)


@pytest.fixture(scope="module")
def registry():
    return PluginRegistry.discover()


def registration(registry, kind, name):
    return registry.get(kind, name).registration


def test_the_lv_mesher(registry, patient):
    mesh = check_mesher_plugin(
        registration(registry, "mesher", "lv-ellipsoid"), {"element_size_mm": 8.0}, patient
    )
    assert mesh.patient_id == patient.patient_id


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("random", {}),
        ("sobol", {}),
        ("latin-hypercube", {}),
        ("grid", {"stiffness_kpa": 3, "t50_days": 2, "conductivity_s_per_m": 2, "thickness_mm": 2}),
        ("grid-lhs", {}),
    ],
)
def test_the_generators(registry, name, settings):
    check_generator_plugin(registration(registry, "generator", name), settings)


def test_the_policy_generator_around_proposals(registry):
    """It samples around a patient's policy proposals, which the design engine binds."""
    from hydraopt.testing import check_generator, check_registration, example_designs

    generator = check_registration(registration(registry, "generator", "policy"))
    check_generator(generator.around(example_designs(3)), example_designs(3).space)


@pytest.mark.parametrize(("name", "settings"), [("morgan", {"fp_size": 256}), ("none", {})])
def test_the_offline_encoders(registry, name, settings):
    check_encoder_plugin(registration(registry, "encoder", name), settings)


def test_polybert_with_lora_from_a_local_folder(registry, tmp_path_factory):
    from hydraopt.testing import example_psmiles
    from hydraopt_plugins.encoders.polybert_untrained import write_untrained_polybert

    folder = write_untrained_polybert(tmp_path_factory.mktemp("polybert"), example_psmiles() * 5)
    embedded = check_encoder_plugin(
        registration(registry, "encoder", "polybert"), {"model": str(folder), "lora": True}
    )
    assert embedded.shape[1] > 0


def test_the_hydrabert_surrogate(registry):
    small = {
        "epochs": 3,
        "batch_size": 32,
        "fusion_dim": 32,
        "smiles_dim": 16,
        "adapter_hidden": 16,
        "mc_samples": 4,
    }
    predicted = check_surrogate_plugin(registration(registry, "surrogate", "hydrabert"), small)
    assert set(predicted.mean.names) == {"delta_ef_pct", "is_optimal", "bz_stress_reduction_pct"}


def test_the_ppo_policy(registry):
    small = {"episodes": 48, "num_envs": 8, "rollout_steps": 4, "hidden": 16}
    action = check_policy_plugin(registration(registry, "policy", "ppo"), small)
    assert len(action.polymer) == 8


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("threshold", {}),
        ("top-percent", {"by": "reward"}),
        ("diversity", {}),
        ("pareto", {}),
    ],
)
def test_the_filters(registry, name, settings):
    check_filter_plugin(registration(registry, "filter", name), settings)


def test_the_simulate_filter_with_a_simulator(registry, patient, lv_mesh):
    from hydraopt.testing import example_candidates

    mechanics = registry.create(
        "simulator",
        "reference-mechanics",
        registry.validate_settings("simulator", "reference-mechanics", {}),
    )
    selection = check_filter_plugin(
        registration(registry, "filter", "simulate"),
        {"keep": 4},
        example_candidates(n=8, patient=patient),
        {"reference-mechanics": mechanics},
        lv_mesh,
    )
    assert len(selection.keep) == 4
    assert np.isfinite(selection.columns["simulated_delta_ef_pct"]).all()


# ---- the checks catch what they are there to catch ------------------------------------------


class _Detaching:
    """Starts a program in a session of its own, out of reach of the core's timeout kill."""

    outputs = EXAMPLE_OUTPUTS[:1]
    SECONDS = 4

    def __init__(self, settings) -> None:
        self.wait = settings.wait

    def simulate(self, patient, mesh, designs, workdir):
        import subprocess

        from hydraopt.domain import Outcomes

        program = subprocess.Popen(["sleep", str(self.SECONDS)], start_new_session=True)
        if self.wait:
            program.wait()
        failed = np.logical_or.reduce(list(designs.outside_polymer_range().values()))
        reasons = np.where(failed, "outside its polymer's ranges", "").astype(object)
        values = {"delta_ef_pct": np.where(failed, np.nan, 0.0)}
        return Outcomes(self.outputs, values, failed, reasons)


class DetachingSettings(PluginSettings):
    wait: bool = Field(True, description="Wait for the program before returning.")


@pytest.mark.parametrize(
    ("wait", "message"),
    [
        (False, "returned but left processes running: pid \\d+: sleep 4"),
        (True, "was stopped at a timeout of 2 s.*survived: pid \\d+: sleep 4"),
    ],
)
def test_the_simulator_check_finds_programs_that_outlive_the_evaluation(wait, message):
    from hydraopt.plugin_types import SimulatorPlugin
    from hydraopt.testing import check_simulator_plugin, example_designs

    registration = SimulatorPlugin(
        name="detaching", factory=_Detaching, settings=DetachingSettings, description="x"
    )
    with pytest.raises(AssertionError, match=message):
        check_simulator_plugin(
            registration, {"wait": wait}, designs=example_designs(2), timeout_s=30.0
        )


def test_the_encoder_check_wants_an_unreadable_psmiles_refused_by_name():
    from hydraopt.testing import ExampleEncoder, check_encoder

    class Lenient(ExampleEncoder):
        def encode(self, psmiles):
            return np.zeros((len(psmiles), self.embedding_dim), dtype=np.float32)

    with pytest.raises(AssertionError, match="encode accepted '\\[\\*\\]CC\\(C\\[\\*\\]'"):
        check_encoder(Lenient())


def test_the_surrogate_check_wants_one_prediction_per_row_whatever_its_batch(registry):
    """A surrogate whose answer for a row depends on its batch (as per-row MC dropout does)."""
    from hydraopt.plugin_types import SurrogatePlugin

    registration = SurrogatePlugin(
        name="batch-mean", factory=BatchMean, settings=NoSettings, description="x"
    )
    with pytest.raises(AssertionError, match="a row predicted in another batch"):
        check_surrogate_plugin(registration)


class BatchMean:
    """Predicts each row as its batch's mean delta-EF: wrong for a surrogate, as the check
    says."""

    def __init__(self, settings) -> None:
        self.outputs = EXAMPLE_OUTPUTS[:1]
        self.level = 0.0

    def fit(self, train, validation, encoder, workdir, seed=0, report=None):
        self.level = float(train.targets["delta_ef_pct"].mean())
        return {"validation_mae": 1.0}

    def predict(self, inputs):
        from hydraopt.domain import Outcomes, Predictions

        shift = inputs.features[:, 14].mean() * 1e-2  # the batch's mean thickness
        values = np.full(len(inputs), self.level + shift)
        return Predictions(
            Outcomes(self.outputs, {"delta_ef_pct": values}), {"delta_ef_pct": np.ones(len(inputs))}
        )

    def save(self, directory):
        (directory / "level.txt").write_text(str(self.level))

    def load(self, directory, encoder):
        self.level = float((directory / "level.txt").read_text())


def test_the_policy_check_wants_load_to_refuse_another_environment(registry):
    from hydraopt.plugin_types import PolicyPlugin

    registration = PolicyPlugin(
        name="trusting", factory=Trusting, settings=NoSettings, description="x"
    )
    with pytest.raises(AssertionError, match="loaded a policy trained for another environment"):
        check_policy_plugin(registration)


class Trusting:
    """Always the first polymer and coverage at the centre of the unit cube; loads anything."""

    def __init__(self, settings) -> None:
        pass

    def fit(self, make_environment, workdir, seed=0, report=None):
        return {}

    def act(self, observations, deterministic=False):
        import torch

        from hydraopt.design_environment import DesignAction

        n = len(observations)
        zeros = torch.zeros(n, dtype=torch.long)
        return DesignAction(zeros, zeros, torch.full((n, 4), 0.5))

    def save(self, directory):
        (directory / "policy.txt").write_text("centre")

    def load(self, directory, environment):
        (directory / "policy.txt").read_text()


def test_the_filter_check_wants_a_rowwise_filter_to_judge_rows_alone():
    from hydraopt.plugin_types import FilterPlugin, Selection

    class BestFour:
        rowwise = True  # but it is not: the best four are the batch's
        reads = ("reward",)

        def __init__(self, settings) -> None:
            pass

        def select(self, candidates, context):
            reward = candidates["reward"]
            return Selection(np.sort(np.argsort(-reward)[:4]))

    registration = FilterPlugin(
        name="best-four", factory=BestFour, settings=NoSettings, description="x"
    )
    with pytest.raises(AssertionError, match="rowwise filter keeps other candidates"):
        check_filter_plugin(registration)
