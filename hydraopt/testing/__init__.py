"""Conformance checks a plugin author runs on their own plugin (and hydraopt on its own).

One check per plugin kind, from the registration the plugin's hook yields, as hydraopt uses
it: ``check_simulator_plugin``, ``check_mesher_plugin``, ``check_generator_plugin``,
``check_encoder_plugin``, ``check_surrogate_plugin``, ``check_policy_plugin`` and
``check_filter_plugin``. Each first runs :func:`check_registration` (description, settings
that refuse unknown keys and pickle, a factory implementing the kind's interface), then the
kind's behaviour (declared outputs and units, batch shapes, determinism for a seed, clear
errors for bad input, nothing written outside the working directory; a simulator's timeout
in a worker process). Each raises ``AssertionError`` saying what the plugin did wrong::

    from hydraopt.testing import check_simulator_plugin

    def test_my_simulator():
        (registration,) = hydraopt_simulators()   # your hook
        check_simulator_plugin(registration, {"pressure_mmhg": 120.0}, timeout_s=60)

The object-level checks (``check_simulator``, ``check_generator``, ...) and the example
inputs (``example_patient``, ``example_mesh``, ``example_designs``, ...) need no data files.
"""

from hydraopt.testing.designs import (
    check_generator,
    check_generator_plugin,
    check_mesher,
    check_mesher_plugin,
)
from hydraopt.testing.encoders import check_encoder, check_encoder_plugin, example_psmiles
from hydraopt.testing.examples import (
    EXAMPLE_OUTPUTS,
    ExampleEncoder,
    ExampleScorer,
    example_candidates,
    example_designs,
    example_environment,
    example_mesh,
    example_outcomes,
    example_patient,
    example_patients,
    example_space,
    example_training_data,
)
from hydraopt.testing.filters import check_filter, check_filter_plugin, example_context
from hydraopt.testing.policies import check_policy_plugin
from hydraopt.testing.registration import check_registration, confined
from hydraopt.testing.simulators import check_simulator, check_simulator_plugin
from hydraopt.testing.surrogates import check_surrogate_plugin

__all__ = [
    "EXAMPLE_OUTPUTS",
    "ExampleEncoder",
    "ExampleScorer",
    "check_encoder",
    "check_encoder_plugin",
    "check_filter",
    "check_filter_plugin",
    "check_generator",
    "check_generator_plugin",
    "check_mesher",
    "check_mesher_plugin",
    "check_policy_plugin",
    "check_registration",
    "check_simulator",
    "check_simulator_plugin",
    "check_surrogate_plugin",
    "confined",
    "example_candidates",
    "example_context",
    "example_designs",
    "example_environment",
    "example_mesh",
    "example_outcomes",
    "example_patient",
    "example_patients",
    "example_psmiles",
    "example_space",
    "example_training_data",
]
