"""The openCARP adapter: the files it writes read back, the parameters map the reference model,
and a stand-in program that reads and writes what openCARP does exercises every way a run
can end (the real program where it is installed)."""

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from hydraopt.registry import PluginRegistry
from hydraopt.testing import check_simulator
from hydraopt_simulators.ep.activation import design_quantities, heart_model
from hydraopt_simulators.ep.reference import ReferenceEP, ReferenceEPSettings
from hydraopt_simulators.ep.solver import diffusivity_m2_per_ms
from hydraopt_simulators.opencarp.adapter import OpenCARP, OpenCARPSettings
from hydraopt_simulators.opencarp.beat import write_design_folder, write_patient_files
from hydraopt_simulators.opencarp.files import (
    ELEMENT_TAGS,
    FormatError,
    carp_mesh,
    read_mesh,
    read_vertices,
    write_mesh,
    write_vertices,
)
from hydraopt_simulators.opencarp.igb import HEADER_BYTES, read_igb, read_igb_header, write_igb
from hydraopt_simulators.opencarp.parameters import (
    CONDUCTIVITY_FLOOR_S_PER_M,
    read_parameter_file,
    stimulus_groups,
    tag_conductivities_s_per_m,
)
from hydraopt_simulators.opencarp.results import read_event_times_ms, write_event_times_ms

STANDIN = Path(__file__).parent / "standins" / "opencarp.py"


@pytest.fixture(scope="module")
def simulator():
    """The adapter with default settings: it runs whatever 'openCARP' is first on PATH."""
    return OpenCARP(OpenCARPSettings())


@pytest.fixture(scope="module")
def standin_dir(tmp_path_factory):
    """A folder holding the stand-in as an executable named openCARP, run by this
    interpreter (which has numpy, scipy and hydraopt)."""
    folder = tmp_path_factory.mktemp("bin")
    program = folder / "openCARP"
    program.write_text(f"#!{sys.executable}\n" + STANDIN.read_text())
    program.chmod(0o755)
    return folder


@pytest.fixture
def standin(standin_dir, monkeypatch):
    """The stand-in first on PATH; returns a function that sets its failure mode."""
    monkeypatch.setenv("PATH", f"{standin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("STANDIN_MODE", raising=False)
    monkeypatch.delenv("STANDIN_DESIGNS", raising=False)

    def fail(mode: str, designs: str) -> None:
        monkeypatch.setenv("STANDIN_MODE", mode)
        monkeypatch.setenv("STANDIN_DESIGNS", designs)

    return fail


@pytest.fixture
def two_designs(make_designs):
    """A thin non-conductive gel over scar and a conductive one over scar and border zone."""
    return make_designs(
        ["pegda-3400", "gelma-cnt"],
        ["scar_only", "scar_bz50"],
        [20.0, 15.0],
        [200.0, 30.0],
        [0.001, 0.2],
        [0.1, 1.0],
    )


def test_mesh_files_read_back(lv_mesh, tmp_path):
    coverage = "scar_bz50"
    write_mesh(carp_mesh(lv_mesh, coverage), tmp_path / "heart")
    assert (tmp_path / "heart.lon").read_text().splitlines()[0] == "1"
    back = read_mesh(tmp_path / "heart")
    assert np.allclose(back.points_um, lv_mesh.points_m * 1e6, atol=1e-5)
    assert np.array_equal(back.tetrahedra, lv_mesh.tetrahedra)
    assert back.tetrahedra.min() == 0 and back.tetrahedra.max() == len(lv_mesh.points_m) - 1
    treated = lv_mesh.treated(coverage)
    assert np.array_equal(back.tags, lv_mesh.cell_data["region"] + 3 * treated)
    assert set(np.unique(back.tags)) <= set(ELEMENT_TAGS)
    assert np.allclose(np.linalg.norm(back.fibres, axis=1), 1.0, atol=1e-6)


def test_vertex_file_round_trip_and_format(tmp_path):
    write_vertices(tmp_path / "stim.vtx", np.array([4, 0, 17]))
    assert (tmp_path / "stim.vtx").read_text() == "3\nintra\n4\n0\n17\n"
    assert read_vertices(tmp_path / "stim.vtx").tolist() == [4, 0, 17]
    (tmp_path / "bad.vtx").write_text("3\nintra\n4\n")
    with pytest.raises(FormatError, match="header says 3 vertices, found 1"):
        read_vertices(tmp_path / "bad.vtx")


def test_stimulus_bins_keep_each_node_within_a_millisecond_of_its_time():
    rng = np.random.default_rng(3)
    onset = np.where(rng.random(400) < 0.3, np.inf, rng.uniform(0.0, 15.0, 400))
    groups = stimulus_groups(onset)
    nodes = np.concatenate([g.nodes for g in groups])
    assert np.array_equal(np.sort(nodes), np.flatnonzero(np.isfinite(onset)))
    for group in groups:
        assert np.all(np.abs(onset[group.nodes] - group.start_ms) <= 1.0 + 1e-12)
    assert groups[0].start_ms == onset[np.isfinite(onset)].min()
    assert stimulus_groups(np.full(3, np.inf)) == []


def test_conductivities_are_the_reference_models(simulator, patient, lv_mesh, make_designs):
    """Along the fibre, each tag's conductivity is what the reference's heart model puts in an
    element of that region, untreated and treated with the gel by the same mixing rule."""
    tuned = simulator.reference.tuned(lv_mesh)
    model = heart_model(lv_mesh, tuned, simulator.settings)
    designs = make_designs("gelma-cnt", "scar_bz50", 15.0, 30.0, 0.2, 1.0)
    _, _, phi, phi_sigma = design_quantities(patient, designs, simulator.settings)
    values = tag_conductivities_s_per_m(tuned, phi[0], phi_sigma[0])
    fibres = lv_mesh.cell_data["fibre_direction"]
    tags = lv_mesh.cell_data["region"] + 3 * model.treated["scar_bz50"]
    effective = model.tissue - phi[0] * model.tissue + phi_sigma[0] * model.gel_unit
    tensors = np.where((tags >= 3)[:, None, None], effective, model.tissue)
    along = np.einsum("ei,eij,ej->e", fibres, tensors, fibres)
    floor = diffusivity_m2_per_ms(CONDUCTIVITY_FLOOR_S_PER_M)
    assert set(np.unique(tags)) == {0, 1, 4, 5}  # treated: the scar and part of the BZ
    for tag in np.unique(tags):
        expected = np.maximum(along[tags == tag], floor)
        assert np.allclose(diffusivity_m2_per_ms(values[tag, 0]), expected, rtol=1e-9)
    assert values[2].tolist() == [CONDUCTIVITY_FLOOR_S_PER_M] * 2  # untreated scar
    assert values[5, 0] > 1000 * values[2, 0]  # a conductive gel makes the scar conduct


def test_parameter_file_names_every_region_stimulus_and_detector(
    simulator, patient, lv_mesh, make_designs, tmp_path
):
    settings = simulator.settings
    tuned = simulator.reference.tuned(lv_mesh)
    model = heart_model(lv_mesh, tuned, settings)
    designs = make_designs("gelma-cnt", "scar_bz25", 15.0, 30.0, 0.2, 1.0)
    _, _, phi, phi_sigma = design_quantities(patient, designs, settings)
    files = write_patient_files(lv_mesh, model, ["scar_bz25"], tmp_path)
    folder = tmp_path / "design_00000"
    write_design_folder(folder, files, tuned, "scar_bz25", phi[0], phi_sigma[0], settings)
    par = read_parameter_file(folder / "sim.par")

    assert (par["bidomain"], par["simID"], par["meshname"]) == ("0", "out", "../mesh_scar_bz25")
    assert float(par["tend"]) == settings.max_time_ms and float(par["dt"]) == settings.dt_us
    read_mesh(folder / par["meshname"])  # the mesh it names exists and parses
    # Every tag has one conductivity region, whose harmonic mean is the monodomain value.
    expected = tag_conductivities_s_per_m(tuned, phi[0], phi_sigma[0])
    assert int(par["num_gregions"]) == len(ELEMENT_TAGS)
    for k in range(int(par["num_gregions"])):
        tag = int(par[f"gregion[{k}].ID[0]"])
        g = {key: float(par[f"gregion[{k}].{key}"]) for key in ("g_il", "g_el", "g_it", "g_in")}
        assert g["g_il"] * g["g_el"] / (g["g_il"] + g["g_el"]) == pytest.approx(expected[tag, 0])
        assert g["g_in"] == g["g_it"]
    # Every tag has exactly one ionic model: scar (tags 2 and 5) passive.
    models = {}
    for k in range(int(par["num_imp_regions"])):
        for i in range(int(par[f"imp_region[{k}].num_IDs"])):
            models.setdefault(int(par[f"imp_region[{k}].ID[{i}]"]), []).append(
                par[f"imp_region[{k}].im"]
            )
    assert models == {t: ["PASSIVE" if t in (2, 5) else "MitchellSchaeffer"] for t in ELEMENT_TAGS}
    assert "tau_in=0.3,tau_out=6,tau_open=120,tau_close=150,V_gate=0.13" in par.values()
    # The stimuli cover the fast layer's nodes, each within 1 ms of its own time.
    n_stim = int(par["num_stim"])
    assert n_stim == len([key for key in par if key.endswith(".ptcl.start")]) > 1
    stimulated = []
    for k in range(n_stim):
        nodes = read_vertices(folder / (par[f"stim[{k}].elec.vtx_file"] + ".vtx"))
        start = float(par[f"stim[{k}].ptcl.start"])
        assert np.all(np.abs(model.stimulus_ms[nodes] - start) <= 1.0 + 1e-9)
        assert par[f"stim[{k}].crct.type"] == "0" and float(par[f"stim[{k}].ptcl.duration"]) == 2.0
        stimulated.append(nodes)
    assert np.array_equal(
        np.sort(np.concatenate(stimulated)), np.flatnonzero(np.isfinite(model.stimulus_ms))
    )
    # Activation: v = 0.5 rising; repolarisation: v = V_gate falling (openCARP's mV scale).
    detectors = [par[f"lats[{k}].ID"] for k in range(int(par["num_LATs"]))]
    assert detectors == ["ACTs", "REPs"]
    assert (par["lats[0].mode"], par["lats[1].mode"]) == ("0", "1")
    assert float(par["lats[0].threshold"]) == pytest.approx(-23.1)
    assert float(par["lats[1].threshold"]) == pytest.approx(-69.8, abs=0.05)


def test_igb_round_trip_header_and_truncation(tmp_path):
    frames = np.arange(12, dtype=float).reshape(3, 4) - 80.0
    path = tmp_path / "vm.igb"
    write_igb(path, frames, start_ms=0.0, step_ms=2.5)
    raw = path.read_bytes()
    assert len(raw) == HEADER_BYTES + frames.size * 4
    assert raw[HEADER_BYTES - 1 : HEADER_BYTES] == b"\f"
    header = read_igb_header(path)
    assert (header["x"], header["t"], header["type"], header["systeme"]) == (
        "4",
        "3",
        "float",
        "little_endian",
    )
    assert all(len(line) <= 72 for line in raw[:HEADER_BYTES].decode().split("\r\n"))
    times, back = read_igb(path)
    assert times.tolist() == [0.0, 2.5, 5.0] and np.array_equal(back, frames)
    # A header may run to further 1024-byte blocks; the form feed closes it.
    long_header = b"x:4 y:1 z:1 t:3 type:float systeme:little_endian dim_t:10\r\n"
    path.write_bytes(long_header.ljust(2 * HEADER_BYTES - 1) + b"\f" + raw[HEADER_BYTES:])
    times, back = read_igb(path)
    assert times.tolist() == [0.0, 5.0, 10.0] and np.array_equal(back, frames)
    path.write_bytes(raw[:-6])
    with pytest.raises(FormatError, match="truncated"):
        read_igb(path)
    path.write_bytes(raw[:500])
    with pytest.raises(FormatError, match=r"no form feed .* shorter than a header"):
        read_igb(path)
    path.write_bytes(raw.replace(b"type:float", b"type:bytes"))
    with pytest.raises(FormatError, match="data type 'bytes'"):
        read_igb(path)


def test_event_times_never_is_inf_and_malformed_files_are_errors(tmp_path):
    path = tmp_path / "init_acts_ACTs-thresh.dat"
    write_event_times_ms(path, np.array([1.5, np.inf, 30.0]))
    assert path.read_text().splitlines()[1] == "-1.000000"
    assert read_event_times_ms(path, 3).tolist() == [1.5, np.inf, 30.0]
    with pytest.raises(FormatError, match="3 values for a mesh of 4 nodes"):
        read_event_times_ms(path, 4)
    path.write_text("1.0\nabc\n2.0\n")
    with pytest.raises(FormatError, match="line 2: 'abc' is not a number"):
        read_event_times_ms(path, 3)
    path.write_text("1.0\n-5\n2.0\n")
    with pytest.raises(FormatError, match="neither times nor -1"):
        read_event_times_ms(path, 3)


def test_standin_beat_gives_the_reference_outputs(
    simulator, standin, patient, lv_mesh, two_designs, tmp_path
):
    outcomes = check_simulator(simulator, patient, lv_mesh, two_designs, tmp_path)
    reference = ReferenceEP(ReferenceEPSettings()).outputs
    assert [(s.name, s.unit) for s in simulator.outputs] == [(s.name, s.unit) for s in reference]
    assert not outcomes.failed.any(), outcomes.failure_reason
    plausible = {
        "total_activation_time_ms": (20.0, 300.0),
        "bz_conduction_velocity_m_per_s": (0.05, 1.0),
        "conduction_block_pct": (0.0, 99.0),
        "reentry_vulnerability_index_ms": (-300.0, 600.0),
    }
    for name, (low, high) in plausible.items():
        assert np.all((outcomes[name] >= low) & (outcomes[name] <= high)), name
    # The conductive gel's conductivities reach the program: the border zone conducts faster.
    assert (
        outcomes["bz_conduction_velocity_m_per_s"][1]
        > outcomes["bz_conduction_velocity_m_per_s"][0]
    )

    run = tmp_path / "first"
    assert sorted(p.name for p in run.glob("mesh_*.elem")) == [
        "mesh_scar_bz50.elem",
        "mesh_scar_only.elem",
    ]
    assert not (run / "failures.json").exists()
    design = run / "design_00001"
    assert "+F sim.par -simID out" in (design / "program.log").read_text()
    for name in (
        "sim.par",
        "out/init_acts_ACTs-thresh.dat",
        "out/vm.igb",
        "vm.xdmf",
        "vm.h5",
        "activation.xdmf",
    ):
        assert (design / name).is_file(), name
    assert 10 < (design / "vm.xdmf").read_text().count("<Time ") <= 100
    assert "activation_time_ms" in (design / "activation.xdmf").read_text()


def test_the_registration_passes_the_conformance_checks(standin, patient, lv_mesh, two_designs):
    """From its registration, as a run uses it; in a worker process under a timeout too:
    stopped half-way, no openCARP it started survives."""
    from hydraopt.registry import PluginRegistry
    from hydraopt.testing import check_simulator_plugin

    registration = PluginRegistry.discover().get("simulator", "opencarp").registration
    outcomes = check_simulator_plugin(
        registration, {}, patient, lv_mesh, two_designs, timeout_s=300, batch_rtol=1e-6
    )
    assert not outcomes.failed.any(), outcomes.failure_reason


@pytest.mark.parametrize(
    ("mode", "kind"),
    [
        ("error", "error-termination"),
        ("garbage", "malformed-output"),
        ("missing", "missing-output"),
    ],
)
def test_a_failed_run_fails_its_design_only(
    simulator, standin, patient, lv_mesh, two_designs, tmp_path, mode, kind
):
    standin(mode, "design_00001")
    outcomes = simulator.simulate(patient, lv_mesh, two_designs, tmp_path)
    assert outcomes.failed.tolist() == [False, True]
    assert outcomes.failure_reason[1].startswith(f"{kind}: ")
    assert np.all(np.isfinite([outcomes[name][0] for name in outcomes.names]))
    assert np.all(np.isnan([outcomes[name][1] for name in outcomes.names]))
    failures = json.loads((tmp_path / "failures.json").read_text())
    assert list(failures) == ["1"] and failures["1"]["kind"] == kind
    if mode == "error":
        assert "told to fail" in outcomes.failure_reason[1]  # the log's excerpt


def test_a_hanging_run_is_killed_at_the_timeout(standin, patient, lv_mesh, two_designs, tmp_path):
    standin("hang", "design_00001")
    started = time.perf_counter()
    outcomes = OpenCARP(OpenCARPSettings(run_timeout_s=2.0)).simulate(
        patient, lv_mesh, two_designs, tmp_path
    )
    assert time.perf_counter() - started < 60
    assert outcomes.failed.tolist() == [False, True]
    assert outcomes.failure_reason[1].startswith("timeout: ")
    pids = [int(p) for p in (tmp_path / "design_00001" / "standin.pids").read_text().split()]
    assert len(pids) == 2  # the program and the child it started: both gone
    deadline = time.monotonic() + 10
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(pid) for pid in pids)


def test_a_missing_program_fails_every_design_without_stopping(
    simulator, patient, lv_mesh, make_designs, tmp_path, monkeypatch
):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    designs = make_designs(
        ["pegda-3400", "fibrin", "gelma-cnt"],
        "scar_only",
        [20.0, 1.0, 15.0],
        [200.0, 5.0, 30.0],
        [0.001, 0.9, 0.2],
        [0.1, 1.0, 1.0],
    )
    work = tmp_path / "work"
    work.mkdir()
    outcomes = simulator.simulate(patient, lv_mesh, designs, work)
    assert outcomes.failed.all()
    assert outcomes.failure_reason[0].startswith("missing-executable: 'openCARP' is not on PATH")
    assert outcomes.failure_reason[2].startswith("missing-executable: ")
    assert "outside fibrin's achievable" in outcomes.failure_reason[1]  # infeasible, never run
    assert not (work / "design_00001").exists()
    assert sorted(json.loads((work / "failures.json").read_text())) == ["0", "2"]


def test_settings_reject_unknown_keys_and_take_a_reference_ep_table(write_pipeline):
    from hydraopt.config import load_pipeline
    from hydraopt.screen_unit import at_fidelity

    from conftest import QUICK_PIPELINE

    registry = PluginRegistry.discover()
    plugin = registry.get("simulator", "opencarp")
    assert (plugin.package, plugin.version) == ("hydraopt", "1.0")
    with pytest.raises(ValidationError, match="exectuable"):
        registry.validate_settings("simulator", "opencarp", {"exectuable": "openCARP"})
    with pytest.raises(ValidationError, match="fidelity"):
        registry.validate_settings("simulator", "opencarp", {"fidelity": "exact"})
    # A reference-ep table under the new name, with hydraopt's own timeout_s beside it.
    table = """
[simulators.opencarp]
timeout_s = 7200
run_timeout_s = 600
max_time_ms = 400.0
earliest_activation_aha_segments = [2, 9, 15]
launcher = ["mpirun", "-np", "4"]
"""
    pipeline = load_pipeline(write_pipeline(QUICK_PIPELINE + table), registry)
    settings = pipeline.plugin_settings[("simulators", "opencarp")]
    assert (settings.run_timeout_s, settings.max_time_ms) == (600.0, 400.0)
    assert settings.launcher == ["mpirun", "-np", "4"]
    assert pipeline.timeout_s(("simulators", "opencarp")) == 7200
    # The screen's simulate filters set a fidelity; both run the same beat.
    handle = at_fidelity(registry.handle("simulator", "opencarp", settings), "screening")
    assert handle.settings.fidelity == "screening"


@pytest.mark.skipif(shutil.which("openCARP") is None, reason="openCARP is not installed")
def test_real_opencarp_beat_on_a_coarse_mesh(patient, make_designs, tmp_path):
    from hydraopt_simulators.lv_mesh.builder import EllipsoidMesher, EllipsoidMeshSettings

    mesh = EllipsoidMesher(EllipsoidMeshSettings(element_size_mm=6.0)).build(patient)
    designs = make_designs("gelma-cnt", "scar_bz50", 15.0, 30.0, 0.2, 1.0)
    outcomes = OpenCARP(OpenCARPSettings()).simulate(patient, mesh, designs, tmp_path)
    assert not outcomes.failed.any(), outcomes.failure_reason
    assert all(np.isfinite(outcomes[name][0]) for name in outcomes.names)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its parent counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())
