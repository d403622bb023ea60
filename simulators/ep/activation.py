"""Activation and repolarisation of a batch of designs on one patient's mesh, and the measures.

Conductivities (:mod:`.tissue`): remote and border-zone tissue tuned to their target
velocities at the mesh's resolution; scar none. In a treated element the gel occupies the
volume fraction phi = g / (1 + g) (g its in-vivo thickness over the wall's, :mod:`hydrogel`)
and conducts in parallel with the tissue (Wiener's upper bound for layers along the
current), its physical conductivity scaled by the mesh's correction factors exactly as the
tissue's is:

    sigma_eff = (1 - phi) sigma_tissue + phi sigma_gel (c_cross I + (c_fibre - c_cross) f f^T)

The endocardium is excited by the fast endocardial layer (:mod:`.purkinje`).

Re-entry vulnerability index (Child et al., Heart Rhythm 2015;12:1644-1653; in silico: Hill et
al., PLoS One 2016;11:e0149342): for every pair of activated myocardial nodes within a radius,
the repolarisation time of the one activated first minus the activation time of the other,
RVI = RT_proximal - AT_distal. Re-entry needs the distal tissue to re-excite the proximal
tissue once it has recovered; the smaller the interval, the closer a site is to that, and a
negative value means a wave could already return. Each node takes its smallest interval; the
output is the value below which the most vulnerable 5% of the myocardium lies. On a single
beat it measures the substrate (slow conduction and dispersed repolarisation), not
inducibility (Campos et al., Comput Biol Med 2019;108:263-275), and the search radius affects
its value: compare designs at one radius.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sparse

from hydraopt.domain import COVERAGE_PATTERNS, DesignBatch, Patient
from hydraopt.domain.mesh import REGION_BORDER_ZONE, REGION_SCAR, PatientMesh
from hydraopt_simulators.ep.purkinje import endocardial_activation_ms
from hydraopt_simulators.ep.solver import (
    PLATEAU_STEP_MS,
    UPSTROKE_STEP_MS,
    Problem,
    node_mask_of_elements,
    solve_activation,
)
from hydraopt_simulators.ep.tissue import TunedConductivity, conductivity_tensors
from hydraopt_simulators.fem import lumped_mass, shape_gradients, stiffness_matrix
from hydraopt_simulators.hydrogel import gel_state, polymer_feasibility

# Membrane (capacitance) per volume of scar relative to myocardium (assumed: the fibroblasts
# and surviving myocytes of a scar).
SCAR_CAPACITANCE_FRACTION = 0.1
STEP_CHUNK = 256  # designs per block of eigenvalue bounds (memory)
RVI_DESIGN_CHUNK = 8  # designs per block of pair computations (memory)
# The RVI reported is that of the most vulnerable 5% of the myocardium: the single smallest
# pair is decided by how the mesh cuts the scar's edge (Campos et al. 2019 on its sensitivity
# to sampling), a volume share is not (assumed share).
RVI_VULNERABLE_SHARE = 0.05
# Total activation is the time by which this share of the excitable myocardium has activated:
# the last node's time alone is a sliver at the scar's edge, which depends on how the mesh
# cuts it (assumed; the QRS ends when the bulk of the ventricle is activated).
ACTIVATED_SHARE = 0.99
OUTPUT_NAMES = (
    "total_activation_time_ms",
    "bz_conduction_velocity_m_per_s",
    "conduction_block_pct",
    "reentry_vulnerability_index_ms",
)


@dataclass(frozen=True)
class GelParts:
    """The stiffness of one patient's heart split so that any design is a weighted sum:

        K = K_tissue - phi sum_k K_tissue,k + phi sigma_gel sum_k K_gel,k

    over the classes k of treated elements its coverage pattern covers (elements grouped by
    the coverage patterns that treat them: nested patterns give one class per shell). Designs
    of every coverage pattern are then weighted sums of the same parts, and a design's
    coefficients differ from the untreated tissue's only on the rows its classes touch."""

    tissue: sparse.csr_matrix  # the tissue over every element
    classes: list[tuple[np.ndarray, sparse.csr_matrix, sparse.csr_matrix]]  # (covered by
    # [coverage], tissue over the class, 1 S/m of gel over the class)
    bounds: np.ndarray  # [coverage, 3, excitable nodes] Gershgorin row sums over mass of
    # the untreated tissue, the treated tissue and 1 S/m of gel (time steps)


@dataclass(frozen=True)
class HeartModel:
    """One patient's mesh as the monodomain sees it, whatever the design: geometry, tissue
    conductivities, capacitance, excitable nodes and the fast layer's stimulus. A design
    enters only through its coverage pattern, the gel's volume fraction phi in the treated
    elements and phi sigma_gel (:meth:`solve`)."""

    points: np.ndarray
    tetrahedra: np.ndarray
    gradients: np.ndarray
    region: np.ndarray
    mass: np.ndarray
    excitable: np.ndarray
    stimulus_ms: np.ndarray
    tissue: np.ndarray  # [E, 3, 3] diffusivity of the tissue
    gel_unit: np.ndarray  # [E, 3, 3] diffusivity of 1 S/m of gel, corrected as the tissue is
    treated: dict[str, np.ndarray]  # coverage -> treated element mask
    rvi_radius_m: float
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def gel_parts(self) -> GelParts:
        """The stiffness parts (assembled once per patient)."""
        if "gel_parts" not in self.cache:
            self.cache["gel_parts"] = self._assemble_gel_parts()
        return self.cache["gel_parts"]

    def _assemble_gel_parts(self) -> GelParts:
        n_nodes = len(self.points)
        covered = np.stack([self.treated[c] for c in COVERAGE_PATTERNS], axis=1)  # [E, cov]
        tissue = stiffness_matrix(self.points, self.tetrahedra, self.tissue, n_nodes)
        classes = []
        for signature in np.unique(covered[covered.any(axis=1)], axis=0):
            elements = np.all(covered == signature, axis=1)
            part = self.tetrahedra[elements]
            classes.append(
                (
                    signature,
                    stiffness_matrix(self.points, part, self.tissue[elements], n_nodes),
                    stiffness_matrix(self.points, part, self.gel_unit[elements], n_nodes),
                )
            )
        bounds = np.empty((len(COVERAGE_PATTERNS), 3, int(self.excitable.sum())))
        for c in range(len(COVERAGE_PATTERNS)):
            none = sparse.csr_matrix(tissue.shape)
            treated = sum((part for covers, part, _ in classes if covers[c]), none)
            gel = sum((part for covers, _, part in classes if covers[c]), none)
            for k, matrix in enumerate((tissue - treated, treated, gel)):
                rows = np.asarray(abs(matrix).sum(axis=1)).ravel()
                bounds[c, k] = rows[self.excitable] / self.mass[self.excitable]
        return GelParts(tissue, classes, bounds)

    def treated_tissue_conducts(self, coverage: str) -> bool:
        """Whether the treated elements hold conducting tissue; when they do not (a scar-only
        patch over scar), phi acts only through phi sigma_gel."""
        return bool(np.any(self.tissue[self.treated[coverage]]))

    def solve(
        self,
        coverage: np.ndarray,
        phi: np.ndarray,
        phi_sigma: np.ndarray,
        settings,
        repolarise: bool | np.ndarray = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Activation and repolarisation times [nodes, designs] of designs with coverage
        patterns ``coverage`` (indices into COVERAGE_PATTERNS), gel volume fractions ``phi``
        and ``phi_sigma`` [S/m]. Without ``repolarise`` (per design), a beat stops once every
        node has activated and repolarisation is all inf. Designs are integrated in lanes
        (:func:`.solver.solve_activation`), each with the steps and stages its stiffness needs."""
        n = len(phi)
        coverage = np.asarray(coverage, dtype=int)
        repolarise = np.broadcast_to(np.asarray(repolarise, dtype=bool), (n,))
        largest = self.largest_eigenvalues(coverage, phi, phi_sigma)
        # Alike designs next to each other, so that they share the solver's lanes.
        order = np.lexsort((phi, phi_sigma, coverage))
        problem = self.problem(coverage[order], phi[order], phi_sigma[order], largest[order])
        solution = solve_activation(problem, settings.max_time_ms, repolarise[order])
        activation = np.empty_like(solution.times_ms)
        repolarisation = np.empty_like(solution.repolarisation_ms)
        activation[:, order] = solution.times_ms
        repolarisation[:, order] = solution.repolarisation_ms
        return activation, repolarisation

    def problem(
        self,
        coverage: np.ndarray,
        phi: np.ndarray,
        phi_sigma: np.ndarray,
        eigenvalue_bounds: np.ndarray | None = None,
        step_ms: float = UPSTROKE_STEP_MS,
        plateau_step_ms: float = PLATEAU_STEP_MS,
    ) -> Problem:
        """The monodomain problem of a batch of designs, integrated with steps up to
        ``step_ms`` while an upstroke may be under way and ``plateau_step_ms`` after, their
        stages set by ``eigenvalue_bounds`` (:meth:`largest_eigenvalues`; None: the
        problem's own, looser, bound)."""
        gel = self.gel_parts()
        parts = [(gel.tissue, np.ones(len(phi)))]
        for covers, tissue, unit_gel in gel.classes:
            inside = covers[coverage]
            if inside.any():
                parts += [(tissue, -phi * inside), (unit_gel, phi_sigma * inside)]
        return Problem(
            self.mass,
            parts,
            self.excitable,
            self.stimulus_ms,
            step_ms,
            plateau_step_ms,
            eigenvalue_bounds,
        )

    def largest_eigenvalues(
        self, coverage: np.ndarray, phi: np.ndarray, phi_sigma: np.ndarray
    ) -> np.ndarray:
        """Each design's Gershgorin bound on the largest eigenvalue of M^-1 K over the
        excitable nodes [1/ms], which sets its stages (:func:`.solver.time_stepping`)."""
        bounds = self.gel_parts().bounds
        largest = np.empty(len(phi))
        for start in range(0, len(phi), STEP_CHUNK):
            chunk = slice(start, start + STEP_CHUNK)
            weights = np.stack([np.ones_like(phi[chunk]), 1.0 - phi[chunk], phi_sigma[chunk]], 1)
            rows = np.einsum("dk,dkn->dn", weights, bounds[coverage[chunk]])
            largest[chunk] = rows.max(axis=1)
        return largest

    def measures(self, activation: np.ndarray, repolarisation: np.ndarray) -> dict[str, np.ndarray]:
        return measures(
            activation,
            repolarisation,
            self.points,
            self.gradients,
            self.tetrahedra,
            self.region,
            self.mass,
            self.excitable,
            np.isfinite(self.stimulus_ms),
            self.rvi_radius_m,
        )


def heart_model(mesh: PatientMesh, tuned: TunedConductivity, settings) -> HeartModel:
    points, tetrahedra = mesh.points_m, mesh.tetrahedra
    n_nodes = len(points)
    region = mesh.cell_data["region"]
    fibres = mesh.cell_data["fibre_direction"]
    gradients, _ = shape_gradients(points, tetrahedra)
    # Capacitance follows membrane area: scar keeps a small share (fibroblasts), so the
    # myocytes next to it are not loaded with the scar's volume.
    scar = region == REGION_SCAR
    mass = lumped_mass(points, tetrahedra, np.where(scar, SCAR_CAPACITANCE_FRACTION, 1.0))
    bz = region == REGION_BORDER_ZONE
    along = np.select([scar, bz], [0.0, tuned["bz_fibre"]], tuned["remote_fibre"])
    across = np.select([scar, bz], [0.0, tuned["bz_cross"]], tuned["remote_cross"])
    ones = np.ones(len(tetrahedra))
    excitable = ~node_mask_of_elements(tetrahedra, scar, n_nodes, True)
    layer_ms = endocardial_activation_ms(
        mesh,
        settings.earliest_activation_aha_segments,
        settings.fast_layer_velocity_m_per_s,
        settings.fast_layer_extent,
        tuned.edge_length_m,
    )
    return HeartModel(
        points=points,
        tetrahedra=tetrahedra,
        gradients=gradients,
        region=region,
        mass=mass,
        excitable=excitable,
        stimulus_ms=np.where(excitable, layer_ms, np.inf),
        tissue=conductivity_tensors(fibres, along, across),
        gel_unit=conductivity_tensors(
            fibres, tuned.correction("fibre") * ones, tuned.correction("cross") * ones
        ),
        treated={c: mesh.treated(c) for c in COVERAGE_PATTERNS},
        rvi_radius_m=settings.rvi_radius_mm * 1e-3,
    )


def design_quantities(
    patient: Patient, designs: DesignBatch, settings
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per design: infeasible mask and reasons, the gel's volume fraction phi in the treated
    elements and phi sigma_gel [S/m]: all the monodomain sees of a design besides its
    coverage pattern."""
    infeasible, reasons = polymer_feasibility(designs)
    gel = gel_state(designs, patient.wall_thickness_mm, settings.evaluation_weeks)
    phi = gel.thickness_ratio / (1.0 + gel.thickness_ratio)
    return infeasible, reasons, phi, phi * designs.conductivity_s_per_m


def evaluate_designs(
    patient: Patient,
    mesh: PatientMesh,
    designs: DesignBatch,
    tuned: TunedConductivity,
    settings,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Outputs (name -> [n]), failed mask, failure reasons, and the activation and
    repolarisation maps ([nodes, n] each; empty at screening fidelity, whose outputs are
    interpolated, not solved per design)."""
    from hydraopt_simulators.ep.screening import screened_outputs

    model = heart_model(mesh, tuned, settings)
    n = len(designs)
    infeasible, reasons, phi, phi_sigma = design_quantities(patient, designs, settings)
    rows = np.flatnonzero(~infeasible)
    values = {name: np.full(n, np.nan) for name in OUTPUT_NAMES}
    maps: dict[str, np.ndarray] = {}
    coverage = designs.coverage_index[rows]
    if not len(rows):
        found = {name: np.empty(0) for name in OUTPUT_NAMES}
    elif settings.fidelity == "screening":
        found = screened_outputs(model, coverage, phi[rows], phi_sigma[rows], settings).values
    else:
        at, rt = model.solve(coverage, phi[rows], phi_sigma[rows], settings)
        found = model.measures(at, rt)
        for name, times in (("activation_time_ms", at), ("repolarisation_time_ms", rt)):
            maps[name] = np.full((len(model.points), n), np.nan)
            maps[name][:, rows] = np.where(np.isfinite(times), times, np.nan)
    for name in OUTPUT_NAMES:
        values[name][rows] = found[name]
    failed = infeasible | ~np.isfinite(values["total_activation_time_ms"])
    reasons = np.where(
        infeasible | ~failed, reasons, "no myocardium activated within the simulated time"
    )
    for name in values:
        values[name][infeasible] = np.nan
    return values, failed, reasons, maps


def measures(
    activation: np.ndarray,
    repolarisation: np.ndarray,
    points: np.ndarray,
    gradients: np.ndarray,
    tetrahedra: np.ndarray,
    region: np.ndarray,
    mass: np.ndarray,
    excitable: np.ndarray,
    stimulated: np.ndarray,
    rvi_radius_m: float,
) -> dict[str, np.ndarray]:
    """Total activation time, BZ velocity, block and the RVI per design (columns)."""
    finite = np.isfinite(activation)
    total = total_activation_ms(activation, mass, excitable)
    blocked = (~finite & excitable[:, None]) * mass[:, None]
    block_pct = 100.0 * blocked.sum(axis=0) / mass[excitable].sum()
    velocity = local_velocity_m_per_s(activation, gradients, tetrahedra)
    # Elements with a stimulated node conduct at the fast layer's pace, not the tissue's.
    away = ~np.any(stimulated[tetrahedra], axis=1)
    bz_elements = (region == REGION_BORDER_ZONE) & away
    with warnings.catch_warnings():  # designs without any usable BZ element give NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        bz_cv = np.nanmedian(np.where(bz_elements[:, None], velocity, np.nan), axis=0)
    return {
        "total_activation_time_ms": total,
        "bz_conduction_velocity_m_per_s": bz_cv,
        "conduction_block_pct": block_pct,
        "reentry_vulnerability_index_ms": reentry_vulnerability_index(
            activation, repolarisation, points, mass, excitable, rvi_radius_m
        ),
    }


def total_activation_ms(
    activation: np.ndarray, mass: np.ndarray, excitable: np.ndarray
) -> np.ndarray:
    """Per design, the time by which :data:`ACTIVATED_SHARE` of the myocardium that activates
    at all (by volume) has activated (block is measured apart); NaN when none activates."""
    result = np.full(activation.shape[1], np.nan)
    for j in range(activation.shape[1]):
        activated = excitable & np.isfinite(activation[:, j])
        if not activated.any():
            continue
        times = activation[activated, j]
        order = np.argsort(times)
        reached = np.cumsum(mass[activated][order]) / mass[activated].sum()
        index = min(int(np.searchsorted(reached, ACTIVATED_SHARE)), len(times) - 1)
        result[j] = times[order][index]
    return result


def local_velocity_m_per_s(
    activation: np.ndarray, gradients: np.ndarray, tetrahedra: np.ndarray
) -> np.ndarray:
    """1 / |grad T| per element and design, T the P1 activation-time field (NaN where an
    element has a node that never activated)."""
    corner = activation[tetrahedra]  # [E, 4, n]
    usable = np.all(np.isfinite(corner), axis=1)
    slope = np.einsum("eia,ein->ean", gradients, np.where(np.isfinite(corner), corner, 0.0))
    pace = np.linalg.norm(slope, axis=1)  # ms/m
    return np.where(usable & (pace > 0), 1000.0 / np.where(pace > 0, pace, 1.0), np.nan)


def reentry_vulnerability_index(
    activation: np.ndarray,
    repolarisation: np.ndarray,
    points: np.ndarray,
    mass: np.ndarray,
    excitable: np.ndarray,
    radius_m: float,
) -> np.ndarray:
    """Per design, the RVI [ms] below which :data:`RVI_VULNERABLE_SHARE` of the myocardium
    (by volume) lies. A node's RVI is the smallest RT(node) - AT(neighbour) over the
    neighbours within ``radius_m`` that activate after it."""
    from scipy.spatial import cKDTree

    nodes = np.flatnonzero(excitable)
    pairs = cKDTree(points[nodes]).query_pairs(radius_m, output_type="ndarray")
    a, b = nodes[pairs[:, 0]], nodes[pairs[:, 1]]
    n_nodes, n_designs = activation.shape
    result = np.full(n_designs, np.nan)
    # Beats stopped at activation have no repolarisation times, hence no RVI.
    repolarised = np.flatnonzero(np.isfinite(repolarisation).any(axis=0))
    for start in range(0, len(repolarised), RVI_DESIGN_CHUNK):
        cols = repolarised[start : start + RVI_DESIGN_CHUNK]
        at_a, at_b = activation[a][:, cols], activation[b][:, cols]
        a_first = at_a <= at_b
        proximal = np.where(a_first, a[:, None], b[:, None])
        with np.errstate(invalid="ignore"):
            rvi = np.where(
                a_first, repolarisation[a][:, cols] - at_b, repolarisation[b][:, cols] - at_a
            )
        node_rvi = np.full(n_nodes * len(cols), np.inf)
        valid = np.isfinite(rvi)
        flat = (proximal + n_nodes * np.arange(len(cols))[None, :])[valid]
        np.minimum.at(node_rvi, flat, rvi[valid])
        node_rvi = node_rvi.reshape(len(cols), n_nodes)
        for k, column in enumerate(cols):
            result[column] = _volume_quantile(node_rvi[k], mass, RVI_VULNERABLE_SHARE)
    return result


def _volume_quantile(values: np.ndarray, mass: np.ndarray, share: float) -> float:
    """The value below which ``share`` of the volume of the finite entries lies."""
    finite = np.isfinite(values)
    if not finite.any():
        return np.nan
    order = np.argsort(values[finite])
    reached = np.cumsum(mass[finite][order]) / mass[finite].sum()
    index = min(int(np.searchsorted(reached, share)), int(finite.sum()) - 1)
    return float(values[finite][order][index])
