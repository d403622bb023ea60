"""The unloaded geometry: the heart that, filled to the patient's end-diastolic pressure,
is the patient's mesh.

The patient's mesh is the heart as imaged, at end-diastole (its cavity is the patient's EDV,
docs/physics.md §1), so it is a loaded configuration; a finite-element model needs the
stress-free one. It is found by the backward-displacement fixed point (Sellier, C R
Mécanique 2011;339:2-11; Bols et al., J Comput Appl Math 2013;246:10-17): from X_0 = x_ED,

    X_(k+1) = X_k + w (x_ED - x(X_k)),

x(X_k) the geometry FEBio reaches filling the untreated heart (at the time of injection) to
the end-diastolic pressure from X_k and w an under-relaxation, until every node lands within
:data:`UNLOADING_TOLERANCE_MM` of the mesh and the cavity within :data:`CAVITY_TOLERANCE`.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hydraopt.domain.mesh import PatientMesh, cavity_volume_m3
from hydraopt.errors import DataError
from hydraopt_simulators.febio.feb_file import ED_TIME
from hydraopt_simulators.febio.lv_model import M_TO_MM, Loading, lv_model
from hydraopt_simulators.febio.run import run_model

if TYPE_CHECKING:
    from hydraopt_simulators.febio.adapter import FEBioSettings

# Converged when every node lands within half a millimetre of the mesh (an eighth of the
# default element size, a twentieth of a typical wall) and the cavity within 0.1% of the
# mesh's (assumed tolerances; a sliver at the base can keep a single node a few tenths of a
# millimetre off while the cavity has long converged).
UNLOADING_TOLERANCE_MM = 0.5
CAVITY_TOLERANCE = 1e-3
MAX_UNLOADING_ITERATIONS = 30
DIVERGING_ITERATIONS = 3  # a miss growing this many iterations in a row stops the search
# Under-relaxation of the fixed point: a compliant wall overshoots with the full step (the
# cavity volume alternated about its target) (assumed factor).
UNLOADING_RELAXATION = 0.5


@dataclass
class Unloaded:
    """The unloaded geometry and how it was found."""

    points_m: np.ndarray
    max_error_mm: list[float] = field(default_factory=list)
    cavity_error: list[float] = field(default_factory=list)  # filled over the mesh's, - 1
    cavity_ml: float = float("nan")

    def report(self) -> dict[str, float | int | list[float]]:
        return {
            "iterations": len(self.max_error_mm),
            "max_node_error_mm": self.max_error_mm,
            "filled_cavity_relative_error": self.cavity_error,
            "unloaded_cavity_ml": self.cavity_ml,
        }


def unloaded_geometry(
    mesh: PatientMesh,
    loading: Loading,
    infarct_stiffness_ratio: float,
    folder: Path,
    settings: FEBioSettings,
) -> Unloaded:
    """The stress-free geometry of the untreated heart whose end-diastole is ``mesh``.

    Raises :class:`hydraopt.errors.DataError` when the iteration does not converge (the
    model cannot represent this heart at this pressure) and
    :class:`hydraopt_simulators.external.EvaluationFailure` when a FEBio run fails."""
    endo = mesh.surfaces["endo"]
    target_mm = mesh.points_m * M_TO_MM
    target_ml = cavity_volume_m3(mesh.points_m, endo) * 1e6
    reference_mm = target_mm.copy()
    unloaded = Unloaded(points_m=mesh.points_m)
    for iteration in range(MAX_UNLOADING_ITERATIONS):
        model = lv_model(
            mesh,
            None,
            0.0,
            0.0,
            infarct_stiffness_ratio,
            loading,
            settings.steps_per_phase,
            reference_points_m=reference_mm / M_TO_MM,
            filling_only=True,
        )
        nodes, _ = run_model(model, folder / f"iteration_{iteration:02d}", settings)
        miss_mm = reference_mm + nodes[ED_TIME] - target_mm
        error = float(np.linalg.norm(miss_mm, axis=1).max())
        filled_ml = cavity_volume_m3((target_mm + miss_mm) / M_TO_MM, endo) * 1e6
        unloaded.max_error_mm.append(error)
        unloaded.cavity_error.append(filled_ml / target_ml - 1.0)
        if error <= UNLOADING_TOLERANCE_MM and abs(filled_ml / target_ml - 1) <= CAVITY_TOLERANCE:
            unloaded.points_m = reference_mm / M_TO_MM
            unloaded.cavity_ml = cavity_volume_m3(unloaded.points_m, endo) * 1e6
            return unloaded
        if _diverging(unloaded.max_error_mm):
            break
        reference_mm = reference_mm - UNLOADING_RELAXATION * miss_mm
    raise DataError(
        f"patient {mesh.patient_id!r}: no unloaded geometry fills to the mesh at "
        f"{loading.edp_mmhg:.1f} mmHg within {UNLOADING_TOLERANCE_MM} mm and "
        f"{100 * CAVITY_TOLERANCE:g}% of its cavity after {len(unloaded.max_error_mm)} "
        f"iterations (largest miss {error:.2f} mm, cavity "
        f"{100 * unloaded.cavity_error[-1]:+.2f}%): the FEBio model cannot represent this "
        "patient"
    )


def _diverging(errors: list[float]) -> bool:
    """The miss has grown over the last :data:`DIVERGING_ITERATIONS` iterations."""
    recent = errors[-(DIVERGING_ITERATIONS + 1) :]
    return len(recent) > DIVERGING_ITERATIONS and all(
        later > earlier for earlier, later in itertools.pairwise(recent)
    )
