"""The documentation is part of the contract: these fail when it drifts from the code."""

import inspect
import re
from pathlib import Path

import pytest

from hydraopt import hookspecs
from hydraopt.docgen import render_reference
from hydraopt.domain import FEATURE_NAMES
from hydraopt.plugin_types import PLUGIN_KINDS
from hydraopt.registry import PluginRegistry

ROOT = Path(__file__).resolve().parents[1]


def hook_functions():
    return [
        (name, function)
        for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
        if name.startswith("hydraopt_")
    ]


def test_every_hook_is_documented_with_its_signature():
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    for name, function in hook_functions():
        signature = f"{name}() -> {function.__annotations__['return']}"
        assert f"### `{signature}`" in guide, f"docs/plugins.md lacks a section for {signature}"
        assert function.__doc__ and "Example::" in function.__doc__, f"{name} lacks an example"


def test_every_hook_is_exercised_by_a_test():
    tests = "".join(
        p.read_text(encoding="utf-8")
        for p in (ROOT / "tests").glob("*.py")
        if p.name != "test_docs.py"
    )
    for name, _ in hook_functions():
        assert re.search(rf"def {name}\(", tests), f"no test implements {name}"


def test_pipeline_reference_is_up_to_date():
    committed = (ROOT / "docs" / "pipeline-toml.md").read_text(encoding="utf-8")
    assert committed == render_reference(PluginRegistry.discover()), (
        "docs/pipeline-toml.md is stale: run `make docs`"
    )


def test_cohort_doc_lists_every_feature():
    doc = (ROOT / "docs" / "cohorts.md").read_text(encoding="utf-8")
    for name in FEATURE_NAMES:
        assert f"`{name}`" in doc


def test_readme_quickstart_is_the_two_make_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    quickstart = readme.split("## Quickstart", 1)[1].split("##", 1)[0]
    assert re.findall(r"^make \w+", quickstart, flags=re.M) == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci


# ---- the Hooks section's examples run ------------------------------------------------------


def hook_section(kind: str) -> str:
    """The "### `<kind's hook>() -> ...`" subsection of docs/plugins.md, up to the next
    heading."""
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    hooks = guide.split("\n## Hooks\n", 1)[1]
    hook_name = PLUGIN_KINDS[kind][0]
    start = hooks.index(f"\n### `{hook_name}() -> ")
    rest = hooks[start + 1 :]
    end = re.search(r"^##", rest[3:], flags=re.M)
    return rest if end is None else rest[: end.start() + 3]


def section_example(kind: str) -> str:
    """The section's example: its one ```python block that defines a hook."""
    blocks = re.findall(r"^```python\n(.*?)^```", hook_section(kind), flags=re.M | re.S)
    examples = [block for block in blocks if "@hookimpl" in block]
    assert len(examples) == 1, (
        f"the {kind} section of docs/plugins.md must end with one complete ```python example "
        f"defining its @hookimpl hook (found {len(examples)})"
    )
    return examples[0]


def import_example(kind: str, tmp_path: Path, monkeypatch):
    """The example as a module of its own, importable by name as a plugin's module is (so
    its settings and factory pickle, as worker processes need)."""
    import importlib.util
    import sys

    import pluggy

    name = f"docs_plugins_{kind}_example"
    path = tmp_path / f"{name}.py"
    path.write_text(section_example(kind), encoding="utf-8")
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, path))
    monkeypatch.setitem(sys.modules, name, module)  # importable by name until the test ends
    module.__spec__.loader.exec_module(module)
    manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    manager.register(module)
    manager.check_pending()  # every @hookimpl is a hydraopt hook
    return module


def exercise(kind: str, plugin, tmp_path: Path) -> None:
    """Use the built plugin as the stage that runs its kind would, minimally."""
    import numpy as np

    from hydraopt import testing

    patient, space = testing.example_patient(), testing.example_space()
    if kind == "mesher":
        testing.check_mesher(plugin, patient)
    elif kind == "simulator":
        designs = testing.example_designs(8)
        outcomes = testing.check_simulator(
            plugin, patient, testing.example_mesh(), designs, tmp_path
        )
        assert not outcomes.failed.any(), outcomes.failure_reason  # the designs are makeable
    elif kind == "generator":
        testing.check_generator(plugin, space)
    elif kind == "encoder":
        psmiles = [polymer.psmiles for polymer in space.polymers]
        embedding = plugin.encode(psmiles)
        assert embedding.shape == (2, plugin.embedding_dim) and embedding.dtype == np.float32
        assert np.array_equal(embedding, plugin.encode(psmiles))
        assert isinstance(plugin.fingerprint, str) and plugin.fingerprint
    elif kind == "surrogate":
        exercise_surrogate(plugin, tmp_path)
    elif kind == "policy":
        exercise_policy(plugin, tmp_path)
    elif kind == "filter":
        exercise_filter(plugin, tmp_path)
    else:
        raise AssertionError(f"no exercise for plugin kind {kind!r}")


def example_training_data(patient_id: str, seed: int):
    """Rows of one patient: a scalar target and a trajectory (four follow-up times)."""
    from dataclasses import replace

    import numpy as np

    from hydraopt.domain import OutputSpec, SurrogateInputs, TrainingData
    from hydraopt.testing import example_designs, example_patient

    rng = np.random.default_rng(seed)
    patient = replace(example_patient(), patient_id=patient_id, lvef_pct=30 + 10 * rng.random())
    designs = example_designs(32, seed=seed)
    stress = 25.0 / (1 + 0.2 * designs.thickness_mm) + rng.normal(0, 0.2, len(designs))
    delta_ef = np.outer(np.log(designs.stiffness_kpa), [0.5, 1.0, 1.5, 1.5])
    return TrainingData(
        SurrogateInputs.for_designs(patient, designs),
        {"bz_stress_kpa": stress, "delta_ef_pct": delta_ef},
        (
            OutputSpec("bz_stress_kpa", "kPa", "border-zone stress"),
            OutputSpec("delta_ef_pct", "%", "EF gain", shape=(4,)),
        ),
    )


class LengthEncoder:
    """A stand-in polymer encoder: the PSMILES' length."""

    embedding_dim = 1

    def __init__(self, fingerprint: str = "length-1"):
        self.fingerprint = fingerprint

    def encode(self, psmiles):
        import numpy as np

        return np.array([[len(s)] for s in psmiles], dtype=np.float32)

    def trainable_module(self):
        return None


def exercise_surrogate(surrogate, tmp_path: Path) -> None:
    import numpy as np

    from hydraopt.domain import Predictions
    from hydraopt.plugin_types import Surrogate

    train, validation = example_training_data("P0", 0), example_training_data("P1", 1)
    encoder = LengthEncoder()
    (tmp_path / "fit").mkdir()
    metrics = surrogate.fit(train, validation, encoder, tmp_path / "fit")
    assert metrics and all(isinstance(v, float) for v in metrics.values()), metrics
    predicted = surrogate.predict(validation.inputs)
    assert isinstance(predicted, Predictions) and len(predicted) == len(validation)
    assert {s.name: s.shape for s in surrogate.outputs} == {s.name: s.shape for s in train.specs}
    for spec in surrogate.outputs:
        std = predicted.std[spec.name]
        assert np.isfinite(predicted[spec.name]).all() and (np.isfinite(std) & (std >= 0)).all()
    (tmp_path / "saved").mkdir()
    surrogate.save(tmp_path / "saved")
    restored = type(surrogate)(surrogate.settings)
    assert isinstance(restored, Surrogate)
    with pytest.raises(ValueError):  # saved with another encoder
        restored.load(tmp_path / "saved", LengthEncoder("length-2"))
    restored.load(tmp_path / "saved", encoder)
    again = restored.predict(validation.inputs)
    for spec in surrogate.outputs:
        np.testing.assert_array_equal(again[spec.name], predicted[spec.name])
        np.testing.assert_array_equal(again.std[spec.name], predicted.std[spec.name])


class ThickerIsBetter:
    """A stand-in for a fitted surrogate's tensor scorer: ΔEF grows with patch thickness."""

    def __init__(self):
        import torch

        from hydraopt.domain import OutputSpec

        self.outputs = (OutputSpec("delta_ef_pct", "%", "EF gain"),)
        self.device = torch.device("cpu")

    def __call__(self, features, polymer_index, outputs=None):
        import torch

        from hydraopt.domain.training import DATASET_FEATURE_NAMES

        gain = features[:, DATASET_FEATURE_NAMES.index("thickness_mm")]
        return {"delta_ef_pct": (gain, torch.zeros_like(gain))}

    def patient_encoding(self, patient_features):
        return None


def exercise_policy(policy, tmp_path: Path) -> None:
    from dataclasses import replace

    import numpy as np
    import torch

    from hydraopt.config import RewardConfig
    from hydraopt.design_environment import (
        DesignAction,
        DesignEnvironment,
        DesignReward,
        PatientScaling,
    )
    from hydraopt.testing import example_patient, example_space

    reward = DesignReward(
        example_space(), ThickerIsBetter(), RewardConfig(weights={"delta_ef_pct": 1.0})
    )
    patients = [replace(example_patient(), lvef_pct=30.0 + 5 * i) for i in range(3)]
    features = np.stack([p.features() for p in patients])
    scaling = PatientScaling.of(features)

    def make_environment(num_envs):
        return DesignEnvironment(reward, features, num_envs, 3, scaling)

    (tmp_path / "fit").mkdir()
    diagnostics = policy.fit(make_environment, tmp_path / "fit", seed=0)
    assert all(isinstance(v, float) for v in diagnostics.values()), diagnostics
    environment = make_environment(4)
    observations, _ = environment.reset(seed=0)
    action = policy.act(observations, deterministic=True)
    assert isinstance(action, DesignAction)
    assert action.polymer.shape == action.coverage.shape == (4,)
    assert action.unit.shape == (4, 4) and bool(((action.unit >= 0) & (action.unit <= 1)).all())
    environment.step(action)  # a valid action for the environment
    (tmp_path / "saved").mkdir()
    policy.save(tmp_path / "saved")
    restored = type(policy)(policy.settings)
    fewer_coverages = replace(example_space(), coverages=("scar_only", "scar_bz100"))
    other = DesignReward(fewer_coverages, reward.scorer, reward.config)
    with pytest.raises(ValueError):  # trained for another environment
        restored.load(tmp_path / "saved", DesignEnvironment(other, features, 4, 3, scaling))
    restored.load(tmp_path / "saved", environment)
    again = restored.act(observations, deterministic=True)
    for field in ("polymer", "coverage", "unit"):
        assert torch.equal(getattr(again, field), getattr(action, field))


def exercise_filter(chain_link, tmp_path: Path) -> None:
    import numpy as np

    from hydraopt.plugin_types import Candidates, FilterContext, Selection
    from hydraopt.testing import example_designs, example_mesh, example_patient

    designs = example_designs(16)
    rng = np.random.default_rng(0)
    columns = {name: rng.normal(size=len(designs)) for name in chain_link.reads}
    candidates = Candidates(example_patient(), designs, columns)
    rowwise = getattr(chain_link, "rowwise", False)
    context = None
    if not rowwise:

        def no_simulator(name, fidelity):
            raise AssertionError("the example filter asked for a simulator")

        context = FilterContext(example_mesh(), no_simulator, (), rng, tmp_path)
    selection = chain_link.select(candidates, context)
    assert isinstance(selection, Selection)
    keep = np.asarray(selection.keep)
    assert keep.dtype.kind in "iu" and len(set(keep.tolist())) == len(keep)
    assert ((keep >= 0) & (keep < len(candidates))).all()
    if rowwise:  # the same rows kept whether candidates come at once or in chunks
        chunks = [chain_link.select(candidates.take(np.arange(s, s + 8)), None) for s in (0, 8)]
        chunked = np.concatenate([np.asarray(chunk.keep) + 8 * i for i, chunk in enumerate(chunks)])
        np.testing.assert_array_equal(np.sort(chunked), np.sort(keep))


@pytest.mark.parametrize("kind", list(PLUGIN_KINDS))
def test_every_hook_section_ends_with_an_example_that_runs(kind, tmp_path, monkeypatch):
    """Each hook's section of docs/plugins.md shows a complete plugin of its kind: imported as
    a module, its hook yields registrations that pass hydraopt.testing.check_registration,
    pickle (as worker processes receive them), declare a hooks_version this hydraopt accepts,
    and build a plugin that works."""
    import pickle

    from hydraopt.plugin_types import hooks_mismatch
    from hydraopt.testing import check_registration

    hook_name, registration_type = PLUGIN_KINDS[kind]
    module = import_example(kind, tmp_path, monkeypatch)
    registrations = list(getattr(module, hook_name)())
    assert registrations, f"the {kind} example's {hook_name} yields nothing"
    for registration in registrations:
        assert isinstance(registration, registration_type)
        assert registration.hooks_version is not None, "declare hooks_version in the example"
        assert hooks_mismatch(registration.hooks_version, hookspecs.HOOKS_VERSION) is None
        assert pickle.loads(pickle.dumps(registration)) == registration
        plugin = check_registration(registration)
        workdir = tmp_path / registration.name
        workdir.mkdir()
        exercise(kind, plugin, workdir)
