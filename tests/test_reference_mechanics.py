"""The reference mechanics: verification against circulation, and physical sanity."""

import numpy as np
import pytest

from hydraopt.testing import check_simulator
from hydraopt_simulators.mechanics import closed_loop
from hydraopt_simulators.mechanics.reference import (
    ReferenceMechanics,
    ReferenceMechanicsSettings,
)
from hydraopt_simulators.mechanics.regional_lv import TissueProperties, build_regional_lv


@pytest.fixture(scope="module")
def mechanics():
    return ReferenceMechanics(ReferenceMechanicsSettings())


def test_reproduces_circulation_regazzoni2020_without_infarct(tmp_path):
    """No infarct, no hydrogel: the same heart as circulation's Regazzoni2020 model."""
    import logging

    from circulation.regazzoni2020 import Regazzoni2020

    logging.disable(logging.WARNING)
    try:
        model = Regazzoni2020(outdir=tmp_path)
        history = model.solve(num_beats=3, dt=1e-3)
    finally:
        logging.disable(logging.NOTSET)
    per_beat = len(history["V_LV"]) // 3
    last = slice(2 * per_beat, 3 * per_beat)
    reference = {
        "edv": np.max(history["V_LV"][last]),
        "esv": np.min(history["V_LV"][last]),
        "peak_p": np.max(history["p_LV"][last]),
    }
    lv = build_regional_lv(
        weights=np.array([[1.0, 0.0, 0.0, 0.0]]),
        elastance_active=closed_loop.CHAMBERS["LV"]["EA"],
        elastance_passive=closed_loop.CHAMBERS["LV"]["EB"],
        v0_ml=closed_loop.CHAMBERS["LV"]["V0"],
        tissue=TissueProperties(20.0, 1.5, 0.67),
    )
    _, records = closed_loop.integrate_beats(lv, closed_loop.initial_state(1), 3, 1e-3)
    ours = records[-1]
    assert ours.edv_ml[0] == pytest.approx(reference["edv"], rel=0.02)
    assert ours.esv_ml[0] == pytest.approx(reference["esv"], rel=0.02)
    assert ours.peak_p_lv_mmhg[0] == pytest.approx(reference["peak_p"], rel=0.02)


@pytest.mark.parametrize("valve_law", ["smooth", "ideal"])
def test_blood_volume_is_conserved(valve_law):
    lv = build_regional_lv(
        np.array([[0.7, 0.1, 0.0, 0.2]]), 4.0, 0.1, 50.0, TissueProperties(20.0, 1.5, 0.67)
    )
    state = closed_loop.initial_state(1)

    def total(s):
        p = closed_loop.SYSTEMIC, closed_loop.PULMONARY
        return (
            s[0]
            + s[1]
            + s[2]
            + s[3]
            + p[0]["C_AR"] * s[4]
            + p[0]["C_VEN"] * s[5]
            + p[1]["C_AR"] * s[6]
            + p[1]["C_VEN"] * s[7]
        )

    before = total(state.copy())
    state, _ = closed_loop.integrate_beats(lv, state, 2, 4e-3, valve_law)
    assert total(state)[0] == pytest.approx(before[0], rel=1e-9)


def test_calibrated_heart_has_the_patients_volumes(mechanics, patient, lv_mesh):
    heart = mechanics.heart(patient, lv_mesh)
    assert heart.baseline.edv_ml[0] == pytest.approx(patient.edv_ml, abs=1.0)
    assert heart.baseline.esv_ml[0] == pytest.approx(patient.esv_ml, abs=1.0)


def test_conforms_and_ef_is_stroke_volume_over_edv(mechanics, patient, lv_mesh, make_designs):
    designs = make_designs("alginate-algisyl", "scar_bz50", [2.0, 5.0], 120.0, 0.02, [0.5, 1.5])
    outcomes = check_simulator(mechanics, patient, lv_mesh, designs)
    heart = mechanics.heart(patient, lv_mesh)
    ef = 100 * (outcomes["edv_ml"] - outcomes["esv_ml"]) / outcomes["edv_ml"]
    baseline_ef = (
        100 * (heart.baseline.edv_ml[0] - heart.baseline.esv_ml[0]) / heart.baseline.edv_ml[0]
    )
    np.testing.assert_allclose(outcomes["delta_ef_pct"], ef - baseline_ef, atol=0.05)
    assert outcomes["stable"].tolist() == [1.0, 1.0]


def test_no_hydrogel_means_no_effect(mechanics, patient, lv_mesh, make_designs):
    # A gel degraded to nothing long before the follow-up: the untreated infarct.
    designs = make_designs("gelma-lowdom", "scar_bz100", 5.0, 3.0, 0.01, 1.0)
    outcomes = mechanics.simulate(patient, lv_mesh, designs, None)
    assert abs(outcomes["delta_ef_trajectory_pct"][0, -1]) < 1e-9
    assert abs(outcomes["bz_stress_reduction_pct"][0]) < 1e-9


def test_thicker_or_wider_patch_lowers_border_zone_stress(
    mechanics, patient, lv_mesh, make_designs
):
    designs = make_designs(
        "alginate-algisyl",
        ["scar_bz50", "scar_bz50", "scar_only", "scar_bz100"],
        6.0,
        150.0,
        0.02,
        [0.5, 1.5, 1.0, 1.0],
    )
    reduction = mechanics.simulate(patient, lv_mesh, designs, None)["bz_stress_reduction_pct"]
    assert reduction[1] > reduction[0] > 0  # thicker
    assert reduction[3] > reduction[2]  # more of the border zone covered


def test_excessively_stiff_patch_impairs_filling(mechanics, patient, lv_mesh, make_designs):
    designs = make_designs("pegda-3400", "scar_bz100", [12.0, 300.0], 200.0, 0.01, 2.0)
    edv = mechanics.simulate(patient, lv_mesh, designs, None)["edv_ml"]
    assert edv[1] < edv[0] - 1.0


def test_the_polymer_matters_beyond_the_numbers(mechanics, patient, lv_mesh, make_designs, library):
    # Same numbers; the polymers differ in swelling and degradation mode.
    a, b = (library[library.index(name)] for name in ("heha", "ha-guest-host"))
    assert a.swelling_ratio != b.swelling_ratio and a.degradation_mode != b.degradation_mode
    designs = make_designs(["heha", "ha-guest-host"], "scar_bz50", 10.0, 20.0, 0.05, 1.0)
    outcomes = mechanics.simulate(patient, lv_mesh, designs, None)
    assert not outcomes.failed.any()
    trajectory = outcomes["delta_ef_trajectory_pct"]
    assert np.abs(trajectory[0] - trajectory[1]).max() > 1e-3


def test_infeasible_design_is_flagged_not_clipped(mechanics, patient, lv_mesh, make_designs):
    designs = make_designs("ventrigel-decm", "scar_only", 40.0, 10.0, 0.05, 1.0)
    outcomes = mechanics.simulate(patient, lv_mesh, designs, None)
    assert outcomes.failed[0]
    assert "stiffness_kpa 40 is outside ventrigel-decm's achievable" in outcomes.failure_reason[0]
    assert np.isnan(outcomes["delta_ef_pct"][0])


def test_results_are_deterministic(patient, lv_mesh, make_designs):
    designs = make_designs("alginate-algisyl", "scar_bz25", 4.0, 100.0, 0.02, 1.0)
    first = ReferenceMechanics(ReferenceMechanicsSettings()).simulate(
        patient, lv_mesh, designs, None
    )
    second = ReferenceMechanics(ReferenceMechanicsSettings()).simulate(
        patient, lv_mesh, designs, None
    )
    for name in first.names:
        np.testing.assert_array_equal(first[name], second[name])


def test_calibration_follows_the_patient(mechanics, patient, lv_mesh, make_designs):
    from dataclasses import replace

    designs = make_designs("alginate-algisyl", "scar_bz50", 5.0, 120.0, 0.02, 1.0)
    first = mechanics.simulate(patient, lv_mesh, designs, None)
    smaller = replace(patient, esv_ml=95.0, lvef_pct=44.1)
    second = mechanics.simulate(smaller, lv_mesh, designs, None)
    assert second["esv_ml"][0] < first["esv_ml"][0] - 5.0


def test_unreachable_patient_is_a_clear_error(mechanics, patient):
    from dataclasses import replace

    from hydraopt.errors import DataError

    # A 60% scar cannot leave an ejection fraction of 65%.
    impossible = replace(
        patient,
        scar_fraction_pct=60.0,
        transmurality=0.9,
        bz_fraction_pct=8.0,
        esv_ml=59.5,
        lvef_pct=65.0,
    )
    from hydraopt_simulators.lv_mesh.builder import EllipsoidMesher, EllipsoidMeshSettings

    mesh = EllipsoidMesher(EllipsoidMeshSettings(element_size_mm=8.0)).build(impossible)
    with pytest.raises(
        DataError,
        match=r"patient 'EXAMPLE01': the reference mechanics cannot "
        r"reach EDV 170 mL and ESV 59.5 mL",
    ):
        mechanics.heart(impossible, mesh)
