"""openCARP's mesh and vertex files, written from a :class:`PatientMesh` and read back.

openCARP reads a mesh as three text files sharing a base name (the ``meshname`` parameter):

- ``.pts``: the node count on the first line, then ``x y z`` per node in micrometres;
- ``.elem``: the element count, then ``Tt n0 n1 n2 n3 tag`` per tetrahedron (0-based nodes,
  the tag an integer region that ``gregion[]`` and ``imp_region[]`` refer to);
- ``.lon``: ``1`` (one fibre direction per element; ``2`` would add a sheet direction), then
  ``fx fy fz`` per element.

A vertex file (``.vtx``) names the nodes of a stimulus electrode: the count, the domain
(``intra``), then one 0-based node index per line.

Element tags say two things: the tissue region (0 remote, 1 border zone, 2 scar, as
:mod:`hydraopt.domain.mesh` numbers them) and whether the design's coverage pattern puts gel
on the element: ``tag = region + 3 * treated``, six tags in all, so one conductivity region per
tag carries a design's whole effect (:mod:`.parameters`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hydraopt.atomic import atomic_path
from hydraopt.domain.mesh import REGION_NAMES, PatientMesh

MICROMETRES_PER_METRE = 1e6
TREATED_TAG_OFFSET = len(REGION_NAMES)  # tag = region + 3 * treated
ELEMENT_TAGS = tuple(range(2 * len(REGION_NAMES)))
TETRAHEDRON = "Tt"


class FormatError(ValueError):
    """A file that is not in the format openCARP reads or writes: says the file and what was
    wrong with it."""


@dataclass(frozen=True)
class CarpMesh:
    """A mesh as openCARP's files hold it: points in micrometres, tetrahedra (0-based),
    element tags and one fibre direction per element."""

    points_um: np.ndarray
    tetrahedra: np.ndarray
    tags: np.ndarray
    fibres: np.ndarray


def element_tags(mesh: PatientMesh, coverage: str) -> np.ndarray:
    """Each element's tag under ``coverage``: its region, plus 3 where the gel covers it."""
    region = np.asarray(mesh.cell_data["region"], dtype=int)
    return region + TREATED_TAG_OFFSET * mesh.treated(coverage).astype(int)


def carp_mesh(mesh: PatientMesh, coverage: str) -> CarpMesh:
    return CarpMesh(
        points_um=np.asarray(mesh.points_m, dtype=float) * MICROMETRES_PER_METRE,
        tetrahedra=np.asarray(mesh.tetrahedra, dtype=np.int64),
        tags=element_tags(mesh, coverage),
        fibres=np.asarray(mesh.cell_data["fibre_direction"], dtype=float),
    )


def write_mesh(mesh: CarpMesh, basename: Path) -> None:
    """``basename.pts``, ``.elem`` and ``.lon`` (``basename`` without an extension, as
    openCARP's ``meshname`` takes it)."""
    basename = Path(basename)
    _write_table(basename.with_suffix(".pts"), len(mesh.points_um), _rows(mesh.points_um, "%.6f"))
    elements = np.column_stack([mesh.tetrahedra, mesh.tags]).astype(np.int64)
    lines = _rows(elements, "%d")
    _write_table(
        basename.with_suffix(".elem"),
        len(elements),
        "".join(f"{TETRAHEDRON} {line}\n" for line in lines.splitlines()),
    )
    # The .lon header is the number of directions per element, not the element count.
    _write_table(basename.with_suffix(".lon"), 1, _rows(mesh.fibres, "%.8f"))


def write_vertices(path: Path, nodes: np.ndarray) -> None:
    """A ``.vtx`` file naming ``nodes`` (0-based) for an intracellular stimulus."""
    nodes = np.asarray(nodes, dtype=np.int64)
    body = "intra\n" + "".join(f"{node}\n" for node in nodes)
    _write_table(Path(path), len(nodes), body)


def read_mesh(basename: Path) -> CarpMesh:
    """The mesh written by :func:`write_mesh` (or any tetrahedral openCARP mesh with tags
    and one fibre direction per element)."""
    basename = Path(basename)
    points = _read_numbers(basename.with_suffix(".pts"), columns=3)
    elem_path = basename.with_suffix(".elem")
    count, lines = _counted_lines(elem_path)
    rows = []
    for number, line in enumerate(lines, start=2):
        fields = line.split()
        if not fields or fields[0] != TETRAHEDRON or len(fields) != 6:
            raise FormatError(
                f"{elem_path.name} line {number}: expected 'Tt n0 n1 n2 n3 tag', got {line!r}"
            )
        rows.append(fields[1:])
    elements = _as_array(elem_path, rows, np.int64)
    if len(elements) != count:
        raise FormatError(f"{elem_path.name}: header says {count} elements, found {len(elements)}")
    lon_path = basename.with_suffix(".lon")
    directions, lines = _counted_lines(lon_path)
    if directions != 1:
        raise FormatError(
            f"{lon_path.name}: expected 1 fibre direction per element, got {directions}"
        )
    fibres = _as_array(lon_path, [line.split() for line in lines], float)
    if fibres.shape != (len(elements), 3):
        raise FormatError(
            f"{lon_path.name}: {len(fibres)} fibre directions for {len(elements)} elements"
        )
    if elements[:, :4].size and (elements[:, :4].min() < 0 or elements[:, :4].max() >= len(points)):
        raise FormatError(f"{elem_path.name}: node indices outside 0..{len(points) - 1}")
    return CarpMesh(points, elements[:, :4], elements[:, 4], fibres)


def read_vertices(path: Path) -> np.ndarray:
    """The 0-based node indices of a ``.vtx`` file."""
    path = Path(path)
    count, lines = _counted_lines(path)
    if not lines or lines[0].strip() not in ("intra", "extra"):
        raise FormatError(f"{path.name} line 2: expected the domain 'intra' or 'extra'")
    nodes = _as_array(path, [line.split() for line in lines[1:]], np.int64).ravel()
    if len(nodes) != count:
        raise FormatError(f"{path.name}: header says {count} vertices, found {len(nodes)}")
    return nodes


def _rows(values: np.ndarray, fmt: str) -> str:
    values = np.atleast_2d(values)
    if not len(values):
        return ""
    line = " ".join([fmt] * values.shape[1]) + "\n"
    return "".join(line % tuple(row) for row in values.tolist())


def _write_table(path: Path, header: int, body: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(f"{header}\n{body}")


def _counted_lines(path: Path) -> tuple[int, list[str]]:
    if not path.is_file():
        raise FormatError(f"{path.name}: no such file in {path.parent}")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    try:
        count = int(lines[0].split()[0])
    except (IndexError, ValueError):
        raise FormatError(f"{path.name} line 1: expected a count") from None
    return count, lines[1:]


def _read_numbers(path: Path, columns: int) -> np.ndarray:
    count, lines = _counted_lines(path)
    values = _as_array(path, [line.split() for line in lines], float)
    if values.ndim != 2 or values.shape[1] != columns or len(values) != count:
        raise FormatError(
            f"{path.name}: expected {count} rows of {columns} numbers after the header"
        )
    return values


def _as_array(path: Path, rows: list[list[str]], dtype) -> np.ndarray:
    try:
        return np.array(rows, dtype=dtype)
    except ValueError:
        raise FormatError(f"{path.name}: rows of unequal length or not numbers") from None
