"""Linear (P1) finite elements on tetrahedra, assembled with scipy.sparse.

Used for the Laplace problems that give transmural coordinates and for the monodomain
equation. All element quantities are computed vectorised over the tetrahedra.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sparse
import scipy.sparse.linalg as sparse_linalg


def shape_gradients(points: np.ndarray, tetrahedra: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of the four P1 shape functions on each tetrahedron, ``[E, 4, 3]``, and the
    tetrahedra's volumes ``[E]`` (in the points' unit cubed)."""
    corners = points[tetrahedra]  # [E, 4, 3]
    jacobian = (corners[:, 1:] - corners[:, :1]).transpose(0, 2, 1)  # columns: edges
    volumes = np.abs(np.linalg.det(jacobian)) / 6.0
    inverse = np.linalg.inv(jacobian)  # rows: gradients of barycentric coordinates 1..3
    gradients = np.empty((len(tetrahedra), 4, 3))
    gradients[:, 1:] = inverse
    gradients[:, 0] = -inverse.sum(axis=1)
    return gradients, volumes


def stiffness_matrix(
    points: np.ndarray,
    tetrahedra: np.ndarray,
    tensors: np.ndarray | None = None,
    n_nodes: int | None = None,
) -> sparse.csr_matrix:
    """K_ij = sum_e |e| grad(phi_i) . D_e grad(phi_j), with D_e a [E, 3, 3] tensor per
    element (identity when None), over the given tetrahedra; ``n_nodes`` (default: all points)
    sets the matrix size."""
    gradients, volumes = shape_gradients(points, tetrahedra)
    flux = gradients if tensors is None else np.einsum("eab,ejb->eja", tensors, gradients)
    local = np.einsum("eia,eja->eij", gradients, flux) * volumes[:, None, None]
    rows = np.repeat(tetrahedra, 4, axis=1).ravel()
    cols = np.tile(tetrahedra, (1, 4)).ravel()
    n = len(points) if n_nodes is None else n_nodes
    return sparse.csr_matrix((local.ravel(), (rows, cols)), shape=(n, n))


def lumped_mass(
    points: np.ndarray, tetrahedra: np.ndarray, weights: np.ndarray | None = None
) -> np.ndarray:
    """Row-summed (lumped) P1 mass matrix as a vector: a quarter of each element's volume
    (times its weight, when given) to each of its nodes."""
    _, volumes = shape_gradients(points, tetrahedra)
    if weights is not None:
        volumes = volumes * weights
    mass = np.zeros(len(points))
    np.add.at(mass, tetrahedra.ravel(), np.repeat(volumes / 4.0, 4))
    return mass


def solve_laplace(
    points: np.ndarray, tetrahedra: np.ndarray, fixed: dict[float, np.ndarray]
) -> np.ndarray:
    """Solve the Laplace equation with Dirichlet values ``{value: node indices}`` and zero
    flux elsewhere; returns the nodal solution."""
    stiffness = stiffness_matrix(points, tetrahedra).tocsr()
    n = len(points)
    solution = np.zeros(n)
    is_fixed = np.zeros(n, dtype=bool)
    for value, nodes in fixed.items():
        solution[nodes] = value
        is_fixed[nodes] = True
    free = ~is_fixed
    rhs = -stiffness[free][:, is_fixed] @ solution[is_fixed]
    solution[free] = sparse_linalg.spsolve(stiffness[free][:, free].tocsc(), rhs)
    return solution
