"""Conformance of design policies: trained on environments, acting within the action space."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from hydraopt.plugin_types import PolicyPlugin
from hydraopt.testing.examples import example_environment, example_space
from hydraopt.testing.registration import check_registration, confined

CHECKED_SLOTS = 8  # patient-episodes the actions are checked on


def check_policy_plugin(
    registration: PolicyPlugin,
    settings: Mapping[str, Any] | None = None,
    make_environment: Callable[[int], Any] | None = None,
    seed: int = 0,
) -> Any:
    """A policy registration as the ``policy`` stage uses it: :func:`check_registration`;
    ``fit`` on ``make_environment`` (default :func:`example_environment`) returns finite
    diagnostics by name; ``act`` gives, for a batch of observations, a polymer and a coverage
    index within the action space and four unit-cube coordinates in [0, 1], the same on every
    deterministic call; ``save`` and ``load`` into a new object act alike; ``load`` refuses a
    policy saved for another environment (``ValueError``); two fits with one ``seed`` act
    alike; nothing is written outside the working directory. Keep ``settings`` small (a few
    updates): the policy is trained twice. Returns the deterministic actions."""
    assert isinstance(registration, PolicyPlugin), (
        f"expected a PolicyPlugin, got {type(registration).__name__}"
    )
    make_environment = make_environment or example_environment()
    validated = check_registration(registration, settings, build=False)
    label = f"policy {registration.name!r}"
    with confined(label) as workdir:
        policy = check_registration(registration, settings)
        diagnostics = policy.fit(make_environment, workdir / "fit", seed)
        assert isinstance(diagnostics, Mapping), f"fit returned {type(diagnostics).__name__}"
        for name, value in diagnostics.items():
            assert np.isfinite(float(value)), f"fit's diagnostic {name!r} is {value!r}"
        environment = make_environment(CHECKED_SLOTS)
        observations, _ = environment.reset(seed=seed)
        chosen = _checked_action(policy.act(observations, deterministic=True), environment)
        _assert_same(policy.act(observations, deterministic=True), chosen, "a second act call")
        _checked_action(policy.act(observations, deterministic=False), environment)
        saved = workdir / "saved"
        saved.mkdir()
        policy.save(saved)
        restored = registration.factory(validated)
        restored.load(saved, environment)
        _assert_same(restored.act(observations, deterministic=True), chosen, "the loaded one")
        _assert_refuses_another_environment(registration, validated, saved, environment, label)
        twin = registration.factory(validated)
        twin.fit(make_environment, workdir / "fit-again", seed)
        _assert_same(twin.act(observations, deterministic=True), chosen, f"a refit, seed {seed}")
    return chosen


def _checked_action(action: Any, environment: Any) -> Any:
    from hydraopt.design_environment import DesignAction

    assert isinstance(action, DesignAction), f"act returned {type(action).__name__}"
    n = environment.num_envs
    polymer, coverage, unit = (
        t.detach().cpu() for t in (action.polymer, action.coverage, action.unit)
    )
    assert tuple(polymer.shape) == (n,) and tuple(coverage.shape) == (n,), (
        f"act must give one polymer and one coverage index per observation ({n})"
    )
    assert bool(((polymer >= 0) & (polymer < environment.n_polymers)).all()), (
        f"a polymer index outside 0..{environment.n_polymers - 1}"
    )
    assert bool(((coverage >= 0) & (coverage < environment.n_coverages)).all()), (
        f"a coverage index outside 0..{environment.n_coverages - 1}"
    )
    assert tuple(unit.shape) == (n, 4), f"unit must be [{n}, 4], got {tuple(unit.shape)}"
    assert bool(((unit >= 0) & (unit <= 1)).all()), "unit-cube coordinates outside [0, 1]"
    return action


def _assert_same(got: Any, expected: Any, what: str) -> None:
    import torch

    for field in ("polymer", "coverage", "unit"):
        a, b = getattr(got, field).detach().cpu(), getattr(expected, field).detach().cpu()
        assert torch.allclose(a.double(), b.double(), atol=1e-6), (
            f"{what} chooses another {field}: deterministic actions must be reproducible"
        )


def _assert_refuses_another_environment(
    registration: PolicyPlugin, validated: Any, saved: Any, environment: Any, label: str
) -> None:
    """A library in another order is another action space: the saved policy must not load."""
    from hydraopt.domain import DesignSpace, PolymerLibrary

    polymers = example_space().polymers[::-1]
    other_space = DesignSpace(PolymerLibrary(tuple(polymers), source="hydraopt.testing"))
    other = example_environment(other_space)(environment.num_envs)
    try:
        registration.factory(validated).load(saved, other)
    except ValueError:
        return
    raise AssertionError(
        f"{label} loaded a policy trained for another environment (its library in another "
        "order); load must refuse it with a ValueError naming the file"
    )
