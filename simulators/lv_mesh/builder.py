"""Build a patient's tagged LV mesh with cardiac-geometries-core (gmsh) and meshio."""

from __future__ import annotations

import contextlib
import functools
import io
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from pydantic import Field

from hydraopt import hookimpl
from hydraopt.domain import Patient
from hydraopt.domain.mesh import PatientMesh, cavity_volume_m3
from hydraopt.errors import DataError
from hydraopt.plugin_types import MesherPlugin, PluginSettings
from hydraopt_simulators.lv_mesh.geometry import size_ellipsoid

# Version of the meshes this module makes: bump when the geometry or the tags change.
MESHER_VERSION = "2"


class EllipsoidMeshSettings(PluginSettings):
    element_size_mm: float = Field(
        4.0,
        gt=0.5,
        le=8.0,
        description="Reference element size (gmsh psize_ref). 4 mm resolves the border zone's "
        "slow conduction (activation and RVI within 5% of 2-3 mm meshes); 6 mm is cheaper "
        "but conducts the border zone too fast; coarser than 8 mm cannot carry it at all.",
    )
    long_to_short_axis_ratio: float = Field(
        2.4,
        ge=1.2,
        le=4.0,
        description="Long over short endocardial radius; remodelled ventricles are rounder.",
    )
    infarct_segments: list[int] = Field(
        default_factory=lambda: [7, 13, 17],
        min_length=1,
        description="AHA segments (1-17) the infarct is centred on; default anteroapical "
        "(mid anterior, apical anterior, apex).",
    )
    helix_endo_deg: float = Field(60.0, description="Fibre helix angle at the endocardium.")
    helix_epi_deg: float = Field(-60.0, description="Fibre helix angle at the epicardium.")

    def model_post_init(self, context: object) -> None:
        bad = [s for s in self.infarct_segments if not 1 <= s <= 17]
        if bad:
            raise ValueError(f"infarct_segments must be AHA segments 1-17, got {bad}")


class EllipsoidMesher:
    """Truncated-ellipsoid LV sized to the patient's EDV and wall thickness."""

    def __init__(self, settings: EllipsoidMeshSettings) -> None:
        self.settings = settings

    def build(self, patient: Patient, workdir: Path | None = None) -> PatientMesh:
        import cardiac_geometries_core
        import meshio

        from hydraopt_simulators.lv_mesh.tagging import TaggingSettings, tag_mesh

        s = self.settings
        geometry = size_ellipsoid(
            patient.edv_ml, patient.wall_thickness_mm, s.long_to_short_axis_ratio
        )
        with tempfile.TemporaryDirectory(dir=workdir) as scratch:
            with _gmsh_off_the_main_thread():
                path = cardiac_geometries_core.lv_ellipsoid(
                    Path(scratch) / f"{patient.patient_id}.msh",
                    r_short_endo=geometry.r_short_endo,
                    r_short_epi=geometry.r_short_epi,
                    r_long_endo=geometry.r_long_endo,
                    r_long_epi=geometry.r_long_epi,
                    mu_base_endo=geometry.mu_base_endo,
                    mu_base_epi=geometry.mu_base_epi,
                    psize_ref=s.element_size_mm * 1e-3,
                )
            with contextlib.redirect_stdout(io.StringIO()):  # meshio's gmsh reader prints
                raw = meshio.read(path)
        points, tetrahedra, surfaces = _extract(raw, patient)
        # The faceted cavity is slightly smaller than the ellipsoid: scale to the EDV exactly.
        scale = (patient.edv_ml * 1e-6 / cavity_volume_m3(points, surfaces["endo"])) ** (1 / 3)
        points = points * scale
        endo_nodes = np.unique(surfaces["endo"])
        epi_nodes = np.unique(surfaces["epi"])
        cell_data = tag_mesh(
            patient,
            points,
            tetrahedra,
            endo_nodes,
            epi_nodes,
            apex_x=float(points[:, 0].min()),
            endo_apex_x=float(points[endo_nodes, 0].min()),
            base_x=float(points[:, 0].max()),
            settings=TaggingSettings(tuple(s.infarct_segments), s.helix_endo_deg, s.helix_epi_deg),
        )
        return PatientMesh(
            patient_id=patient.patient_id,
            points_m=points,
            tetrahedra=tetrahedra,
            cell_data=cell_data,
            surfaces=surfaces,
            meta={
                "mesher": "lv-ellipsoid",
                "mesher_version": MESHER_VERSION,
                "element_size_mm": s.element_size_mm,
                "volume_scale": scale,
                "r_long_endo_m": geometry.r_long_endo * scale,
                "r_short_endo_m": geometry.r_short_endo * scale,
            },
        )


@contextlib.contextmanager
def _gmsh_off_the_main_thread() -> Iterator[None]:
    """Let gmsh start in a thread other than the main one (a Dask worker runs its tasks in
    one). cardiac-geometries-core starts gmsh with its default ``interruptible=True``, which
    installs a SIGINT handler, and Python allows that in the main thread only; elsewhere
    gmsh is started without one, which changes nothing about the mesh."""
    import threading

    import gmsh

    if threading.current_thread() is threading.main_thread():
        yield
        return
    initialize = gmsh.initialize
    gmsh.initialize = functools.partial(initialize, interruptible=False)
    try:
        yield
    finally:
        gmsh.initialize = initialize


def _extract(raw, patient: Patient) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Tetrahedra and the ENDO, EPI and BASE triangles, with unused nodes dropped."""
    tags = {name: int(tag_dim[0]) for name, tag_dim in raw.field_data.items()}
    physical = raw.cell_data.get("gmsh:physical")
    if physical is None or not {"ENDO", "EPI", "BASE"} <= set(tags):
        raise DataError(
            f"mesh of patient {patient.patient_id!r}: gmsh output lacks the "
            "ENDO, EPI and BASE markers"
        )
    blocks: dict[str, list[np.ndarray]] = {"tetra": [], "endo": [], "epi": [], "base": []}
    for block, block_tags in zip(raw.cells, physical, strict=True):
        if block.type == "tetra":
            blocks["tetra"].append(block.data)
        elif block.type == "triangle":
            for name in ("ENDO", "EPI", "BASE"):
                blocks[name.lower()].append(block.data[block_tags == tags[name]])
    tetrahedra = np.concatenate(blocks["tetra"])
    used, compact = np.unique(tetrahedra, return_inverse=True)
    renumber = np.full(len(raw.points), -1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    surfaces = {name: renumber[np.concatenate(blocks[name])] for name in ("endo", "epi", "base")}
    return raw.points[used].astype(np.float64), compact.reshape(-1, 4).astype(np.int64), surfaces


@hookimpl
def hydraopt_meshers() -> Iterator[MesherPlugin]:
    yield MesherPlugin(
        name="lv-ellipsoid",
        factory=EllipsoidMesher,
        settings=EllipsoidMeshSettings,
        description="truncated-ellipsoid LV (cardiac-geometries-core, gmsh) sized to the "
        "patient, with infarct, AHA segments, fibres and treatment regions",
        version=MESHER_VERSION,
    )
