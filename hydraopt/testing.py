"""Conformance checks a plugin author runs on their own plugin (and hydraopt on its own).

Each ``check_*`` function raises ``AssertionError`` with a message that says what the plugin
did wrong; call them from your test suite::

    from hydraopt.testing import check_generator, example_space

    def test_my_generator():
        check_generator(MyGenerator(MySettings()), example_space())
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

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
from hydraopt.domain.mesh import (
    REGION_BORDER_ZONE,
    REGION_REMOTE,
    REGION_SCAR,
    PatientMesh,
    box_tetrahedra,
    treatment_field,
)
from hydraopt.plugin_types import (
    PLUGIN_INTERFACES,
    Generator,
    Mesher,
    PluginRegistration,
    Simulator,
    SimulatorPlugin,
)


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


def example_designs(n: int = 8, seed: int = 0, space: DesignSpace | None = None) -> DesignBatch:
    """``n`` designs of :func:`example_space` (or ``space``), every one within its polymer's
    achievable ranges and the space's bounds, cycling through the polymers and coverage
    patterns: inputs for a simulator's conformance check without a generator."""
    space = space or example_space()
    rng = np.random.default_rng(seed)
    polymer_index = np.arange(n) % len(space.polymers)
    coverage_choice = np.arange(n) % len(space.coverages)
    columns: dict[str, np.ndarray] = {
        "polymer_index": polymer_index,
        "coverage_index": space.coverage_indices[coverage_choice],
    }
    for parameter in space.parameters:
        low = np.full(n, parameter.low)
        high = np.full(n, parameter.high)
        for i, k in enumerate(polymer_index):
            achievable = getattr(space.polymers[int(k)], parameter.name, None)
            if achievable is not None:
                low[i] = max(low[i], achievable.low)
                high[i] = min(high[i], achievable.high)
        columns[parameter.name] = low + rng.random(n) * (high - low)
    return DesignBatch.from_columns(space, columns)


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


def example_mesh(
    patient: Patient | None = None, cells: tuple[int, int, int] = (8, 8, 3)
) -> PatientMesh:
    """A slab of myocardium (40 x 40 mm, the patient's wall thickness) cut into tetrahedra,
    with every cell data field a simulator needs: a scar at the centre of its endocardial
    face, surrounded by border zone, fibres rotating from +60 to -60 degrees through the wall.
    It needs no mesher and is meant for conformance tests, not for physics."""
    patient = patient or example_patient()
    size = (0.04, 0.04, patient.wall_thickness_mm * 1e-3)
    grid, tetrahedra, index = box_tetrahedra(cells, size)
    centroids = grid[tetrahedra].mean(axis=1)
    depth = centroids[:, 2] / size[2]
    radius = np.hypot(centroids[:, 0] - size[0] / 2, centroids[:, 1] - size[1] / 2)
    scar = (radius < 0.012) & (depth <= patient.transmurality)
    border = ~scar & (radius < 0.016)
    region = np.where(scar, REGION_SCAR, np.where(border, REGION_BORDER_ZONE, REGION_REMOTE))
    helix = np.radians(60.0 - 120.0 * depth)
    fibres = np.stack([np.cos(helix), np.sin(helix), np.zeros_like(helix)], axis=1)
    surfaces = {
        "endo": _quad_triangles(index[:, :, 0]),
        "epi": _quad_triangles(index[:, :, -1]),
        "base": _quad_triangles(index[:, -1, :]),
    }
    bz_order = np.argsort(radius)
    cell_data = {
        "region": region.astype(np.int8),
        "infarct_footprint": (radius < 0.012).astype(np.int8),
        "aha_segment": np.full(len(tetrahedra), 7, dtype=np.int64),
        "fibre_direction": fibres,
        "transmural_coordinate": depth,
        "apicobasal_coordinate": centroids[:, 1] / size[1],
    }
    for coverage, share in (
        ("scar_only", 0.0),
        ("scar_bz25", 0.25),
        ("scar_bz50", 0.5),
        ("scar_bz100", 1.0),
    ):
        bz_sorted = bz_order[border[bz_order]]
        treated = scar.copy()
        treated[bz_sorted[: round(share * len(bz_sorted))]] = True
        cell_data[treatment_field(coverage)] = treated.astype(np.int8)
    return PatientMesh(
        patient.patient_id,
        grid,
        tetrahedra,
        cell_data,
        surfaces,
        meta={"mesher": "hydraopt.testing.example_mesh"},
    )


def _quad_triangles(corners: np.ndarray) -> np.ndarray:
    """Two triangles per quad of a structured grid of node indices."""
    a, b, c, d = corners[:-1, :-1], corners[1:, :-1], corners[1:, 1:], corners[:-1, 1:]
    return np.concatenate(
        [np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)]
    )


def check_mesher(mesher: Mesher, patient: Patient, tolerance_pct: float = 2.0) -> PatientMesh:
    """A mesher builds a valid mesh of the patient whose scar and border-zone volume
    fractions match the patient's, deterministically."""
    assert isinstance(mesher, Mesher), "build(patient, workdir) is missing"
    mesh = mesher.build(patient)
    assert isinstance(mesh, PatientMesh), f"build returned {type(mesh).__name__}"
    assert mesh.patient_id == patient.patient_id, "the mesh must carry the patient's id"
    assert np.all(np.isfinite(mesh.points_m)), "mesh points must be finite"
    assert np.all(mesh.element_volumes_m3() > 0), "degenerate tetrahedra"
    for region, target in (
        (REGION_SCAR, patient.scar_fraction_pct),
        (REGION_BORDER_ZONE, patient.bz_fraction_pct),
    ):
        got = 100 * mesh.region_volume_fraction(region)
        assert abs(got - target) <= tolerance_pct, (
            f"region {region} holds {got:.2f}% of the myocardium, the patient {target:.2f}%"
        )
    again = mesher.build(patient)
    assert np.array_equal(mesh.cell_data["region"], again.cell_data["region"]), (
        "two builds of the same patient differ"
    )
    return mesh


def check_simulator(
    simulator: Simulator,
    patient: Patient,
    mesh: PatientMesh,
    designs: DesignBatch,
    workdir: Path | None = None,
) -> Outcomes:
    """A simulator declares unique outputs with units and returns exactly those, one row per
    design, deterministically."""
    assert isinstance(simulator, Simulator), (
        "outputs or simulate(patient, mesh, designs, workdir) missing"
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
        first = simulator.simulate(patient, mesh, designs, base / "first")
        second = simulator.simulate(patient, mesh, designs, base / "second")
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


def check_registration(
    registration: PluginRegistration, settings: Mapping[str, Any] | None = None, build: bool = True
) -> Any:
    """Any plugin's registration as hydraopt uses it: a description for ``hydraopt
    plugins``; a settings model that validates ``settings`` (default: its defaults), refuses
    an unknown key (derive it from :class:`~hydraopt.plugin_types.PluginSettings`) and
    pickles (each worker process rebuilds the plugin from it); and, with ``build``, a factory
    whose object implements the kind's interface. Returns that object (or the validated
    settings when ``build`` is false)."""
    import pickle

    from pydantic import ValidationError

    assert isinstance(registration, PluginRegistration), (
        f"expected a plugin registration, got {type(registration).__name__}"
    )
    label = f"{registration.kind} plugin {registration.name!r}"
    assert registration.description, f"{label} has no description for `hydraopt plugins`"
    model = registration.settings
    validated = model.model_validate(dict(settings or {}))
    try:
        model.model_validate({**(settings or {}), "no_such_setting_": 1})
    except ValidationError:
        pass
    else:
        raise AssertionError(
            f"settings of {label} accept an unknown key: derive the model from "
            "hydraopt.plugin_types.PluginSettings"
        )
    # Workers receive the settings pickled and rebuild them from their plain values.
    try:
        pickle.dumps(validated)
    except Exception as exc:
        raise AssertionError(f"settings of {label} do not pickle: {exc}") from None
    assert model.model_validate(validated.model_dump()) == validated, (
        f"settings of {label} do not rebuild from their values"
    )
    if not build:
        return validated
    built = registration.factory(validated)
    interface = PLUGIN_INTERFACES[registration.kind]
    assert isinstance(built, interface), (
        f"{label}'s factory returned {type(built).__name__}, which does not implement "
        f"{interface.__name__}"
    )
    return built


def check_simulator_plugin(
    registration: SimulatorPlugin,
    settings: Mapping[str, Any] | None = None,
    patient: Patient | None = None,
    mesh: PatientMesh | None = None,
    designs: DesignBatch | None = None,
) -> Outcomes:
    """A simulator registration as hydraopt uses it: its settings model validates
    ``settings`` (default: its defaults), refuses an unknown key and pickles (each worker
    process rebuilds the simulator from it); its factory builds a :class:`Simulator` that
    passes :func:`check_simulator` on ``patient``, ``mesh`` and ``designs`` (default: the
    examples here); and ``simulate`` writes nothing outside its working directory (nor in
    the current one)."""
    import os

    assert isinstance(registration, SimulatorPlugin), (
        f"expected a SimulatorPlugin, got {type(registration).__name__}"
    )
    simulator = check_registration(registration, settings)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        workdir, elsewhere = root / "workdir", root / "current-directory"
        workdir.mkdir()
        elsewhere.mkdir()
        here = Path.cwd()
        os.chdir(elsewhere)
        try:
            outcomes = check_simulator(
                simulator,
                patient or example_patient(),
                mesh or example_mesh(),
                designs if designs is not None else example_designs(),
                workdir,
            )
        finally:
            os.chdir(here)
        written = sorted(p.name for p in elsewhere.iterdir())
        assert not written, f"simulate wrote {written} into the current directory"
        assert sorted(p.name for p in root.iterdir()) == ["current-directory", "workdir"], (
            "simulate wrote beside its working directory"
        )
    return outcomes
