"""The febio simulator: its input file read back, FEBio's output formats parsed, and runs end
to end with a stand-in ``febio4`` (and the real one when it is on PATH)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from hydraopt.domain.mesh import REGION_BORDER_ZONE, REGION_SCAR
from hydraopt_simulators.external import EvaluationFailure, run_program
from hydraopt_simulators.febio.adapter import FEBio, FEBioSettings
from hydraopt_simulators.febio.feb_file import ELEMENT_VARIABLES, write_feb
from hydraopt_simulators.febio.logfile import (
    LogfileError,
    read_data_file,
    record_at,
    termination,
)
from hydraopt_simulators.febio.lv_model import (
    GUCCIONE_B_CROSS,
    GUCCIONE_B_FIBRE,
    GUCCIONE_C_KPA,
    Loading,
    _neo_hookean_deviatoric_kpa,
    facets_out_of_wall,
    lv_model,
    myocardium,
)

STANDIN = Path(__file__).parent / "standins" / "febio4.py"
SECTION_ORDER = [
    "Module",
    "Control",
    "Material",
    "Mesh",
    "MeshDomains",
    "MeshData",
    "Boundary",
    "Loads",
    "LoadData",
    "Output",
]


@pytest.fixture(scope="module")
def treated_model(lv_mesh):
    return lv_model(
        lv_mesh,
        lv_mesh.treated("scar_bz50"),
        gel_ratio=0.5,
        gel_modulus_kpa=30.0,
        infarct_stiffness_ratio=2.0,
        loading=Loading(edp_mmhg=12.0, esp_mmhg=100.0),
        steps_per_phase=10,
    )


def test_the_feb_file_has_every_section_and_consistent_references(treated_model, tmp_path):
    path = tmp_path / "model.feb"
    write_feb(treated_model, path)
    root = ET.parse(path).getroot()
    assert root.tag == "febio_spec" and root.get("version") == "4.0"
    assert [child.tag for child in root] == SECTION_ORDER
    assert root.find("Control/solver/linear_solver").get("type") == "skyline"
    materials = {m.get("name"): m for m in root.iter("material")}
    blocks = {b.get("name"): b for b in root.find("Mesh").iter("Elements")}
    # Every element once, with node ids inside the node list.
    n_nodes = len(root.find("Mesh/Nodes"))
    ids = [int(e.get("id")) for b in blocks.values() for e in b]
    assert sorted(ids) == list(range(1, len(treated_model.tetrahedra) + 1))
    connectivity = np.array(
        [[int(v) for v in e.text.split(",")] for b in blocks.values() for e in b]
    )
    assert connectivity.min() == 1 and connectivity.max() <= n_nodes
    for domain in root.find("MeshDomains"):
        assert domain.get("name") in blocks and domain.get("mat") in materials
    for data in root.find("MeshData"):
        block = blocks[data.get("elem_set")]
        material = materials[block.get("name")]
        # The fibres go to the tissue: the material's own, or its mixture's first solid's.
        if material.get("type") == "uncoupled solid mixture":
            assert data.get("type") == "solid[0].fiber"
            tissue = material.findall("solid")[0]
        else:
            assert data.get("type") == "fiber"
            tissue = material
        assert tissue.get("type") == "trans iso Veronda-Westmann"
        assert tissue.find("fiber").get("type") == "user"
        fibres = np.array([[float(v) for v in e.text.split(",")] for e in data])
        assert len(fibres) == len(block)
        np.testing.assert_allclose(np.linalg.norm(fibres, axis=1), 1.0, atol=1e-6)
    surfaces = {s.get("name") for s in root.iter("Surface")}
    node_sets = {s.get("name") for s in root.iter("NodeSet")}
    curves = {c.get("id") for c in root.iter("load_controller")}
    assert root.find("Loads/surface_load").get("surface") in surfaces
    assert root.find("Boundary/bc").get("node_set") in node_sets
    referenced = {e.get("lc") for e in root.iter() if e.get("lc")}
    assert referenced <= curves
    logged = root.find("Output/logfile/element_data").get("data").split(";")
    assert tuple(logged) == ELEMENT_VARIABLES


def test_the_gel_domains_carry_the_gels_stiffness_and_the_scar_no_contraction(
    treated_model, tmp_path
):
    parts = {p.name: p.material for p in treated_model.parts}
    tissue = myocardium()
    assert {"remote", "border_zone", "scar_gel", "border_zone_gel"} <= set(parts)
    assert parts["border_zone_gel"].gel_c1_kpa == pytest.approx(0.5 * 30.0 / 6)
    assert parts["border_zone"].gel_c1_kpa == 0.0
    write_feb(treated_model, tmp_path / "model.feb")
    root = ET.parse(tmp_path / "model.feb").getroot()
    mixture = next(m for m in root.iter("material") if m.get("name") == "border_zone_gel")
    tissue_solid, gel_solid = mixture.findall("solid")
    assert gel_solid.get("type") == "Mooney-Rivlin"
    assert float(gel_solid.find("c1").text) == pytest.approx(2.5)
    assert float(gel_solid.find("c2").text) == 0.0
    assert float(mixture.find("k").text) > 0 and float(tissue_solid.find("k").text) == 0
    assert parts["scar_gel"].t_max_kpa == 0.0
    assert parts["scar_gel"].c3_kpa == pytest.approx(2.0 * tissue.c3_kpa)
    assert parts["border_zone"].t_max_kpa == pytest.approx(0.67 * tissue.t_max_kpa)


def test_the_passive_law_meets_guccione_in_small_strain_and_at_ten_percent_stretch():
    m = myocardium()
    # Cross-fibre: the small-strain shear modulus c1 c2 is Guccione's C b_t / 2.
    assert m.c1_kpa * m.c2 == pytest.approx(GUCCIONE_C_KPA * GUCCIONE_B_CROSS / 2)
    fibre_small_strain = GUCCIONE_C_KPA * (GUCCIONE_B_FIBRE - GUCCIONE_B_CROSS)
    assert m.c3_kpa * m.c4 == pytest.approx(fibre_small_strain)
    stretch = 1.1
    strain, cross = 0.5 * (stretch**2 - 1), 0.5 * (1 / stretch - 1)
    q = GUCCIONE_B_FIBRE * strain**2 + 2 * GUCCIONE_B_CROSS * cross**2
    guccione = (
        GUCCIONE_C_KPA
        * np.exp(q)
        * (GUCCIONE_B_FIBRE * strain * stretch**2 - GUCCIONE_B_CROSS * cross / stretch)
    )
    i1 = stretch**2 + 2 / stretch
    w1, w2 = m.c1_kpa * m.c2 * np.exp(m.c2 * (i1 - 3)), -m.c1_kpa * m.c2 / 2
    isotropic = 2 * ((w1 + w2 * i1) * (stretch**2 - 1 / stretch) - w2 * (stretch**4 - stretch**-2))
    ours = isotropic + m.c3_kpa * np.expm1(m.c4 * (stretch - 1))
    assert ours == pytest.approx(guccione, rel=1e-9)


def test_endocardial_facets_face_out_of_the_wall(lv_mesh):
    facets = facets_out_of_wall(lv_mesh.tetrahedra, lv_mesh.surfaces["endo"], lv_mesh.points_m)
    p = lv_mesh.points_m
    normal = np.cross(p[facets[:, 1]] - p[facets[:, 0]], p[facets[:, 2]] - p[facets[:, 0]])
    # Out of the wall on the endocardium: towards the long axis (x), the cavity's side.
    radial = (p[facets].mean(axis=1)) * np.array([0.0, 1.0, 1.0])
    assert np.mean(np.einsum("ij,ij->i", normal, radial) < 0) > 0.99


def test_the_gels_stress_is_taken_out_of_the_myocytes():
    deformation = np.array([[[1.2, 0.1, 0.0], [0.0, 0.9, 0.05], [0.0, 0.0, 0.95]]])
    b = deformation[0] @ deformation[0].T
    j = np.linalg.det(deformation[0])
    bbar = b * j ** (-2 / 3)
    expected = 2 * 3.0 / j * (bbar - np.trace(bbar) / 3 * np.eye(3))
    np.testing.assert_allclose(
        _neo_hookean_deviatoric_kpa(deformation, np.array([3.0]))[0], expected
    )


LOGFILE = """*Step  = 1
*Time  = 0.5
*Data  = ux;uy;uz
1 0 0 0
2 0.1 0.2 0.3
*Step  = 2
*Time  = 1
*Data  = ux;uy;uz
2 1.5 2.5 3.5
1 -1e-05 0 2
"""


def test_logfile_records_are_read_in_febios_format(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text(LOGFILE)
    records = read_data_file(path)
    assert [(r.step, r.time) for r in records] == [(1, 0.5), (2, 1.0)]
    assert records[0].variables == ("ux", "uy", "uz")
    values = record_at(records, 1.0, 2, "data.txt")
    np.testing.assert_allclose(values, [[-1e-5, 0, 2], [1.5, 2.5, 3.5]])  # ordered by id


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 0 0 0\n", "data before the first '*Step'"),
        ("*Step  = 1\n*Time  = 1\n*Data  = ux;uy\n1 0 0 0\n", "rows of an id and 2 values"),
        ("*Step  = 1\n*Time  = 1\n*Data  = ux\n1 abc\n", "not a number"),
        ("*Step  = 1\n*Data  = ux\n1 0\n", "lacks *Time"),
        ("", "no data records"),
    ],
)
def test_malformed_logfiles_are_named_errors(tmp_path, text, message):
    path = tmp_path / "data.txt"
    path.write_text(text)
    with pytest.raises(LogfileError, match=re.escape(message)):
        read_data_file(path)


def test_a_missing_record_or_item_is_an_error(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text(LOGFILE)
    records = read_data_file(path)
    with pytest.raises(LogfileError, match="no record at time 2"):
        record_at(records, 2.0, 2, "data.txt")
    with pytest.raises(LogfileError, match=r"expected ids 1\.\.3"):
        record_at(records, 1.0, 3, "data.txt")


def test_the_termination_banner_is_recognised():
    assert termination("...\n N O R M A L   T E R M I N A T I O N\n") == "normal"
    assert termination(" E R R O R   T E R M I N A T I O N") == "error"
    assert termination("Segmentation fault") is None


# --- end to end with the stand-in executable ---------------------------------------------


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """``febio4`` on PATH: the stand-in, run by this interpreter."""
    folder = tmp_path / "bin"
    folder.mkdir()
    program = folder / "febio4"
    program.write_text(f"#!{sys.executable}\n" + STANDIN.read_text())
    program.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return monkeypatch


@pytest.fixture(scope="module")
def coarse_mesh(patient):
    """The example patient at 8 mm, the coarsest mesh (about 1,500 nodes): enough end to end."""
    from hydraopt_simulators.lv_mesh.builder import EllipsoidMesher, EllipsoidMeshSettings

    return EllipsoidMesher(EllipsoidMeshSettings(element_size_mm=8.0)).build(patient)


@pytest.fixture
def three_designs(make_designs):
    return make_designs(
        ["meha", "meha", "pegda-3400"],
        ["scar_bz50", "scar_bz100", "scar_only"],
        [43.0, 20.0, 50.0],
        [180.0, 120.0, 180.0],
        [0.05, 0.05, 0.02],
        [2.0, 1.0, 1.5],
    )


def simulate(patient, lv_mesh, designs, workdir, **settings):
    febio = FEBio(FEBioSettings(followup_weeks=[12.0], **settings))
    return febio.simulate(patient, lv_mesh, designs, workdir)


def test_a_stand_in_run_gives_every_output_and_keeps_its_files(
    standin, patient, coarse_mesh, three_designs, tmp_path
):
    outcomes = simulate(patient, coarse_mesh, three_designs, tmp_path / "work")
    assert not outcomes.failed.any(), outcomes.failure_reason
    for spec in outcomes.specs:
        assert np.all(np.isfinite(outcomes[spec.name])), spec.name
    assert outcomes["delta_ef_trajectory_pct"].shape == (3, 1)
    np.testing.assert_allclose(outcomes["delta_ef_trajectory_pct"][:, 0], outcomes["delta_ef_pct"])
    design = tmp_path / "work" / "design_00001" / "weeks_12"
    assert (design / "model.feb").is_file() and (design / "febio.log").is_file()
    assert (tmp_path / "work" / "untreated" / "weeks_12" / "fields.xdmf").is_file()
    import meshio

    with meshio.xdmf.TimeSeriesReader(design / "fields.xdmf") as reader:
        reader.read_points_cells()
        _, point_data, cell_data = reader.read_data(1)
    # Metres, as the geometry: the displaced heart is a heart, not a thousandfold caricature.
    displacement = point_data["displacement_m"]
    assert displacement.shape == (len(coarse_mesh.points_m), 3)
    assert 1e-4 < np.abs(displacement).max() < 0.05
    assert "myocyte_fibre_stress_kpa" in cell_data
    assert json.loads((tmp_path / "work" / "loading.json").read_text())["edp_mmhg"] > 0


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("error", "error-termination"),
        ("banner-error", "error-termination"),
        ("no-banner", "error-termination"),
        ("garbage", "malformed-output"),
        ("missing", "missing-output"),
    ],
)
def test_a_failed_run_fails_its_design_with_the_kind_and_the_log(
    standin, patient, coarse_mesh, three_designs, tmp_path, mode, kind
):
    standin.setenv("FEBIO_STANDIN_MODE", mode)
    standin.setenv("FEBIO_STANDIN_ONLY", "design_00001")
    outcomes = simulate(patient, coarse_mesh, three_designs, tmp_path / "work")
    assert outcomes.failed.tolist() == [False, True, False]
    assert outcomes.failure_reason[1].startswith(kind)
    assert np.isnan(outcomes["delta_ef_pct"][1])
    written = json.loads((tmp_path / "work" / "failures.json").read_text())
    assert written["1"]["kind"] == kind
    if mode == "error":
        assert "Negative jacobian" in outcomes.failure_reason[1]


def test_the_simulator_passes_the_conformance_checks(
    standin, patient, coarse_mesh, three_designs, tmp_path
):
    from hydraopt.registry import PluginRegistry
    from hydraopt.testing import check_simulator_plugin

    registration = PluginRegistry.discover().get("simulator", "febio").registration
    settings = {"followup_weeks": [12.0]}
    # In a worker process under a timeout too: killed half-way, no febio4 survives it.
    outcomes = check_simulator_plugin(
        registration, settings, patient, coarse_mesh, three_designs, timeout_s=300
    )
    assert not outcomes.failed.any()


def test_the_unloaded_geometry_fills_to_the_patients_mesh(
    standin, patient, coarse_mesh, three_designs, tmp_path
):
    outcomes = simulate(patient, coarse_mesh, three_designs, tmp_path / "work")
    assert not outcomes.failed.any()
    report = json.loads((tmp_path / "work" / "unloading.json").read_text())
    assert report["iterations"] >= 2
    assert report["max_node_error_mm"][-1] <= 0.5
    assert abs(report["filled_cavity_relative_error"][-1]) <= 1e-3
    # The stand-in inflates as pressure over stiffness: the unloaded cavity is smaller.
    assert report["unloaded_cavity_ml"] < coarse_mesh.cavity_volume_ml()
    untreated = json.loads((tmp_path / "work" / "untreated.json").read_text())
    filled = untreated["weeks_after_injection"]["12"]["edv_ml"]
    assert filled == pytest.approx(coarse_mesh.cavity_volume_ml(), rel=0.01)


def test_a_heart_no_unloaded_geometry_fills_is_said_so_for_every_design(
    standin, patient, coarse_mesh, three_designs, tmp_path
):
    standin.setenv("FEBIO_STANDIN_MODE", "diverge")
    standin.setenv("FEBIO_STANDIN_ONLY", "unloading")
    outcomes = simulate(patient, coarse_mesh, three_designs, tmp_path / "work")
    assert outcomes.failed.all()
    assert all("cannot represent this patient" in r for r in outcomes.failure_reason)
    assert all("no unloaded geometry" in r for r in outcomes.failure_reason)


def test_without_unloading_the_mesh_is_the_stress_free_heart(
    standin, patient, coarse_mesh, three_designs, tmp_path
):
    outcomes = simulate(patient, coarse_mesh, three_designs, tmp_path / "work", unload=False)
    assert not outcomes.failed.any()
    assert not (tmp_path / "work" / "unloading.json").exists()
    untreated = json.loads((tmp_path / "work" / "untreated.json").read_text())
    assert untreated["weeks_after_injection"]["12"]["edv_ml"] > coarse_mesh.cavity_volume_ml()


def test_a_hanging_run_is_killed_at_its_timeout(
    standin, patient, coarse_mesh, three_designs, tmp_path
):
    standin.setenv("FEBIO_STANDIN_MODE", "hang")
    standin.setenv("FEBIO_STANDIN_ONLY", "design_00002")
    outcomes = simulate(patient, coarse_mesh, three_designs, tmp_path / "work", run_timeout_s=3.0)
    assert outcomes.failed.tolist() == [False, False, True]
    assert outcomes.failure_reason[2].startswith("timeout")
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "bin")], capture_output=True)
    assert leftover.stdout == b""


def test_a_missing_program_fails_every_design_without_raising(
    patient, coarse_mesh, three_designs, tmp_path
):
    outcomes = simulate(
        patient, coarse_mesh, three_designs, tmp_path / "work", executable="no-such-febio4"
    )
    assert outcomes.failed.all()
    assert all("missing-executable" in r for r in outcomes.failure_reason)


def test_the_runner_reports_a_missing_path_and_keeps_the_exit_status(tmp_path):
    with pytest.raises(EvaluationFailure) as raised:
        run_program([str(tmp_path / "nothing")], tmp_path, 5.0)
    assert raised.value.kind == "missing-executable"
    run = run_program([sys.executable, "-c", "print('hello'); raise SystemExit(3)"], tmp_path, 30)
    assert run.returncode == 3 and "hello" in run.log_text()


def test_settings_are_checked():
    with pytest.raises(ValueError, match="endpoint_weeks"):
        FEBioSettings(followup_weeks=[1.0, 4.0], endpoint_weeks=12.0)
    with pytest.raises(ValueError, match="run_timeout_s"):
        FEBioSettings(run_timeout_s=0.0)
    with pytest.raises(ValueError, match="executable"):
        FEBioSettings(executable="")


def test_the_program_stays_in_the_callers_process_group(tmp_path):
    """So that hydraopt, stopping a task past its timeout_s (killing the worker's process
    group), stops the program with it."""
    run = run_program([sys.executable, "-c", "import os; print(os.getpgid(0))"], tmp_path, 30)
    assert int(run.log_text().split()[-1]) == os.getpgid(0)


def test_a_timeout_kills_the_programs_descendants_even_in_their_own_session(tmp_path):
    script = (
        "import os, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " start_new_session=True)\n"
        "open('pids', 'w').write(f'{os.getpid()} {child.pid}')\n"
        "time.sleep(600)\n"
    )
    with pytest.raises(EvaluationFailure) as raised:
        run_program([sys.executable, "-c", script], tmp_path, 3.0)
    assert raised.value.kind == "timeout"
    pids = [int(p) for p in (tmp_path / "pids").read_text().split()]
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_an_unexpected_error_fails_its_design_not_the_batch(tmp_path):
    from hydraopt.domain import OutputSpec
    from hydraopt_simulators.external import evaluate_rows

    def evaluate(row):
        if row == 1:
            raise ZeroDivisionError("float division by zero")
        return {"x": float(row)}

    outcomes = evaluate_rows(
        (OutputSpec("x", "1", ""),),
        3,
        [0, 1, 2],
        evaluate,
        np.zeros(3, bool),
        np.full(3, "", object),
        tmp_path,
    )
    assert outcomes.failed.tolist() == [False, True, False]
    assert outcomes["x"][[0, 2]].tolist() == [0.0, 2.0]
    assert outcomes.failure_reason[1].startswith(
        "unexpected-error: ZeroDivisionError: float division by zero"
    )
    written = json.loads((tmp_path / "failures.json").read_text())
    assert "raise ZeroDivisionError" in written["1"]["log_excerpt"]


def test_a_failure_crosses_a_process_boundary():
    import pickle

    failure = EvaluationFailure("timeout", "ran past 3 s", "last line")
    copy = pickle.loads(pickle.dumps(failure))
    assert (copy.kind, copy.message, copy.log_excerpt) == ("timeout", "ran past 3 s", "last line")


def test_the_plugin_is_registered():
    from hydraopt.registry import PluginRegistry

    assert "febio" in PluginRegistry.discover().names("simulator")


# --- the real FEBio ----------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("febio4") is None, reason="febio4 is not on PATH")
def test_the_real_febio_runs_a_coarse_patient(patient, coarse_mesh, make_designs, tmp_path):
    """FEBio itself: the unloaded heart fills to the patient's mesh, contracts, and a stiff
    gel over the scar and border zone stiffens the wall (smaller end-diastolic volume)."""
    designs = make_designs("meha", "scar_bz100", 43.0, 180.0, 0.05, 2.0)
    work = tmp_path / "work"
    outcomes = simulate(patient, coarse_mesh, designs, work, run_timeout_s=900.0)
    assert not outcomes.failed.any(), outcomes.failure_reason
    untreated = json.loads((work / "untreated.json").read_text())["weeks_after_injection"]["12"]
    assert untreated["edv_ml"] == pytest.approx(coarse_mesh.cavity_volume_ml(), rel=0.01)
    assert 0 < untreated["esv_ml"] < untreated["edv_ml"]
    assert outcomes["edv_ml"][0] < untreated["edv_ml"]
    log = (work / "design_00000" / "weeks_12" / "febio.log").read_text()
    assert "N O R M A L   T E R M I N A T I O N" in log
    region = coarse_mesh.cell_data["region"]
    assert (region == REGION_SCAR).any() and (region == REGION_BORDER_ZONE).any()
