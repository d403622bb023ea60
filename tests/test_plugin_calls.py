"""The core's guards on what plugins return, plugin handles, and plugin code digests."""

import pickle
import subprocess
import sys

import numpy as np
import pytest

from hydraopt.domain import Outcomes, OutputSpec, Predictions
from hydraopt.plugin_calls import (
    PluginFailure,
    checked_designs,
    checked_mask,
    checked_outcomes,
    checked_predictions,
)
from hydraopt.registry import PluginRegistry
from hydraopt.testing import example_space

SPECS = (OutputSpec("a_kpa", "kPa", "a"), OutputSpec("b_pct", "%", "b", shape=(2,)))


@pytest.fixture(scope="module")
def handle():
    registry = PluginRegistry.discover()
    sobol = registry.get("generator", "sobol")
    return registry.handle("generator", "sobol", sobol.registration.settings())


def outcomes(n=3, **overrides):
    values = {"a_kpa": np.arange(n, dtype=float), "b_pct": np.ones((n, 2))}
    values.update(overrides)
    return Outcomes(SPECS, values)


def test_valid_outcomes_pass_and_failed_rows_may_be_nan(handle):
    assert checked_outcomes(handle, outcomes(), 3, SPECS) is not None
    failed = Outcomes(
        SPECS,
        {"a_kpa": np.array([1.0, np.nan, 2.0]), "b_pct": np.ones((3, 2))},
        np.array([False, True, False]),
        np.array(["", "gel dissolved", ""], dtype=object),
    )
    checked_outcomes(handle, failed, 3, SPECS)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"a_kpa": np.zeros(3)}, "returned a dict, not Outcomes"),
        (outcomes(n=2), "returned 2 rows for 3 designs"),
        (outcomes(a_kpa=np.array([0.0, np.inf, 1.0])), "a_kpa is NaN or infinite for 1 designs"),
        (
            outcomes(b_pct=np.array([[1.0, 1.0], [1.0, np.nan], [1.0, 1.0]])),
            "b_pct is NaN or infinite for 1 designs not marked failed (rows 1)",
        ),
        (Outcomes(SPECS[:1], {"a_kpa": np.zeros(3)}), "returned outputs ['a_kpa'], but declares"),
        (
            Outcomes(SPECS, outcomes().values, np.array([False, True, False])),
            "1 failed designs have no failure_reason",
        ),
    ],
)
def test_a_malformed_answer_is_a_failure_naming_the_plugin(handle, answer, message):
    with pytest.raises(PluginFailure, match="generator plugin 'sobol' \\(hydraopt ") as raised:
        checked_outcomes(handle, answer, 3, SPECS)
    assert message in str(raised.value)
    assert raised.value.plugin_label.startswith("generator plugin 'sobol'")


def test_predictions_need_a_finite_nonnegative_spread(handle):
    good = Predictions(outcomes(), {"a_kpa": np.zeros(3), "b_pct": np.ones((3, 2))})
    assert checked_predictions(handle, good, 3, SPECS) is good
    bad = Predictions(outcomes(), {"a_kpa": -np.ones(3), "b_pct": np.ones((3, 2))})
    with pytest.raises(PluginFailure, match="standard deviation of a_kpa must be finite"):
        checked_predictions(handle, bad, 3, SPECS)
    with pytest.raises(PluginFailure, match="returned a Outcomes, not Predictions"):
        checked_predictions(handle, outcomes(), 3, SPECS)


def test_a_filter_answers_one_boolean_per_candidate(handle):
    assert checked_mask(handle, np.array([True, False]), 2).tolist() == [True, False]
    for answer in (np.array([1, 0]), np.array([True]), "yes"):
        with pytest.raises(PluginFailure, match="must return 2 booleans"):
            checked_mask(handle, answer, 2)


def test_designs_must_be_inside_the_space(handle):
    space = example_space()
    batch = space.designs_from_unit(np.zeros(4, int), np.zeros(4, int), np.full((4, 4), 0.5))
    assert checked_designs(handle, batch, space, 4) is batch
    with pytest.raises(PluginFailure, match="returned 4 designs, not 5"):
        checked_designs(handle, batch, space, 5)
    batch.stiffness_kpa[0] = np.nan  # NaN is outside every range
    with pytest.raises(PluginFailure, match="outside the design space in \\['stiffness_kpa'\\]"):
        checked_designs(handle, batch, space, 4)


def test_a_handle_crosses_processes_and_builds_once_per_process(handle):
    again = pickle.loads(pickle.dumps(handle))
    assert again.build() is again.build() is handle.build()  # one object in this process
    assert handle.build_new() is not handle.build()


def test_code_digest_follows_lazy_imports_without_importing():
    code = (
        "import sys\n"
        "from hydraopt.code_digest import _closure\n"
        "modules = _closure('hydraopt_simulators.mechanics.reference')\n"
        "assert 'hydraopt_simulators.mechanics.heart' in modules, modules\n"  # a lazy import
        "assert 'hydraopt_simulators.hydrogel' in modules\n"
        "assert not any(m.startswith('hydraopt_simulators.ep') for m in modules)\n"
        "assert 'numba' not in sys.modules and 'hydraopt_simulators.mechanics.heart' not in "
        "sys.modules\n"
    )
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert process.returncode == 0, process.stderr
