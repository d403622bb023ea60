"""The plugin's own tests: hydraopt's conformance check, the physics, the registration."""

import numpy as np
import pytest
from hydraopt_thick_wall.model import mean_circumferential_stress_kpa
from hydraopt_thick_wall.plugin import ThickWallSettings, ThickWallStress, hydraopt_simulators

from hydraopt.domain import DesignBatch
from hydraopt.registry import PluginRegistry
from hydraopt.testing import (
    check_simulator,
    check_simulator_plugin,
    example_designs,
    example_mesh,
    example_patient,
)


def test_it_passes_hydraopts_conformance_check(tmp_path):
    outcomes = check_simulator(
        ThickWallStress(ThickWallSettings()),
        example_patient(),
        example_mesh(),
        example_designs(8),
        tmp_path,
    )
    assert not outcomes.failed.any()
    assert np.all(outcomes["wall_stress_reduction_pct"] > 0)


def test_its_registration_passes_as_hydraopt_uses_it():
    """Settings that refuse unknown keys and pickle, nothing written outside the working
    directory, and the simulator's own check, from the registration its hook yields."""
    (registration,) = hydraopt_simulators()
    check_simulator_plugin(registration, {"weeks_after_injection": 12.0}, timeout_s=60)


def test_a_thin_wall_obeys_laplaces_law():
    # p r / (2 h) for a sphere of radius 30 mm, wall 0.3 mm, 10 kPa.
    stress = mean_circumferential_stress_kpa(10.0, 0.03, np.array([0.0003]))[0]
    assert stress == pytest.approx(10.0 * 0.03 / (2 * 0.0003), rel=0.02)


def test_a_thicker_stiffer_gel_relieves_the_wall_more():
    designs = example_designs(2)
    columns = designs.columns()
    columns["polymer_index"] = np.array([1, 1])
    columns["coverage_index"] = np.array([3, 3])
    columns["stiffness_kpa"] = np.array([5.0, 40.0])
    columns["thickness_mm"] = np.array([0.5, 2.0])
    columns["t50_days"] = np.array([180.0, 180.0])
    columns["conductivity_s_per_m"] = np.array([0.01, 0.01])
    pair = DesignBatch.from_columns(designs.space, columns)
    outcomes = ThickWallStress(ThickWallSettings()).simulate(
        example_patient(), example_mesh(), pair, None
    )
    low, high = outcomes["wall_stress_reduction_pct"]
    assert 0 < low < high


def test_a_design_its_polymer_cannot_make_is_failed_with_the_reason():
    designs = example_designs(2)
    columns = designs.columns()
    columns["stiffness_kpa"] = np.array([1000.0, columns["stiffness_kpa"][1]])
    outcomes = ThickWallStress(ThickWallSettings()).simulate(
        example_patient(), example_mesh(), DesignBatch.from_columns(designs.space, columns), None
    )
    assert outcomes.failed.tolist() == [True, False]
    assert "stiffness_kpa" in outcomes.failure_reason[0]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="end_systolic_pressure_mmhg"):
        ThickWallSettings(end_systolic_pressure_mmhg=-5.0)
    with pytest.raises(ValueError, match=r"unknown_key|Extra inputs"):
        ThickWallSettings(unknown_key=1)


def test_hydraopt_finds_it_through_its_entry_point():
    plugin = PluginRegistry.discover().get("simulator", "thick-wall-stress")
    assert (plugin.package, plugin.package_version) == ("hydraopt-thick-wall", "0.1.0")
