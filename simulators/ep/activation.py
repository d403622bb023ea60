"""Activation of a batch of designs on one patient's mesh, and the measures taken from it.

Arrhythmia-risk score (0 to 1), the mean of three border-zone measures, each in [0, 1]:

* conduction slowing, 1 - CV_BZ / CV_remote (median local velocities): re-entry needs a
  wavelength (velocity x refractory period) shorter than the circuit, so slow conduction in
  the border zone is its first ingredient (Kléber & Rudy, Physiol Rev 2004;84:431-488);
* conduction block, the share of excitable border-zone tissue the wave never reaches: block
  is the second ingredient (unidirectional block at the isthmus entrance; Ciaccio et al.,
  JACC Clin Electrophysiol 2018;4:1-16);
* dispersion of local velocity in the border zone, its coefficient of variation (capped at
  1): heterogeneous conduction breaks wavefronts (source-sink mismatch, same sources).

It ranks designs for the same patient; it is not a calibrated probability of arrhythmia.
"""

from __future__ import annotations

import warnings

import numpy as np

from hydraopt.domain import COVERAGE_PATTERNS, DesignBatch, Patient
from hydraopt.domain.mesh import REGION_BORDER_ZONE, REGION_REMOTE, REGION_SCAR, PatientMesh
from hydraopt_simulators.ep.solver import (
    Problem,
    diffusivity_m2_per_ms,
    node_mask_of_elements,
    solve_activation,
)
from hydraopt_simulators.ep.tissue import TunedConductivity, conductivity_tensors
from hydraopt_simulators.fem import lumped_mass, shape_gradients, stiffness_matrix
from hydraopt_simulators.hydrogel import gel_state, polymer_feasibility

BATCH = 32  # designs integrated together
STIMULUS_RADIUS_M = 0.005
# Membrane (capacitance) per volume of scar relative to myocardium (assumed: the fibroblasts
# and surviving myocytes of a scar).
SCAR_CAPACITANCE_FRACTION = 0.1


def evaluate_designs(
    patient: Patient,
    mesh: PatientMesh,
    designs: DesignBatch,
    tuned: TunedConductivity,
    settings,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Outputs (name -> [n]), failed mask, failure reasons, activation maps [nodes, n]."""
    points, tetrahedra = mesh.points_m, mesh.tetrahedra
    n_nodes, n = len(points), len(designs)
    region = mesh.cell_data["region"]
    gradients, _ = shape_gradients(points, tetrahedra)
    # Capacitance follows membrane area: scar keeps a small share (fibroblasts), so the
    # myocytes next to it are not loaded with the scar's volume.
    scar = region == REGION_SCAR
    mass = lumped_mass(points, tetrahedra, np.where(scar, SCAR_CAPACITANCE_FRACTION, 1.0))
    bz = region == REGION_BORDER_ZONE
    along = np.select([scar, bz], [0.0, tuned["bz_fibre"]], tuned["remote_fibre"])
    across = np.select([scar, bz], [0.0, tuned["bz_cross"]], tuned["remote_cross"])
    tissue = conductivity_tensors(mesh.cell_data["fibre_direction"], along, across)
    isotropic = np.broadcast_to(diffusivity_m2_per_ms(1.0) * np.eye(3), tissue.shape)
    excitable = ~node_mask_of_elements(tetrahedra, region == REGION_SCAR, n_nodes, True)
    stimulated = stimulus_nodes(mesh, settings.stimulus_aha_segments, tuned.edge_length_m,
                                excitable)

    infeasible, reasons = polymer_feasibility(designs)
    gel = gel_state(designs, patient.wall_thickness_mm, settings.evaluation_weeks)
    gel_fraction = gel.thickness_ratio / (1.0 + gel.thickness_ratio)

    maps = np.full((n_nodes, n), np.nan)
    for c, coverage in enumerate(COVERAGE_PATTERNS):
        rows = np.flatnonzero((designs.coverage_index == c) & ~infeasible)
        if not len(rows):
            continue
        # Batch-mates share a time step, set by the most conductive: group alike ones.
        rows = rows[np.argsort(gel_fraction[rows] * designs.conductivity_s_per_m[rows])]
        treated = mesh.treated(coverage)
        parts = [
            stiffness_matrix(points, tetrahedra, tissue * ~treated[:, None, None]),
            stiffness_matrix(points, tetrahedra, tissue * treated[:, None, None]),
            stiffness_matrix(points, tetrahedra, isotropic * treated[:, None, None]),
        ]
        for start in range(0, len(rows), BATCH):
            batch = rows[start : start + BATCH]
            phi = gel_fraction[batch]
            weights = [np.ones(len(batch)), 1.0 - phi, phi * designs.conductivity_s_per_m[batch]]
            problem = Problem(mass, list(zip(parts, weights, strict=True)), excitable, stimulated)
            maps[:, batch] = solve_activation(problem, settings.max_time_ms).times_ms
    values = measures(maps, gradients, tetrahedra, region, mass, excitable, stimulated)
    failed = infeasible | ~np.isfinite(values["total_activation_time_ms"])
    reasons = np.where(
        infeasible | ~failed, reasons, "no myocardium activated within the simulated time"
    )
    for name in values:
        values[name][infeasible] = np.nan
    return values, failed, reasons, np.where(np.isfinite(maps), maps, np.nan)


def stimulus_nodes(
    mesh: PatientMesh, segments: list[int], edge_length_m: float, excitable: np.ndarray
) -> np.ndarray:
    """Excitable endocardial nodes around the stimulus site: the centre of the stimulus
    segments' endocardium, or, where scar covers it, the nearest excitable endocardium."""
    n_nodes = len(mesh.points_m)
    in_segments = node_mask_of_elements(
        mesh.tetrahedra, np.isin(mesh.cell_data["aha_segment"], segments), n_nodes, False
    )
    endo = np.zeros(n_nodes, dtype=bool)
    endo[np.unique(mesh.surfaces["endo"])] = True
    if not (endo & in_segments).any():
        raise ValueError(f"no endocardium in the stimulus segments {segments}")
    centre = mesh.points_m[endo & in_segments].mean(axis=0)
    candidates = np.flatnonzero(endo & excitable)
    distance = np.linalg.norm(mesh.points_m[candidates] - centre, axis=1)
    site = mesh.points_m[candidates[np.argmin(distance)]]
    radius = max(STIMULUS_RADIUS_M, 1.5 * edge_length_m)
    near = np.linalg.norm(mesh.points_m - site, axis=1) <= radius
    return near & endo & excitable


def measures(
    times: np.ndarray,
    gradients: np.ndarray,
    tetrahedra: np.ndarray,
    region: np.ndarray,
    mass: np.ndarray,
    excitable: np.ndarray,
    stimulated: np.ndarray,
) -> dict[str, np.ndarray]:
    """Total activation time, BZ velocity, block and risk score per design (columns)."""
    finite = np.isfinite(times)
    activated = finite & excitable[:, None]
    total = np.where(
        activated.any(axis=0), np.max(np.where(activated, times, -np.inf), axis=0), np.nan
    )
    blocked = (~finite & excitable[:, None]) * mass[:, None]
    block_pct = 100.0 * blocked.sum(axis=0) / mass[excitable].sum()

    corner_times = times[tetrahedra]  # [E, 4, n]
    usable = np.all(np.isfinite(corner_times), axis=1)
    slope = np.einsum(
        "eia,ein->ean", gradients, np.where(np.isfinite(corner_times), corner_times, 0.0)
    )
    pace = np.linalg.norm(slope, axis=1)  # ms/m
    velocity = np.where(usable & (pace > 0), 1000.0 / np.where(pace > 0, pace, 1.0), np.nan)
    away = ~np.any(stimulated[tetrahedra], axis=1)  # the stimulus sets its own pace
    bz_elements = (region == REGION_BORDER_ZONE) & away
    remote_elements = (region == REGION_REMOTE) & away
    with warnings.catch_warnings():  # designs without any usable BZ element give NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        bz_cv = np.nanmedian(np.where(bz_elements[:, None], velocity, np.nan), axis=0)
        remote_cv = np.nanmedian(np.where(remote_elements[:, None], velocity, np.nan), axis=0)
        bz_values = np.where(bz_elements[:, None], velocity, np.nan)
        dispersion = np.clip(np.nanstd(bz_values, axis=0) / np.nanmean(bz_values, axis=0), 0, 1)
        slowing = np.clip(1.0 - bz_cv / remote_cv, 0.0, 1.0)
    bz_nodes = np.zeros(len(mass), dtype=bool)
    bz_nodes[np.unique(tetrahedra[region == REGION_BORDER_ZONE])] = True
    bz_nodes &= excitable
    if bz_nodes.any():
        bz_block = (~finite[bz_nodes] * mass[bz_nodes, None]).sum(axis=0) / mass[bz_nodes].sum()
    else:
        bz_block = np.zeros(times.shape[1])
    risk = (np.nan_to_num(slowing) + bz_block + np.nan_to_num(dispersion)) / 3.0
    return {
        "total_activation_time_ms": total,
        "bz_conduction_velocity_m_per_s": bz_cv,
        "conduction_block_pct": block_pct,
        "arrhythmia_risk_score": risk,
    }
