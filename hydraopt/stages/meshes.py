"""Stage ``meshes``: every patient's tagged LV mesh, built by the configured mesher.

Each patient's mesh is one unit of work (a killed run resumes with the patients it had not
meshed); the units become the shards of the ``meshes`` artifact, one HDF5 file per patient.
An XDMF file (open it in ParaView) and a PNG preview of the regions go to ``meshes/`` in the
run directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hydraopt.domain import Cohort, Patient
from hydraopt.domain.mesh import REGION_BORDER_ZONE, REGION_SCAR
from hydraopt.mesh_io import write_mesh_h5, write_preview, write_xdmf
from hydraopt.plugin_calls import PluginHandle, call_plugin, checked_mesh
from hydraopt.stages.base import CACHE_COUNTS, Stage, StageContext, Unit, report_cache_counts

MESHER_LOC = ("mesh",)


@dataclass(frozen=True)
class MeshJob:
    patient: Patient
    mesher: PluginHandle
    views: Path
    scratch: Path
    cache: Path | None = None  # the evaluation cache's folder, which keeps meshes too
    mesher_identity: dict[str, str] | None = None


def build_patient_mesh(job: MeshJob, output: Path) -> None:
    """Build the patient's mesh (or read it from the cache) with its views."""
    stem = job.views / job.patient.patient_id
    files = {
        "mesh.h5": output,
        **{f"view{suffix}": stem.with_suffix(suffix) for suffix in (".xdmf", ".h5", ".png")},
    }
    cache = None
    if job.cache is not None and job.mesher_identity is not None:
        from hydraopt.mesh_cache import MeshCache, mesh_key

        cache = MeshCache(job.cache, mesh_key(job.mesher_identity, job.patient))
        if cache.restore(files):
            _record_cache_use(output, hit=True)
            return
    _build(job, output, stem)
    if cache is not None:
        cache.keep(files)
        _record_cache_use(output, hit=False)


def _record_cache_use(output: Path, hit: bool) -> None:
    """Whether the mesh came from the cache: provenance, not content (the digest ignores it)."""
    import json

    import h5py

    with h5py.File(output, "a") as handle:
        counts = {"hits": int(hit), "misses": int(not hit), "corrupt": 0}
        handle.attrs["provenance"] = json.dumps({CACHE_COUNTS: counts})


def _build(job: MeshJob, output: Path, stem: Path) -> None:
    job.scratch.mkdir(parents=True, exist_ok=True)
    mesh = call_plugin(job.mesher, "build", job.patient, job.scratch)
    mesh = checked_mesh(job.mesher, mesh, job.patient)
    scar = 100 * mesh.region_volume_fraction(REGION_SCAR)
    bz = 100 * mesh.region_volume_fraction(REGION_BORDER_ZONE)
    write_xdmf(mesh, stem.with_suffix(".xdmf"))
    write_preview(
        mesh,
        stem.with_suffix(".png"),
        f"{job.patient.patient_id}: scar {scar:.1f}%, border zone {bz:.1f}%, "
        f"{len(mesh.tetrahedra)} tetrahedra",
    )
    write_mesh_h5(mesh, output)


def _run(context: StageContext) -> None:
    cohort = Cohort.from_columns(context.store.tables("cohort").table("patients"))
    mesher = context.plugin(MESHER_LOC)
    views = context.store.run_dir / "meshes"
    views.mkdir(exist_ok=True)
    scratch = context.scratch_dir()
    units = [
        Unit(
            key=patient.patient_id,
            function=build_patient_mesh,
            job=MeshJob(
                patient,
                mesher,
                views,
                scratch / patient.patient_id,
                context.pipeline.cache_dir,
                context.plugins_used[MESHER_LOC],
            ),
            plugin=mesher,
            depends_on={"patient": patient.physical_record()},
            covers=("cohort",),
        )
        for patient in cohort
    ]
    done = context.run_units(units, "meshes")
    report_cache_counts(context, [unit.file for unit in done.values()], "meshes")
    context.write_shards("meshes", done, meta={"patients": list(cohort.ids)})


STAGE = Stage(
    name="meshes",
    # 2: one shard per patient instead of one table.
    version="2",
    sections=("mesh", "simulators"),
    description="build every patient's LV mesh (regions, AHA segments, fibres, treatment)",
    inputs=("cohort",),
    outputs={"meshes": "shards"},
    enabled=lambda config: bool(config.simulators) or "mesh" in config.model_fields_set,
    depends_on=lambda config: {"mesh": config.mesh.model_dump(mode="json")},
    plugins=lambda config: [MESHER_LOC],
    run=_run,
)
