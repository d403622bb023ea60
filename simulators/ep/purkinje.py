"""The fast endocardial layer: where and when the Purkinje system excites the endocardium.

Ventricular models without an explicit His-Purkinje network stand in for it with a thin,
fast-conducting sub-endocardial layer (Gillette et al., Ann Biomed Eng 2021; Rodero et al.,
PLoS Comput Biol 2021;17:e1008851: isotropic, seven times the bulk fibre velocity, from the
apex to 70% of the way to the base). The layer is far thinner than a screening mesh's
elements, so it is not meshed: its activation spreads over the endocardial surface as the
eikonal solution from the earliest-activated sites, T(x) = geodesic distance / CV_layer
(shortest paths along the surface's edges, scipy's Dijkstra), and every excitable node of the
layer is stimulated at its time (the reaction-eikonal coupling of Neic et al., J Comput Phys
2017;346:191-211). The timing does not depend on the mesh beyond the small error of edge
paths, which is what makes total activation converge with resolution.

Earliest sites (Durrer et al., Circulation 1970;41:899-912, isolated human hearts): high on
the anterior paraseptal wall, central on the left septal surface, and posterior paraseptal a
third of the way from apex to base, excited within 0-5 ms and confluent within 15-20 ms.
Subendocardial Purkinje fibres survive over infarcts (Friedman, Stewart & Wit, Circ Res
1973;33:612-626), so the layer runs over the scar; only excitable nodes are stimulated.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sparse
from scipy.sparse.csgraph import dijkstra

from hydraopt.domain.mesh import PatientMesh
from hydraopt_simulators.ep.solver import node_mask_of_elements

ROOT_RADIUS_M = 0.005


def endocardial_activation_ms(
    mesh: PatientMesh,
    root_segments: Sequence[int],
    velocity_m_per_s: float,
    layer_extent: float,
    edge_length_m: float,
) -> np.ndarray:
    """Per node, the time [ms] the fast endocardial layer reaches it (inf off the layer)."""
    points = mesh.points_m
    triangles = np.asarray(mesh.surfaces["endo"])
    apex, base = points[:, 0].min(), points[:, 0].max()
    apicobasal = (points[:, 0] - apex) / (base - apex)
    on_layer = np.zeros(len(points), dtype=bool)
    on_layer[np.unique(triangles)] = True
    roots = root_nodes(mesh, root_segments, edge_length_m)
    on_layer &= apicobasal <= layer_extent
    on_layer |= roots
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    edges = edges[on_layer[edges].all(axis=1)]
    lengths = np.linalg.norm(points[edges[:, 0]] - points[edges[:, 1]], axis=1)
    graph = sparse.coo_matrix((lengths, (edges[:, 0], edges[:, 1])), shape=(len(points),) * 2)
    distance = dijkstra(graph.tocsr(), directed=False, indices=np.flatnonzero(roots), min_only=True)
    times = 1e3 * distance / velocity_m_per_s  # ms
    return np.where(on_layer, times, np.inf)


def root_nodes(mesh: PatientMesh, segments: Sequence[int], edge_length_m: float) -> np.ndarray:
    """Endocardial nodes within a radius of the centre of each root segment's endocardium."""
    n_nodes = len(mesh.points_m)
    endo = np.zeros(n_nodes, dtype=bool)
    endo[np.unique(mesh.surfaces["endo"])] = True
    radius = max(ROOT_RADIUS_M, 1.5 * edge_length_m)
    roots = np.zeros(n_nodes, dtype=bool)
    for segment in segments:
        in_segment = node_mask_of_elements(
            mesh.tetrahedra, mesh.cell_data["aha_segment"] == segment, n_nodes, False
        )
        candidates = np.flatnonzero(endo & in_segment)
        if not len(candidates):
            raise ValueError(f"no endocardium in AHA segment {segment}")
        centre = mesh.points_m[candidates].mean(axis=0)
        site = candidates[np.argmin(np.linalg.norm(mesh.points_m[candidates] - centre, axis=1))]
        roots |= endo & (np.linalg.norm(mesh.points_m - mesh.points_m[site], axis=1) <= radius)
    return roots
