"""A patient's left-ventricular mesh: tetrahedra with the cell data simulators need.

Coordinates are in metres (as gmsh and cardiac-geometries write them). Every tetrahedron
carries its region (remote, border zone, scar), whether it lies in the infarct's footprint
(the wall over the scar, endocardium to epicardium: a non-transmural scar has viable
myocardium on top of it), AHA segment, fibre direction, normalised transmural and apicobasal
coordinates, and one treatment mask per coverage pattern. Surfaces (ENDO, EPI, BASE) are kept
as triangle lists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hydraopt.domain.design import COVERAGE_PATTERNS
from hydraopt.errors import DataError

REGION_REMOTE, REGION_BORDER_ZONE, REGION_SCAR = 0, 1, 2
REGION_NAMES = {REGION_REMOTE: "remote", REGION_BORDER_ZONE: "border zone", REGION_SCAR: "scar"}
SURFACES = ("endo", "epi", "base")


def treatment_field(coverage: str) -> str:
    return f"treatment_{coverage}"


# Cell data every mesh must carry: name -> trailing shape.
REQUIRED_CELL_DATA: dict[str, tuple[int, ...]] = {
    "region": (),
    "infarct_footprint": (),
    "aha_segment": (),
    "fibre_direction": (3,),
    "transmural_coordinate": (),
    "apicobasal_coordinate": (),
    **{treatment_field(c): () for c in COVERAGE_PATTERNS},
}


@dataclass(frozen=True, eq=False)
class PatientMesh:
    """One patient's tagged LV mesh."""

    patient_id: str
    points_m: np.ndarray
    tetrahedra: np.ndarray
    cell_data: Mapping[str, np.ndarray]
    surfaces: Mapping[str, np.ndarray]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        n = len(self.tetrahedra)
        for name, shape in REQUIRED_CELL_DATA.items():
            if name not in self.cell_data:
                problems.append(f"cell data {name!r} is missing")
            elif np.shape(self.cell_data[name]) != (n, *shape):
                problems.append(
                    f"cell data {name!r} has shape {np.shape(self.cell_data[name])}, "
                    f"expected {(n, *shape)}"
                )
        problems += [f"surface {s!r} is missing" for s in SURFACES if s not in self.surfaces]
        if problems:
            raise DataError(f"mesh of patient {self.patient_id!r}: " + "; ".join(problems))
        regions = np.unique(self.cell_data["region"])
        unknown = set(regions.tolist()) - set(REGION_NAMES)
        if unknown:
            raise DataError(
                f"mesh of patient {self.patient_id!r}: cell data 'region' holds unknown tags "
                f"{sorted(unknown)}; expected 0 (remote), 1 (border zone), 2 (scar)"
            )

    def element_volumes_m3(self) -> np.ndarray:
        p = self.points_m[self.tetrahedra]
        edges = p[:, 1:] - p[:, :1]
        return np.abs(np.linalg.det(edges)) / 6.0

    def myocardial_volume_ml(self) -> float:
        return float(self.element_volumes_m3().sum() * 1e6)

    def region_volume_fraction(self, region: int) -> float:
        volumes = self.element_volumes_m3()
        return float(volumes[self.cell_data["region"] == region].sum() / volumes.sum())

    def in_footprint(self) -> np.ndarray:
        """Boolean mask of the tetrahedra in the wall over the scar."""
        return self.cell_data["infarct_footprint"].astype(bool)

    def treated(self, coverage: str) -> np.ndarray:
        """Boolean mask of the tetrahedra the hydrogel covers under ``coverage``."""
        return self.cell_data[treatment_field(coverage)].astype(bool)

    def cavity_volume_ml(self) -> float:
        """Volume enclosed by the endocardium, closed by a fan at the base ring's centroid
        (divergence theorem; the surfaces are oriented consistently outward)."""
        return cavity_volume_m3(self.points_m, self.surfaces["endo"]) * 1e6


def cavity_volume_m3(points: np.ndarray, endo_triangles: np.ndarray) -> float:
    """Volume inside an open endocardial surface, closed at its boundary ring."""
    triangles = np.asarray(endo_triangles)
    edges = np.sort(
        np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1
    )
    unique, counts = np.unique(edges, axis=0, return_counts=True)
    ring = np.unique(unique[counts == 1])
    centre = points[ring].mean(axis=0)
    a, b, c = (points[triangles[:, k]] - centre for k in range(3))
    # Signed volumes of tetrahedra (centre, triangle): the open ring contributes nothing
    # because every tetrahedron shares the apex at the ring's centre.
    return float(abs(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0)


def box_tetrahedra(
    cells: tuple[int, int, int], size_m: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A box meshed as a structured grid of cubes, six tetrahedra per cube.

    Returns the points ``[P, 3]``, the tetrahedra ``[E, 4]`` and the node index grid
    ``[nx + 1, ny + 1, nz + 1]`` (to pick faces)."""
    nx, ny, nz = cells
    axes = [np.linspace(0.0, s, k + 1) for s, k in zip(size_m, cells, strict=True)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    index = np.arange(len(points)).reshape(nx + 1, ny + 1, nz + 1)
    cubes = np.stack(
        [
            index[:-1, :-1, :-1],
            index[1:, :-1, :-1],
            index[1:, 1:, :-1],
            index[:-1, 1:, :-1],
            index[:-1, :-1, 1:],
            index[1:, :-1, 1:],
            index[1:, 1:, 1:],
            index[:-1, 1:, 1:],
        ],
        axis=-1,
    ).reshape(-1, 8)
    # Six tetrahedra per cube around its main diagonal (corner 0 to corner 6).
    split = [[0, 1, 2, 6], [0, 2, 3, 6], [0, 3, 7, 6], [0, 7, 4, 6], [0, 4, 5, 6], [0, 5, 1, 6]]
    return points, cubes[:, split].reshape(-1, 4), index


def mean_edge_length_m(points: np.ndarray, tetrahedra: np.ndarray) -> float:
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    lengths = [
        np.linalg.norm(points[tetrahedra[:, a]] - points[tetrahedra[:, b]], axis=1)
        for a, b in pairs
    ]
    return float(np.mean(lengths))
