"""Stage ``meshes``: every patient's tagged LV mesh, built by the configured mesher.

Each patient's mesh is written to the work folder as soon as it is built (a killed run
resumes with the patients it had not meshed), then gathered into the ``meshes`` artifact;
an XDMF file (open it in ParaView) and a PNG preview of the regions go to ``meshes/`` in the
run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydraopt.domain import Cohort, Patient
from hydraopt.domain.mesh import REGION_BORDER_ZONE, REGION_SCAR, PatientMesh
from hydraopt.mesh_io import mesh_from_tables, mesh_tables, write_preview, write_xdmf
from hydraopt.pipeline import Stage, StageContext
from hydraopt.plugin_types import Mesher
from hydraopt.store import read_h5_attrs, read_h5_table, write_h5

MESHER_LOC = ("mesh",)


@dataclass(frozen=True)
class MeshJob:
    patient: Patient
    mesher: Mesher
    output: Path
    views: Path


def build_patient_mesh(job: MeshJob) -> Path:
    mesh = job.mesher.build(job.patient, job.output.parent)
    scar = 100 * mesh.region_volume_fraction(REGION_SCAR)
    bz = 100 * mesh.region_volume_fraction(REGION_BORDER_ZONE)
    stem = job.views / job.patient.patient_id
    write_xdmf(mesh, stem.with_suffix(".xdmf"))
    write_preview(
        mesh,
        stem.with_suffix(".png"),
        f"{job.patient.patient_id}: scar {scar:.1f}%, border zone {bz:.1f}%, "
        f"{len(mesh.tetrahedra)} tetrahedra",
    )
    write_h5(job.output, mesh_tables(mesh, "mesh"), provenance={}, meta=dict(mesh.meta))
    return job.output


def read_patient_mesh(path: Path, patient_id: str, prefix: str = "mesh") -> PatientMesh:
    meta = read_h5_attrs(path)["meta"]
    return mesh_from_tables(patient_id, lambda group: read_h5_table(path, group), prefix, meta)


def _run(context: StageContext) -> None:
    cohort = Cohort.from_columns(context.store.read_table("cohort", "patients"))
    mesher = context.plugin(MESHER_LOC)
    work = context.work_dir()
    views = context.store.run_dir / "meshes"
    views.mkdir(exist_ok=True)
    jobs = [MeshJob(p, mesher, work / f"{p.patient_id}.h5", views) for p in cohort]
    context.run_units(build_patient_mesh, jobs, "meshes")
    tables: dict[str, Any] = {}
    meta = {}
    for job in jobs:
        pid = job.patient.patient_id
        mesh = read_patient_mesh(job.output, pid)
        tables.update(mesh_tables(mesh, f"meshes/{pid}"))
        meta[pid] = dict(mesh.meta)
    context.write_artifact("meshes", tables, meta={"patients": list(cohort.ids), "meta": meta})


def load_meshes(store: Any, patient_ids: list[str]) -> dict[str, PatientMesh]:
    """The meshes of a finished ``meshes`` stage."""
    meta = store.read_meta("meshes")["meta"]
    return {
        pid: mesh_from_tables(
            pid, lambda group: store.read_table("meshes", group), f"meshes/{pid}", meta[pid]
        )
        for pid in patient_ids
    }


MESHES_STAGE = Stage(
    name="meshes",
    version="1",
    sections=("mesh", "simulators"),
    description="build every patient's LV mesh (regions, AHA segments, fibres, treatment)",
    inputs=("cohort",),
    outputs=("meshes",),
    enabled=lambda config: bool(config.simulators) or "mesh" in config.model_fields_set,
    depends_on=lambda config: {"mesh": config.mesh.model_dump(mode="json")},
    plugins=lambda config: [MESHER_LOC],
    run=_run,
)
