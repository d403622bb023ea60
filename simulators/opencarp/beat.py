"""One design's beat through openCARP: its folder, the run, and what is read back.

A patient's designs share the mesh files (one set per coverage pattern in use, since the
element tags say which elements are treated) and the stimulus vertex files, written once into
the work directory. Each design gets a folder ``design_NNNNN`` with its parameter file
``sim.par``; openCARP runs there (``openCARP +F sim.par -simID out``) and writes into ``out/``.
Anything that keeps a design from a result is an :class:`EvaluationFailure` of a named kind.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hydraopt.domain.mesh import PatientMesh
from hydraopt_simulators.ep.activation import HeartModel
from hydraopt_simulators.ep.tissue import TunedConductivity
from hydraopt_simulators.external import EvaluationFailure, resolve_executable, run_program
from hydraopt_simulators.opencarp.files import (
    FormatError,
    carp_mesh,
    element_tags,
    write_mesh,
    write_vertices,
)
from hydraopt_simulators.opencarp.igb import read_igb
from hydraopt_simulators.opencarp.parameters import (
    ACTIVATION_ID,
    REPOLARISATION_ID,
    SIMULATION_ID,
    simulation_parameters,
    stimulus_groups,
    tag_conductivities_s_per_m,
    write_parameter_file,
)
from hydraopt_simulators.opencarp.results import event_file, read_event_times_ms

if TYPE_CHECKING:
    from hydraopt_simulators.opencarp.adapter import OpenCARPSettings

PARAMETER_FILE = "sim.par"
VM_FILE = "vm.igb"
MAX_MAP_FRAMES = 100  # frames of V_m kept for ParaView: enough to watch the wave


@dataclass(frozen=True)
class PatientFiles:
    """What one patient's designs share: mesh base names by coverage pattern and the
    stimuli as (vertex file base name, start [ms]), all relative to a design's folder."""

    mesh_names: dict[str, str]
    stimuli: list[tuple[str, float]]


def write_patient_files(
    mesh: PatientMesh, model: HeartModel, coverages: list[str], workdir: Path
) -> PatientFiles:
    """The mesh files of each coverage pattern in ``coverages`` and the stimulus vertex
    files (from the fast endocardial layer's timing in ``model``) into ``workdir``."""
    workdir = Path(workdir)
    mesh_names = {}
    for coverage in coverages:
        write_mesh(carp_mesh(mesh, coverage), workdir / f"mesh_{coverage}")
        mesh_names[coverage] = f"../mesh_{coverage}"
    stimuli = []
    for k, stimulus in enumerate(stimulus_groups(model.stimulus_ms)):
        write_vertices(workdir / f"stimulus_{k:02d}.vtx", stimulus.nodes)
        # openCARP's tutorials name the vertex file without its .vtx extension.
        stimuli.append((f"../stimulus_{k:02d}", stimulus.start_ms))
    return PatientFiles(mesh_names, stimuli)


def write_design_folder(
    folder: Path,
    files: PatientFiles,
    tuned: TunedConductivity,
    coverage: str,
    phi: float,
    phi_sigma_s_per_m: float,
    settings: OpenCARPSettings,
) -> None:
    """``folder/sim.par`` for one design; an earlier run's outputs are removed, so that they
    can never pass for this run's."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(folder / SIMULATION_ID, ignore_errors=True)
    parameters = simulation_parameters(
        files.mesh_names[coverage],
        tag_conductivities_s_per_m(tuned, phi, phi_sigma_s_per_m),
        files.stimuli,
        tend_ms=settings.max_time_ms,
        dt_us=settings.dt_us,
        spacedt_ms=settings.spacedt_ms,
    )
    write_parameter_file(folder / PARAMETER_FILE, parameters)


def run_beat(
    folder: Path, n_nodes: int, settings: OpenCARPSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Run openCARP in ``folder``; activation and repolarisation times [ms] per node (inf:
    never)."""
    executable = resolve_executable(settings.executable)
    argv = [
        *settings.launcher,
        executable,
        "+F",
        PARAMETER_FILE,
        "-simID",
        SIMULATION_ID,
        *settings.extra_arguments,
    ]
    run = run_program(argv, folder, settings.run_timeout_s)
    if run.returncode != 0:
        status = (
            f"was killed by signal {-run.returncode}"
            if run.returncode < 0
            else f"exited with status {run.returncode}"
        )
        raise EvaluationFailure("error-termination", f"openCARP {status}", run.excerpt())
    output = folder / SIMULATION_ID
    paths = [event_file(output, event) for event in (ACTIVATION_ID, REPOLARISATION_ID)]
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        raise EvaluationFailure(
            "missing-output",
            f"openCARP exited normally but wrote no {', '.join(missing)} in {output}",
            run.excerpt(),
        )
    try:
        activation, repolarisation = (read_event_times_ms(path, n_nodes) for path in paths)
    except FormatError as error:
        raise EvaluationFailure("malformed-output", str(error), run.excerpt()) from None
    return activation, repolarisation


def write_maps(
    folder: Path,
    mesh: PatientMesh,
    coverage: str,
    activation_ms: np.ndarray,
    repolarisation_ms: np.ndarray,
) -> None:
    """For ParaView: ``vm.xdmf``, V_m over the beat (at most :data:`MAX_MAP_FRAMES`
    frames of openCARP's ``vm.igb``), and ``activation.xdmf``, the activation and
    repolarisation times (NaN: never)."""
    from hydraopt.mesh_io import write_xdmf_time_series

    path = folder / SIMULATION_ID / VM_FILE
    if not path.is_file():
        raise EvaluationFailure("missing-output", f"openCARP wrote no {VM_FILE} in {path.parent}")
    try:
        times_ms, frames = read_igb(path)
    except FormatError as error:
        raise EvaluationFailure("malformed-output", str(error)) from None
    if frames.shape[1] != len(mesh.points_m):
        raise EvaluationFailure(
            "malformed-output",
            f"{VM_FILE} holds {frames.shape[1]} nodes, the mesh {len(mesh.points_m)}",
        )
    cells = {
        "region": np.asarray(mesh.cell_data["region"]),
        "treated": mesh.treated(coverage),
        "tag": element_tags(mesh, coverage),
    }
    stride = max(1, math.ceil(len(times_ms) / MAX_MAP_FRAMES))
    write_xdmf_time_series(
        mesh.points_m,
        mesh.tetrahedra,
        folder / "vm.xdmf",
        frames=[
            (t, {"vm_mV": frame}, {})
            for t, frame in zip(times_ms[::stride], frames[::stride], strict=True)
        ],
        cell_data=cells,
    )
    fields = {
        "activation_time_ms": np.where(np.isfinite(activation_ms), activation_ms, np.nan),
        "repolarisation_time_ms": np.where(
            np.isfinite(repolarisation_ms), repolarisation_ms, np.nan
        ),
    }
    write_xdmf_time_series(
        mesh.points_m, mesh.tetrahedra, folder / "activation.xdmf", [(0.0, fields, {})], cells
    )
