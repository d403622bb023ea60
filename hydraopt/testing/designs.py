"""Conformance of generators and meshers: designs in the space, meshes of the patient."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hydraopt.domain import DesignBatch, DesignSpace, Patient
from hydraopt.domain.mesh import REGION_BORDER_ZONE, REGION_SCAR, PatientMesh
from hydraopt.plugin_types import Generator, GeneratorPlugin, Mesher, MesherPlugin
from hydraopt.testing.examples import example_patient, example_space
from hydraopt.testing.registration import check_registration, confined


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
    stream = getattr(generator, "stream", None)
    if callable(stream):
        chunks = list(stream(space, n, max(1, n // 3), np.random.default_rng(1)))
        assert sum(len(c) for c in chunks) == n, (
            f"stream(space, {n}, chunk_size, rng) yielded {sum(len(c) for c in chunks)} designs"
        )
        for chunk in chunks:
            assert isinstance(chunk, DesignBatch) and chunk.space == space, (
                "stream must yield DesignBatch chunks of the space"
            )
            for name, mask in chunk.out_of_bounds().items():
                assert not mask.any(), f"stream yielded {name} outside the design space"
    return first


def check_mesher(
    mesher: Mesher, patient: Patient, tolerance_pct: float = 2.0, workdir: Any = None
) -> PatientMesh:
    """A mesher builds a valid mesh of the patient whose scar and border-zone volume
    fractions match the patient's, deterministically."""
    assert isinstance(mesher, Mesher), "build(patient, workdir) is missing"
    mesh = mesher.build(patient, workdir)
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
    again = mesher.build(patient, workdir)
    assert np.array_equal(mesh.cell_data["region"], again.cell_data["region"]), (
        "two builds of the same patient differ"
    )
    return mesh


def check_generator_plugin(
    registration: GeneratorPlugin,
    settings: Mapping[str, Any] | None = None,
    space: DesignSpace | None = None,
    n: int = 64,
) -> DesignBatch:
    """:func:`check_registration`, then :func:`check_generator` on ``space`` (default
    :func:`example_space`), writing nothing outside its working directory."""
    assert isinstance(registration, GeneratorPlugin), (
        f"expected a GeneratorPlugin, got {type(registration).__name__}"
    )
    generator = check_registration(registration, settings)
    with confined("generate"):
        return check_generator(generator, space or example_space(), n)


def check_mesher_plugin(
    registration: MesherPlugin,
    settings: Mapping[str, Any] | None = None,
    patient: Patient | None = None,
    tolerance_pct: float = 2.0,
) -> PatientMesh:
    """:func:`check_registration`, then :func:`check_mesher` on ``patient`` (default
    :func:`example_patient`), writing nothing outside the working directory it is given."""
    assert isinstance(registration, MesherPlugin), (
        f"expected a MesherPlugin, got {type(registration).__name__}"
    )
    mesher = check_registration(registration, settings)
    with confined("build") as workdir:
        return check_mesher(mesher, patient or example_patient(), tolerance_pct, workdir)
