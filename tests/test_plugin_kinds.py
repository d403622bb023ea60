"""Every plugin kind works end to end through a third-party distribution."""

from pathlib import Path

import numpy as np
import pytest

from hydraopt.registry import PluginRegistry
from hydraopt.testing import (
    check_simulator,
    example_designs,
    example_mesh,
    example_patient,
    example_space,
)

from plugin_sources import EVERY_KIND


@pytest.fixture
def registry(install_distribution):
    install_distribution("acme-cardio", "0.9.1", "acme_cardio", EVERY_KIND)
    return PluginRegistry.discover()


def build(registry, kind, name, **settings):
    return registry.create(kind, name, registry.validate_settings(kind, name, settings))


def test_simulator_conforms_and_uses_its_settings(registry):
    plugin = registry.get("simulator", "laplace-wall-stress")
    assert (plugin.package, plugin.version) == ("acme-cardio", "2.0")
    designs = build(registry, "generator", "sobol").generate(
        example_space(), 16, np.random.default_rng(0)
    )
    outcomes = check_simulator(
        build(registry, "simulator", "laplace-wall-stress"),
        example_patient(),
        example_mesh(),
        designs,
    )
    higher = build(registry, "simulator", "laplace-wall-stress", systolic_pressure_mmhg=140.0)
    raised = higher.simulate(example_patient(), example_mesh(), designs, None)
    assert np.all(raised["wall_stress_kpa"] > outcomes["wall_stress_kpa"])
    thick = np.argmax(designs.thickness_mm)
    assert outcomes["wall_stress_kpa"][thick] == outcomes["wall_stress_kpa"].min()


def test_example_designs_need_no_generator_and_are_all_makeable(registry):
    designs = example_designs(8)
    assert len(designs) == 8
    assert not np.logical_or.reduce(list(designs.outside_polymer_range().values())).any()
    assert set(designs.coverage_index.tolist()) == {0, 1, 2, 3}
    assert set(designs.polymer_index.tolist()) == {0, 1}
    np.testing.assert_array_equal(example_designs(8).stiffness_kpa, designs.stiffness_kpa)
    outcomes = check_simulator(
        build(registry, "simulator", "laplace-wall-stress"),
        example_patient(),
        example_mesh(),
        designs,
    )
    assert not outcomes.failed.any()


# The reference electrophysiology steps a batch's lanes together: a design's result depends on
# its lane-mates within the scheme's accuracy, up to 0.55% on this coarse mesh
# (docs/physics.md §3.1).
@pytest.mark.parametrize(
    ("name", "batch_rtol"),
    [("reference-mechanics", 1e-9), ("reference-ep", 1e-2), ("thick-wall-stress", 1e-9)],
)
def test_simulators_pass_the_registration_check(registry, patient, make_designs, name, batch_rtol):
    """Built in or installed from their own package: settings that refuse unknown keys and
    pickle, a deterministic simulator with declared outputs whose results do not depend on
    the batch, nothing written outside its working directory, the evaluation's timeout
    honoured in a worker process."""
    from hydraopt.testing import check_simulator_plugin
    from hydraopt_simulators.lv_mesh.builder import EllipsoidMesher, EllipsoidMeshSettings

    mesh = EllipsoidMesher(EllipsoidMeshSettings(element_size_mm=8.0)).build(patient)
    designs = make_designs(
        ["meha", "pegda-3400"],
        ["scar_bz50", "scar_only"],
        [20.0, 40.0],
        [90.0, 180.0],
        [0.02, 0.02],
        [1.0, 2.0],
    )
    # Rebuilt and run in a worker process under a timeout, as a run does, and stopped half-way.
    outcomes = check_simulator_plugin(
        registry.get("simulator", name).registration,
        {},
        patient,
        mesh,
        designs,
        timeout_s=300,
        batch_rtol=batch_rtol,
    )
    assert not outcomes.failed.any(), outcomes.failure_reason


# Settings a plugin cannot do without; plugins that need what this machine has not
# (polyBERT's downloaded weights) are checked without being built.
REQUIRED_SETTINGS = {("filter", "simulate"): {"keep": 10}}
NEEDS_DOWNLOADS = {("encoder", "polybert")}


def test_every_installed_plugins_registration_passes_the_check():
    """Every plugin of every kind hydraopt finds (its own and the example package's)."""
    from hydraopt.testing import check_registration

    checked = 0
    for plugin in PluginRegistry.discover():
        if plugin.package not in ("hydraopt", "hydraopt-thick-wall"):
            continue
        key = (plugin.kind, plugin.name)
        check_registration(
            plugin.registration, REQUIRED_SETTINGS.get(key), build=key not in NEEDS_DOWNLOADS
        )
        checked += 1
    assert checked >= 22


def test_the_registration_check_catches_settings_that_take_any_key():
    from pydantic import BaseModel

    from hydraopt.plugin_types import SimulatorPlugin
    from hydraopt.testing import check_simulator_plugin

    class Loose(BaseModel):  # not a PluginSettings: unknown keys slip through
        pressure_mmhg: float = 100.0

    registration = SimulatorPlugin(
        name="loose", factory=lambda s: None, settings=Loose, description="loose settings"
    )
    with pytest.raises(AssertionError, match="accept an unknown key"):
        check_simulator_plugin(registration)


def test_the_registration_check_catches_writes_outside_the_working_directory():
    from hydraopt.domain import Outcomes, OutputSpec
    from hydraopt.plugin_types import NoSettings, SimulatorPlugin
    from hydraopt.testing import check_simulator_plugin

    class Litter:
        outputs = (OutputSpec("x", "1", ""),)

        def __init__(self, settings): ...

        def simulate(self, patient, mesh, designs, workdir):
            Path("scratch.txt").write_text("left behind")  # the current directory
            failed = np.logical_or.reduce(list(designs.outside_polymer_range().values()))
            reasons = np.where(failed, "outside its polymer's ranges", "").astype(object)
            return Outcomes(self.outputs, {"x": np.where(failed, np.nan, 0.0)}, failed, reasons)

    registration = SimulatorPlugin(
        name="litter", factory=Litter, settings=NoSettings, description="leaves files"
    )
    with pytest.raises(AssertionError, match=r"wrote \['scratch\.txt'\] into the current"):
        check_simulator_plugin(registration)


def test_encoder_surrogate_and_policy(registry):
    encoder = build(registry, "encoder", "atom-count")
    embedding = encoder.encode(["[*]CCO[*]", "[*]c1ccc([*])[nH]1"])
    assert embedding.shape == (2, encoder.embedding_dim)
    assert embedding[0].tolist() == [2, 0, 1, 0]


def test_a_third_party_policy_proposes_through_a_surrogate_without_a_tensor_path(
    registry, tmp_path
):
    from dataclasses import replace

    from hydraopt.config import RewardConfig
    from hydraopt.design_environment import (
        DesignEnvironment,
        DesignReward,
        PatientScaling,
        PredictScorer,
        scorer_for,
    )
    from hydraopt.domain import PolymerInput, SurrogateInputs, TrainingData
    from hydraopt.proposals import propose

    space = example_space()
    simulator = build(registry, "simulator", "laplace-wall-stress")
    designs = build(registry, "generator", "random").generate(space, 24, np.random.default_rng(0))
    patients = [replace(example_patient(), patient_id=f"P{i}") for i in range(2)]
    data = [
        TrainingData(
            SurrogateInputs.for_designs(p, designs),
            {
                "wall_stress_kpa": simulator.simulate(p, example_mesh(p), designs, tmp_path)[
                    "wall_stress_kpa"
                ]
            },
            simulator.outputs,
        )
        for p in patients
    ]
    surrogate = build(registry, "surrogate", "thickness-surrogate")
    surrogate.fit(data[0], data[1], build(registry, "encoder", "atom-count"), tmp_path)
    polymers = tuple(PolymerInput(p.name, p.psmiles, p.category) for p in space.polymers)
    scorer = scorer_for(surrogate, polymers)
    assert isinstance(scorer, PredictScorer)  # it has no tensor path: predict() is wrapped
    reward = DesignReward(space, scorer, RewardConfig(weights={"wall_stress_kpa": -1.0}))
    features = np.stack([p.features() for p in patients])
    scaling = PatientScaling.of(features)
    policy = build(registry, "policy", "thickest")
    policy.fit(lambda n: DesignEnvironment(reward, features, n, 3, scaling), tmp_path)
    found = propose(policy, reward, features, scaling, 3, 2, 4)
    thickest = space.parameter("thickness_mm").high
    for proposals in found:
        assert len(proposals.designs) == 1  # one distinct design, visited six times
        assert proposals.designs.thickness_mm[0] == pytest.approx(thickest)
        assert len(proposals.visited_reward) == 6
    assert reward.rows_scored == 2 * 2 * 3


def test_a_surrogate_is_fitted_on_held_out_patients_saved_and_loaded(registry, tmp_path):
    from dataclasses import replace

    from hydraopt.domain import SurrogateInputs, TrainingData

    space = example_space()
    simulator = build(registry, "simulator", "laplace-wall-stress")
    generator = build(registry, "generator", "random")

    def rows(patient_id, seed):
        patient = replace(example_patient(), patient_id=patient_id)
        designs = generator.generate(space, 32, np.random.default_rng(seed))
        outcomes = simulator.simulate(patient, example_mesh(patient), designs, tmp_path)
        return TrainingData(
            SurrogateInputs.for_designs(patient, designs),
            {"wall_stress_kpa": outcomes["wall_stress_kpa"]},
            simulator.outputs,
        )

    train, held_out = rows("P0", 0), rows("P3", 3)
    surrogate = build(registry, "surrogate", "thickness-surrogate")
    encoder = build(registry, "encoder", "atom-count")
    metrics = surrogate.fit(train, held_out, encoder, tmp_path)
    target = held_out.targets["wall_stress_kpa"]
    baseline = np.abs(target - target.mean()).mean()  # predicting the mean
    assert set(metrics) == {"validation_mae_kpa"} and metrics["validation_mae_kpa"] < baseline
    surrogate.save(tmp_path)
    restored = build(registry, "surrogate", "thickness-surrogate")
    restored.load(tmp_path, encoder)
    predicted = restored.predict(held_out.inputs)
    np.testing.assert_array_equal(
        predicted["wall_stress_kpa"], surrogate.predict(held_out.inputs)["wall_stress_kpa"]
    )
    assert predicted.mean.units() == {"wall_stress_kpa": "kPa"}
    assert predicted.std["wall_stress_kpa"].shape == (32,)


def test_check_simulator_catches_a_broken_simulator(registry):
    simulator = build(registry, "simulator", "laplace-wall-stress")
    simulator.outputs = (*simulator.outputs, simulator.outputs[0])
    designs = build(registry, "generator", "random").generate(
        example_space(), 4, np.random.default_rng(0)
    )
    with pytest.raises(AssertionError, match="duplicate output names"):
        check_simulator(simulator, example_patient(), example_mesh(), designs)


def test_mesher_kind(registry):
    mesh = build(registry, "mesher", "slab").build(example_patient())
    assert mesh.patient_id == example_patient().patient_id
    assert len(mesh.tetrahedra) == 6 * 8 * 8 * 3


def test_the_design_engine_screens_with_a_third_party_surrogate_and_simulator(registry, tmp_path):
    """Stage 3 through plugins it has never seen: a surrogate with predict() only, scored in
    chunks; the built-in simulate and pareto filters run the third party's simulator."""
    from dataclasses import replace

    from hydraopt.config import RewardConfig
    from hydraopt.design_engine import Link, screen_patient
    from hydraopt.design_environment import DesignReward, scorer_for
    from hydraopt.domain import PolymerInput, SurrogateInputs, TrainingData
    from hydraopt.plugin_types import FilterContext
    from hydraopt.screen_unit import PatientScoring

    space = example_space()
    simulator = build(registry, "simulator", "laplace-wall-stress")
    designs = build(registry, "generator", "random").generate(space, 24, np.random.default_rng(0))
    patient = example_patient()
    rows = [
        TrainingData(
            SurrogateInputs.for_designs(p, designs),
            {
                "wall_stress_kpa": simulator.simulate(p, example_mesh(p), designs, tmp_path)[
                    "wall_stress_kpa"
                ]
            },
            simulator.outputs,
        )
        for p in (replace(patient, patient_id="P0"), replace(patient, patient_id="P1"))
    ]
    surrogate = build(registry, "surrogate", "thickness-surrogate")
    surrogate.fit(rows[0], rows[1], build(registry, "encoder", "atom-count"), tmp_path)
    polymers = tuple(PolymerInput(p.name, p.psmiles, p.category) for p in space.polymers)
    reward = DesignReward(
        space, scorer_for(surrogate, polymers), RewardConfig(weights={"wall_stress_kpa": -1.0})
    )
    scoring = PatientScoring(surrogate, reward, patient, set())
    links = [
        Link(1, "top-percent", {}, build(registry, "filter", "top-percent", percent=20.0)),
        Link(
            2,
            "simulate",
            {},
            build(
                registry, "filter", "simulate", keep=5, score={"simulated_wall_stress_kpa": -1.0}
            ),
        ),
        Link(
            3,
            "pareto",
            {},
            build(
                registry,
                "filter",
                "pareto",
                keep=1,
                objectives={"simulated_wall_stress_kpa": "min"},
            ),
        ),
    ]
    context = FilterContext(
        example_mesh(patient),
        lambda name, fidelity: simulator,
        ("laplace-wall-stress",),
        np.random.default_rng(0),
        tmp_path,
    )
    generator = build(registry, "generator", "sobol")
    chunks = (generator.generate(space, 64, np.random.default_rng(i)) for i in range(4))
    result = screen_patient(
        patient, chunks, 256, scoring.score, links, scoring.refine, lambda link: context
    )
    assert [r.kept for r in result.funnel] == [256, 52, 5, 1]
    finalists = result.finalists
    stress = finalists["simulated_wall_stress_kpa"]
    assert stress[result.chosen] == stress.min()  # the least stressed of the simulated five
    assert np.isfinite(finalists["predicted_wall_stress_kpa_std"]).all()  # refined by predict
