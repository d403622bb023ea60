"""Conformance checks a plugin author runs on their own plugin (and hydraopt on its own).

Each ``check_*`` function raises ``AssertionError`` with a message that says what the plugin
did wrong; call them from your test suite::

    from hydraopt.testing import check_generator, example_space

    def test_my_generator():
        check_generator(MyGenerator(MySettings()), example_space())
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from hydraopt.domain import (
    DesignBatch,
    DesignSpace,
    Outcomes,
    Patient,
    Polymer,
    PolymerLibrary,
    PropertyRange,
)
from hydraopt.plugin_types import Generator, Simulator


def example_space() -> DesignSpace:
    """A small design space of two polymers with the default bounds, needing no data files."""
    polymers = (
        Polymer(
            "example-gelma",
            "Example GelMA",
            "GelMA",
            "[*]NCC(=O)N1CCCC1C(=O)NC(CCCCNC(=O)C(C)=C)C(=O)[*]",
            PropertyRange(1.0, 30.0),
            PropertyRange(7.0, 60.0),
            PropertyRange(0.01, 0.1),
            1.3,
            "surface",
            ("example",),
        ),
        Polymer(
            "example-pegda",
            "Example PEGDA",
            "PEGDA",
            "[*]CCO[*]",
            PropertyRange(0.5, 50.0),
            PropertyRange(14.0, 180.0),
            PropertyRange(0.005, 0.05),
            1.8,
            "bulk",
            ("example",),
        ),
    )
    return DesignSpace(PolymerLibrary(polymers, source="hydraopt.testing"))


def example_patient() -> Patient:
    """A plausible subacute anterior STEMI patient."""
    return Patient(
        patient_id="EXAMPLE01",
        lvef_pct=38.0,
        gls_pct=-11.4,
        edv_ml=170.0,
        esv_ml=105.4,
        scar_fraction_pct=24.0,
        bz_fraction_pct=8.5,
        bz_stress_kpa=25.0,
        healthy_stress_kpa=20.0,
        stress_concentration=1.25,
        transmurality=0.6,
        wall_thickness_mm=9.0,
    ).validated()


def check_generator(generator: Generator, space: DesignSpace, n: int = 64) -> DesignBatch:
    """A generator returns ``n`` in-bounds designs of ``space``, reproducibly from its rng."""
    assert isinstance(generator, Generator), "generate(space, n, rng) is missing"
    first = generator.generate(space, n, np.random.default_rng(1))
    assert isinstance(first, DesignBatch), f"generate returned {type(first).__name__}"
    assert len(first) == n, f"asked for {n} designs, got {len(first)}"
    assert first.space == space, "the batch must refer to the space it was drawn from"
    for name, mask in first.out_of_bounds().items():
        assert not mask.any(), f"{mask.sum()} designs have {name} outside the design space"
    allowed = set(space.coverage_indices.tolist())
    assert set(first.coverage_index.tolist()) <= allowed, "a disallowed coverage pattern"
    again = generator.generate(space, n, np.random.default_rng(1))
    for name, values in first.columns().items():
        assert np.array_equal(values, again.columns()[name]), f"{name} differs for the same rng"
    return first


def check_simulator(
    simulator: Simulator, patient: Patient, designs: DesignBatch, workdir: Path | None = None
) -> Outcomes:
    """A simulator declares unique outputs with units and returns exactly those, one row per
    design, deterministically."""
    assert isinstance(simulator, Simulator), (
        "outputs or simulate(patient, designs, workdir) missing"
    )
    names = [spec.name for spec in simulator.outputs]
    assert names, "a simulator must declare at least one output"
    assert len(set(names)) == len(names), f"duplicate output names in {names}"
    for spec in simulator.outputs:
        assert spec.unit, f"output {spec.name} declares no unit (use '1' for dimensionless)"
    with tempfile.TemporaryDirectory() as scratch:
        base = workdir or Path(scratch)
        (base / "first").mkdir(parents=True, exist_ok=True)
        (base / "second").mkdir(parents=True, exist_ok=True)
        first = simulator.simulate(patient, designs, base / "first")
        second = simulator.simulate(patient, designs, base / "second")
    assert isinstance(first, Outcomes), f"simulate returned {type(first).__name__}"
    assert list(first.names) == names, f"returned outputs {list(first.names)}, declared {names}"
    assert len(first) == len(designs), f"{len(first)} rows of outcomes for {len(designs)} designs"
    for name in names:
        ok = ~first.failed
        assert np.all(np.isfinite(first[name][ok])), f"{name} has non-finite values"
        assert np.array_equal(first[name], second[name], equal_nan=True), (
            f"{name} differs between two identical calls: a simulator must be deterministic"
        )
    return first
