"""The reference electrophysiology: tuned conduction, scar, hydrogel conductivity."""

import meshio
import numpy as np
import pytest

from hydraopt.domain.mesh import REGION_SCAR
from hydraopt.testing import check_simulator
from hydraopt_simulators.ep.activation import evaluate_designs
from hydraopt_simulators.ep.reference import ReferenceEP, ReferenceEPSettings
from hydraopt_simulators.ep.solver import node_mask_of_elements
from hydraopt_simulators.ep.tissue import bar_velocity_m_per_s, tune_conductivity


@pytest.fixture(scope="module")
def ep():
    return ReferenceEP(ReferenceEPSettings())


@pytest.mark.parametrize("edge_mm", [2.0, 6.0])
def test_healthy_conduction_velocity_is_in_the_published_range(edge_mm):
    """Tuned at any resolution, healthy tissue conducts at 0.5-0.7 m/s along fibres."""
    sigma = tune_conductivity(0.6, edge_mm * 1e-3)
    assert 0.5 <= bar_velocity_m_per_s(sigma, edge_mm * 1e-3) <= 0.7


def test_untuned_coarse_mesh_would_conduct_too_slowly():
    # Why tuning is needed: the fine mesh's conductivity is too low for a coarse mesh.
    fine = tune_conductivity(0.6, 1e-3)
    assert bar_velocity_m_per_s(fine, 6e-3) < 0.5


def test_too_coarse_a_mesh_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no conductivity gives 0.1 m/s at a 8.4 mm edge length"):
        tune_conductivity(0.1, 8.4e-3)


def test_border_zone_conduction_is_similar_across_resolutions(patient, make_designs):
    from hydraopt_simulators.lv_mesh.builder import EllipsoidMesher, EllipsoidMeshSettings

    designs = make_designs("alginate-ik5001", "scar_only", 2.0, 20.0, 0.01, 0.1)
    velocities = []
    for size in (6.0, 4.0):
        mesh = EllipsoidMesher(EllipsoidMeshSettings(element_size_mm=size)).build(patient)
        ep = ReferenceEP(ReferenceEPSettings())
        velocities.append(
            ep.simulate(patient, mesh, designs, None)["bz_conduction_velocity_m_per_s"][0]
        )
    assert velocities[0] == pytest.approx(velocities[1], rel=0.25)


def test_scar_does_not_conduct(ep, patient, lv_mesh, make_designs):
    designs = make_designs("alginate-ik5001", "scar_only", 2.0, 20.0, 0.01, 0.1)
    _, failed, _, maps = evaluate_designs(patient, lv_mesh, designs, ep.tuned(lv_mesh), ep.settings)
    assert not failed.any()
    scar_only_nodes = node_mask_of_elements(
        lv_mesh.tetrahedra,
        lv_mesh.cell_data["region"] == REGION_SCAR,
        len(lv_mesh.points_m),
        require_all=True,
    )
    assert scar_only_nodes.any()
    assert np.isnan(maps[scar_only_nodes, 0]).all()
    # Everything else activates: the myocytes next to the scar are not loaded by its volume.
    assert np.isfinite(maps[~scar_only_nodes, 0]).all()


def test_conductive_hydrogel_shortens_activation(ep, patient, lv_mesh, make_designs):
    designs = make_designs("pedot-pss", "scar_bz100", 20.0, 200.0, [0.1, 1.0], 2.0)
    outcomes = ep.simulate(patient, lv_mesh, designs, None)
    total = outcomes["total_activation_time_ms"]
    assert total[1] < total[0]
    assert (
        outcomes["bz_conduction_velocity_m_per_s"][1]
        > outcomes["bz_conduction_velocity_m_per_s"][0]
    )


def test_conforms_and_writes_activation_maps(ep, patient, lv_mesh, make_designs, tmp_path):
    designs = make_designs("gelma-cnt", ["scar_bz25", "scar_bz50"], 15.0, 30.0, 0.2, 1.0)
    outcomes = check_simulator(ep, patient, lv_mesh, designs, tmp_path)
    assert np.all(
        (outcomes["arrhythmia_risk_score"] >= 0) & (outcomes["arrhythmia_risk_score"] <= 1)
    )
    # Border-zone conduction is slower than healthy tissue's 0.3-0.6 m/s.
    assert np.all(outcomes["bz_conduction_velocity_m_per_s"] < 0.45)
    fields = meshio.read(tmp_path / "first" / "activation.xdmf").point_data
    assert set(fields) == {"activation_time_ms_design_00000", "activation_time_ms_design_00001"}


def test_infeasible_design_is_flagged(ep, patient, lv_mesh, make_designs):
    designs = make_designs("fibrin", "scar_only", 1.0, 5.0, 0.9, 1.0)
    outcomes = ep.simulate(patient, lv_mesh, designs, None)
    assert outcomes.failed[0]
    assert "conductivity_s_per_m 0.9 is outside fibrin's achievable" in outcomes.failure_reason[0]
