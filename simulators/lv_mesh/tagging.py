"""Cell data of a patient LV mesh: coordinates, AHA segments, infarct, fibres, treatment.

Conventions (long axis x from apex to base; the LV alone has no septum, so we fix one):
anterior is +z, septal -y, inferior -z, lateral +y. The circumferential angle is measured from
anterior towards the septum.

* Transmural coordinate: Laplace solution, 0 on the endocardium, 1 on the epicardium.
* Apicobasal coordinate: 0 at the epicardial apex, 1 at the base plane.
* AHA 17 segments (Cerqueira et al., Circulation 2002;105:539-542): the apical cap below the
  endocardial apex is segment 17; the rest is cut into basal, mid and apical thirds along the
  long axis; basal and mid rings have six 60 degree segments starting at anterior (1, 7),
  the apical ring four 90 degree segments (13 anterior, 14 septal, 15 inferior, 16 lateral).
* Infarct: centred on the infarct segments' centroid; the scar takes the tetrahedra closest
  to it (distance on the unrolled wall) within the endocardial fraction ``transmurality``
  of the wall until its volume is the patient's scar fraction; the border zone then takes the
  tetrahedra closest to the scar (laterally and towards the epicardium) until its volume is
  the patient's border-zone fraction. The footprint is the wall over the scar: every
  tetrahedron no farther from the centre, on the unrolled wall, than the scar's outermost.
* Fibres: rule-based (Bayer et al., Ann Biomed Eng 2012;40:2243-2254), helix angle varying
  linearly from +60 degrees at the endocardium to -60 at the epicardium, rotating the
  circumferential direction about the transmural direction towards the apicobasal one.
* Treatment: scar only, or scar plus the 25, 50 or 100% of the border zone (by volume)
  nearest the scar.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hydraopt.domain import COVERAGE_PATTERNS, Patient
from hydraopt.domain.mesh import REGION_BORDER_ZONE, REGION_REMOTE, REGION_SCAR, treatment_field
from hydraopt.errors import DataError
from hydraopt_simulators.fem import shape_gradients, solve_laplace

BZ_SHARE_OF_COVERAGE = {"scar_only": 0.0, "scar_bz25": 0.25, "scar_bz50": 0.5, "scar_bz100": 1.0}
ANTERIOR = np.array([0.0, 0.0, 1.0])
SEPTAL = np.array([0.0, -1.0, 0.0])


@dataclass(frozen=True)
class TaggingSettings:
    infarct_segments: tuple[int, ...]
    helix_endo_deg: float
    helix_epi_deg: float


def circumferential_angle(centroids: np.ndarray) -> np.ndarray:
    """Angle in [0, 360) degrees from anterior (+z) towards septal (-y)."""
    return np.mod(np.degrees(np.arctan2(-centroids[:, 1], centroids[:, 2])), 360.0)


def aha_segments(apicobasal: np.ndarray, angle_deg: np.ndarray, cap: float) -> np.ndarray:
    """AHA segment (1-17) of each element from its apicobasal coordinate and angle."""
    third = (1.0 - cap) / 3.0
    ring6 = (np.floor(np.mod(angle_deg + 30.0, 360.0) / 60.0)).astype(int)  # 0 = anterior
    ring4 = (np.floor(np.mod(angle_deg + 45.0, 360.0) / 90.0)).astype(int)
    segments = np.where(
        apicobasal >= cap + 2 * third,
        1 + ring6,
        np.where(apicobasal >= cap + third, 7 + ring6, 13 + ring4),
    )
    return np.where(apicobasal < cap, 17, segments)


def tag_mesh(
    patient: Patient,
    points: np.ndarray,
    tetrahedra: np.ndarray,
    endo_nodes: np.ndarray,
    epi_nodes: np.ndarray,
    apex_x: float,
    endo_apex_x: float,
    base_x: float,
    settings: TaggingSettings,
) -> dict[str, np.ndarray]:
    """All cell data of :data:`hydraopt.domain.mesh.REQUIRED_CELL_DATA` for one patient."""
    transmural_nodes = solve_laplace(points, tetrahedra, {0.0: endo_nodes, 1.0: epi_nodes})
    transmural = transmural_nodes[tetrahedra].mean(axis=1)
    centroids = points[tetrahedra].mean(axis=1)
    apicobasal = np.clip((centroids[:, 0] - apex_x) / (base_x - apex_x), 0.0, 1.0)
    cap = (endo_apex_x - apex_x) / (base_x - apex_x)
    angle = circumferential_angle(centroids)
    segments = aha_segments(apicobasal, angle, cap)
    gradients, volumes = shape_gradients(points, tetrahedra)
    region, border_distance, footprint = place_infarct(
        patient, centroids, transmural, segments, volumes, settings.infarct_segments
    )
    cell_data = {
        "region": region,
        "infarct_footprint": footprint.astype(np.int8),
        "aha_segment": segments,
        "transmural_coordinate": transmural,
        "apicobasal_coordinate": apicobasal,
        "fibre_direction": fibre_directions(
            gradients, transmural_nodes[tetrahedra], transmural, centroids, settings
        ),
    }
    for coverage in COVERAGE_PATTERNS:
        cell_data[treatment_field(coverage)] = treatment_region(
            region, border_distance, volumes, BZ_SHARE_OF_COVERAGE[coverage]
        ).astype(np.int8)
    return cell_data


def _unrolled_distance(centroids: np.ndarray, centre: np.ndarray) -> np.ndarray:
    """Distance on the wall unrolled around the long axis: along x, and around it at the
    element's own radius."""
    radius = np.hypot(centroids[:, 1], centroids[:, 2])
    angle = np.arctan2(centroids[:, 2], centroids[:, 1])
    centre_angle = np.arctan2(centre[2], centre[1])
    dtheta = np.angle(np.exp(1j * (angle - centre_angle)))
    return np.hypot(centroids[:, 0] - centre[0], radius * dtheta)


def place_infarct(
    patient: Patient,
    centroids: np.ndarray,
    transmural: np.ndarray,
    segments: np.ndarray,
    volumes: np.ndarray,
    infarct_segments: Sequence[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Region tags, each element's distance to the scar [m] (0 inside it) and the footprint
    mask (the wall over the scar)."""
    in_territory = np.isin(segments, infarct_segments)
    if not in_territory.any():
        raise DataError(
            f"patient {patient.patient_id!r}: no mesh element lies in the infarct "
            f"segments {list(infarct_segments)}"
        )
    weights = volumes * in_territory
    centre = (centroids * weights[:, None]).sum(axis=0) / weights.sum()
    lateral = _unrolled_distance(centroids, centre)
    total = volumes.sum()
    region = np.full(len(volumes), REGION_REMOTE, dtype=np.int8)

    scar_target = patient.scar_fraction_pct / 100.0 * total
    candidates = np.flatnonzero(transmural <= patient.transmurality)
    order = candidates[np.argsort(lateral[candidates], kind="stable")]
    count = int(np.searchsorted(np.cumsum(volumes[order]), scar_target)) + 1
    if scar_target > 0 and volumes[order].sum() < scar_target:
        raise DataError(
            f"patient {patient.patient_id!r}: scar_fraction_pct {patient.scar_fraction_pct:g}% "
            f"does not fit in the endocardial {patient.transmurality:g} of the wall"
        )
    scar = order[:count] if scar_target > 0 else order[:0]
    region[scar] = REGION_SCAR
    scar_radius = lateral[scar].max() if len(scar) else 0.0
    wall_m = patient.wall_thickness_mm * 1e-3
    distance = (
        np.maximum(lateral - scar_radius, 0.0)
        + np.maximum(transmural - patient.transmurality, 0.0) * wall_m
    )
    distance[scar] = 0.0
    footprint = (lateral <= scar_radius) if len(scar) else np.zeros(len(volumes), dtype=bool)

    bz_target = patient.bz_fraction_pct / 100.0 * total
    outside = np.flatnonzero(region != REGION_SCAR)
    order = outside[np.argsort(distance[outside], kind="stable")]
    count = int(np.searchsorted(np.cumsum(volumes[order]), bz_target)) + 1 if bz_target else 0
    region[order[:count]] = REGION_BORDER_ZONE
    return region, distance, footprint


def treatment_region(
    region: np.ndarray, border_distance: np.ndarray, volumes: np.ndarray, bz_share: float
) -> np.ndarray:
    """Scar plus the ``bz_share`` of the border zone's volume nearest the scar."""
    treated = region == REGION_SCAR
    bz = np.flatnonzero(region == REGION_BORDER_ZONE)
    if bz_share > 0 and len(bz):
        order = bz[np.argsort(border_distance[bz], kind="stable")]
        cumulative = np.cumsum(volumes[order])
        count = int(np.searchsorted(cumulative, bz_share * cumulative[-1] * (1 - 1e-12))) + 1
        treated[order[:count]] = True
    return treated


def fibre_directions(
    gradients: np.ndarray,
    transmural_corners: np.ndarray,
    transmural: np.ndarray,
    centroids: np.ndarray,
    settings: TaggingSettings,
) -> np.ndarray:
    """Unit fibre vectors per element from the transmural gradient and the long axis."""
    e_t = np.einsum("eia,ei->ea", gradients, transmural_corners)
    e_t /= np.linalg.norm(e_t, axis=1, keepdims=True)
    axis = np.array([1.0, 0.0, 0.0])
    e_l = axis - (e_t @ axis)[:, None] * e_t
    e_l /= np.linalg.norm(e_l, axis=1, keepdims=True)
    e_c = np.cross(e_l, e_t)
    helix = np.radians(
        settings.helix_endo_deg + (settings.helix_epi_deg - settings.helix_endo_deg) * transmural
    )
    fibres = np.cos(helix)[:, None] * e_c + np.sin(helix)[:, None] * e_l
    return fibres / np.linalg.norm(fibres, axis=1, keepdims=True)
