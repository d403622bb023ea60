"""Patient LV meshes: size, regions, segments, fibres, treatment regions, files."""

from dataclasses import replace

import meshio
import numpy as np
import pytest

from hydraopt.domain import COVERAGE_PATTERNS
from hydraopt.domain.mesh import REGION_BORDER_ZONE, REGION_SCAR, PatientMesh
from hydraopt.errors import DataError
from hydraopt.mesh_io import write_preview, write_xdmf
from hydraopt.testing import check_mesher
from hydraopt_simulators.lv_mesh.builder import EllipsoidMesher, EllipsoidMeshSettings
from hydraopt_simulators.lv_mesh.geometry import size_ellipsoid


def test_ellipsoid_sizing_holds_the_edv():
    geometry = size_ellipsoid(180.0, 9.0, 2.4)
    assert geometry.cavity_volume_ml() == pytest.approx(180.0, rel=1e-9)
    assert geometry.r_short_epi - geometry.r_short_endo == pytest.approx(0.009)


def test_mesh_cavity_matches_the_edv(patient, lv_mesh):
    assert lv_mesh.cavity_volume_ml() == pytest.approx(patient.edv_ml, rel=0.02)
    # The sized ellipsoid itself is right: the final correction for faceting is small.
    assert abs(lv_mesh.meta["volume_scale"] - 1.0) < 0.02


def test_regions_match_the_patient_and_the_mesher_conforms(patient):
    mesh = check_mesher(
        EllipsoidMesher(EllipsoidMeshSettings(element_size_mm=7.0)), patient, tolerance_pct=1.0
    )
    scar = mesh.cell_data["region"] == REGION_SCAR
    # Scar stays in the endocardial fraction `transmurality` of the wall.
    assert mesh.cell_data["transmural_coordinate"][scar].max() <= patient.transmurality + 1e-9


def test_infarct_sits_in_the_requested_segments(patient, lv_mesh):
    segments = lv_mesh.cell_data["aha_segment"]
    assert set(np.unique(segments)) == set(range(1, 18))
    scar_segments = segments[lv_mesh.cell_data["region"] == REGION_SCAR]
    volumes = lv_mesh.element_volumes_m3()[lv_mesh.cell_data["region"] == REGION_SCAR]
    anteroapical = np.isin(scar_segments, [7, 13, 17, 1, 8, 12, 14, 16])
    assert volumes[anteroapical].sum() / volumes.sum() > 0.8


def test_border_zone_surrounds_the_scar(lv_mesh):
    region = lv_mesh.cell_data["region"]
    scar_nodes = set(np.unique(lv_mesh.tetrahedra[region == REGION_SCAR]).tolist())
    bz = lv_mesh.tetrahedra[region == REGION_BORDER_ZONE]
    touching = np.array([any(n in scar_nodes for n in tet) for tet in bz])
    assert touching.mean() > 0.3  # much of the border zone shares nodes with scar


def test_footprint_is_the_wall_over_the_scar(patient, lv_mesh):
    """The footprint holds the whole scar and, over a non-transmural one, the viable wall
    above it: about the scar's volume over its transmurality."""
    footprint = lv_mesh.in_footprint()
    region = lv_mesh.cell_data["region"]
    volumes = lv_mesh.element_volumes_m3()
    assert np.all(footprint[region == REGION_SCAR])
    assert (footprint & (region != REGION_SCAR)).any()
    share = 100 * volumes[footprint].sum() / volumes.sum()
    expected = patient.scar_fraction_pct / patient.transmurality
    assert share == pytest.approx(expected, rel=0.25)


def test_fibres_rotate_from_endo_to_epi(lv_mesh):
    fibres = lv_mesh.cell_data["fibre_direction"]
    assert np.allclose(np.linalg.norm(fibres, axis=1), 1.0)
    centroids = lv_mesh.points_m[lv_mesh.tetrahedra].mean(axis=1)
    transmural = lv_mesh.cell_data["transmural_coordinate"]
    # Helix angle: elevation of the fibre out of the circumferential direction, towards the
    # long axis (x), measured at mid-ventricle where the wall is parallel to the axis.
    mid = np.abs(lv_mesh.cell_data["apicobasal_coordinate"] - 0.6) < 0.15
    radial = centroids[:, 1:] / np.linalg.norm(centroids[:, 1:], axis=1, keepdims=True)
    circumferential = np.stack([np.zeros(len(radial)), -radial[:, 1], radial[:, 0]], axis=1)
    helix = np.degrees(np.arctan2(fibres[:, 0], np.einsum("ij,ij->i", fibres, circumferential)))
    helix = np.where(helix > 90, helix - 180, np.where(helix < -90, helix + 180, helix))
    endo = mid & (transmural < 0.2)
    epi = mid & (transmural > 0.8)
    assert np.median(helix[endo]) > 35 and np.median(helix[epi]) < -35


def test_treatment_regions_nest_and_cover_their_border_zone_share(lv_mesh):
    volumes = lv_mesh.element_volumes_m3()
    bz = lv_mesh.cell_data["region"] == REGION_BORDER_ZONE
    scar = lv_mesh.cell_data["region"] == REGION_SCAR
    previous = None
    for coverage, share in zip(COVERAGE_PATTERNS, (0.0, 0.25, 0.5, 1.0), strict=True):
        treated = lv_mesh.treated(coverage)
        assert np.all(treated[scar])
        assert volumes[treated & bz].sum() / volumes[bz].sum() == pytest.approx(share, abs=0.03)
        if previous is not None:
            assert np.all(treated[previous])
        previous = treated


def test_mesh_is_deterministic(patient, lv_mesh):
    again = EllipsoidMesher(EllipsoidMeshSettings()).build(patient)
    np.testing.assert_array_equal(again.points_m, lv_mesh.points_m)
    np.testing.assert_array_equal(again.cell_data["region"], lv_mesh.cell_data["region"])


def test_xdmf_opens_with_every_field_and_preview_is_written(lv_mesh, tmp_path):
    write_xdmf(lv_mesh, tmp_path / "p.xdmf", {"activation_time_ms": lv_mesh.points_m[:, 0]})
    back = meshio.read(tmp_path / "p.xdmf")
    assert set(lv_mesh.cell_data) <= set(back.cell_data)
    np.testing.assert_array_equal(back.cell_data["region"][0], lv_mesh.cell_data["region"])
    write_preview(lv_mesh, tmp_path / "p.png", "preview")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_region_tags_name_the_patient_and_field(lv_mesh):
    cell_data = dict(lv_mesh.cell_data)
    del cell_data["region"]
    with pytest.raises(
        DataError,
        match=r"mesh of patient 'EXAMPLE01': cell data 'region' is "
        r"missing",
    ):
        PatientMesh(
            lv_mesh.patient_id, lv_mesh.points_m, lv_mesh.tetrahedra, cell_data, lv_mesh.surfaces
        )
    cell_data["region"] = np.full(len(lv_mesh.tetrahedra), 7)
    with pytest.raises(DataError, match="unknown tags"):
        PatientMesh(
            lv_mesh.patient_id, lv_mesh.points_m, lv_mesh.tetrahedra, cell_data, lv_mesh.surfaces
        )


def test_patient_without_infarct_is_outside_the_target_population(patient):
    with pytest.raises(DataError, match=r"scar_fraction_pct: 0 % is outside"):
        replace(patient, scar_fraction_pct=0.0).validated()


def test_implausible_patient_is_named(patient):
    with pytest.raises(
        DataError,
        match=r"patient 'EXAMPLE01': .*wall_thickness_mm: 40 mm is "
        r"outside the physiological range",
    ):
        replace(patient, wall_thickness_mm=40.0).validated()
