"""Patient meshes on disk: columns in the run store's HDF5, XDMF for ParaView, a PNG preview."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hydraopt.atomic import atomic_path
from hydraopt.domain.mesh import REGION_NAMES, SURFACES, PatientMesh

Table = dict[str, np.ndarray]


def mesh_tables(mesh: PatientMesh, prefix: str) -> dict[str, Table]:
    """The mesh as groups of columns under ``prefix`` (for :func:`hydraopt.store.write_h5`)."""
    return {
        f"{prefix}/geometry": {"points_m": mesh.points_m, "tetrahedra": mesh.tetrahedra},
        f"{prefix}/cell_data": dict(mesh.cell_data),
        f"{prefix}/surfaces": {name: mesh.surfaces[name] for name in SURFACES},
    }


def mesh_from_tables(patient_id: str, read, prefix: str, meta: dict) -> PatientMesh:
    """Inverse of :func:`mesh_tables`; ``read(group)`` returns a group's columns."""
    geometry = read(f"{prefix}/geometry")
    return PatientMesh(
        patient_id=patient_id,
        points_m=geometry["points_m"],
        tetrahedra=geometry["tetrahedra"],
        cell_data=read(f"{prefix}/cell_data"),
        surfaces=read(f"{prefix}/surfaces"),
        meta=meta,
    )


def read_mesh_h5(path: Path, patient_id: str, prefix: str = "mesh") -> PatientMesh:
    """A mesh written by :func:`write_mesh_h5`."""
    from hydraopt.store import read_h5_attrs, read_h5_table

    meta = read_h5_attrs(path)["meta"]
    return mesh_from_tables(patient_id, lambda group: read_h5_table(path, group), prefix, meta)


def write_mesh_h5(mesh: PatientMesh, path: Path, prefix: str = "mesh") -> None:
    from hydraopt.store import write_h5

    write_h5(path, mesh_tables(mesh, prefix), provenance={}, meta=dict(mesh.meta))


def write_xdmf(
    mesh: PatientMesh, path: Path, point_data: dict[str, np.ndarray] | None = None
) -> None:
    """XDMF + HDF5 with every cell-data field (and optional point data), for ParaView."""
    import meshio

    cell_data = {name: [np.asarray(values)] for name, values in mesh.cell_data.items()}
    out = meshio.Mesh(
        mesh.points_m,
        [("tetra", mesh.tetrahedra)],
        cell_data=cell_data,
        point_data=point_data or {},
    )
    # meshio writes the .h5 beside the .xdmf; write both under temporary names, then rename.
    with atomic_path(path) as temporary:
        xdmf = temporary.with_suffix(".xdmf")
        meshio.write(xdmf, out, data_format="HDF")
        heavy = xdmf.with_suffix(".h5")
        text = xdmf.read_text().replace(heavy.name, path.with_suffix(".h5").name)
        heavy.replace(path.with_suffix(".h5"))
        xdmf.unlink()
        temporary.write_text(text)


def write_preview(mesh: PatientMesh, path: Path, title: str) -> None:
    """A small PNG: the mesh's regions seen from the front and the side, and the scar share
    of each AHA segment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centroids = mesh.points_m[mesh.tetrahedra].mean(axis=1) * 1000.0
    region = mesh.cell_data["region"]
    colours = np.array(["#d9d9d9", "#f4a261", "#9d0208"])[region]
    figure = plt.figure(figsize=(9, 3.2), dpi=100)
    # Long axis x (apex left, base right); anterior is +z, lateral +y.
    views = ((90, -90, "anterior wall (from +z)"), (0, 90, "lateral wall (from +y)"))
    for k, (elevation, azimuth, label) in enumerate(views):
        axes = figure.add_subplot(1, 3, k + 1, projection="3d")
        order = np.argsort(region)  # draw infarct on top
        axes.scatter(
            centroids[order, 0],
            centroids[order, 1],
            centroids[order, 2],
            c=colours[order],
            s=2,
            depthshade=False,
        )
        axes.view_init(elev=elevation, azim=azimuth)
        axes.set_box_aspect(np.ptp(centroids, axis=0))
        axes.set_title(label, fontsize=9)
        axes.set_axis_off()
    axes = figure.add_subplot(1, 3, 3)
    volumes = mesh.element_volumes_m3()
    segments = np.arange(1, 18)
    scar = np.array(
        [
            volumes[(mesh.cell_data["aha_segment"] == s) & (region == 2)].sum()
            / max(volumes[mesh.cell_data["aha_segment"] == s].sum(), 1e-30)
            for s in segments
        ]
    )
    axes.bar(segments, 100 * scar, color="#9d0208")
    axes.set_xlabel("AHA segment", fontsize=8)
    axes.set_ylabel("scar, % of segment", fontsize=8)
    axes.set_xticks(segments)
    axes.tick_params(labelsize=7)
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=c, label=REGION_NAMES[i])
        for i, c in enumerate(("#d9d9d9", "#f4a261", "#9d0208"))
    ]
    figure.legend(handles=handles, loc="lower left", fontsize=8, frameon=False, ncol=3)
    figure.suptitle(title, fontsize=10)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png")
    plt.close(figure)


def write_xdmf_time_series(
    points_m: np.ndarray,
    tetrahedra: np.ndarray,
    path: Path,
    frames: list[tuple[float, dict[str, np.ndarray], dict[str, np.ndarray]]],
    cell_data: dict[str, np.ndarray] | None = None,
) -> None:
    """A time series for ParaView: XDMF 3 (a temporal collection, in the layout meshio's
    ``TimeSeriesReader`` reads) with its HDF5 beside it. The mesh is stored once with
    ``cell_data``; each frame ``(time, point data, cell data)`` adds its fields. Both files
    are written under temporary names, then renamed, so a killed run never leaves half a file.

    (meshio's own ``TimeSeriesWriter`` puts the HDF5 file in the current directory, not
    beside the XDMF, so it cannot write into a run directory from a worker.)"""
    import h5py

    path = Path(path)
    heavy = path.with_suffix(".h5")
    items: list[str] = []

    def item(h5: h5py.File, name: str, values: np.ndarray) -> str:
        values = np.ascontiguousarray(values)
        h5.create_dataset(name, data=values)
        kind = "Int" if values.dtype.kind in "iub" else "Float"
        dims = " ".join(str(d) for d in values.shape)
        return (
            f'<DataItem DataType="{kind}" Dimensions="{dims}" Format="HDF" '
            f'Precision="{values.dtype.itemsize}">{heavy.name}:/{name}</DataItem>'
        )

    def attribute(h5: h5py.File, name: str, values: np.ndarray, centre: str, key: str) -> str:
        values = np.asarray(values)
        shape = {1: "Scalar", 2: "Vector" if values.ndim == 2 and values.shape[1] == 3 else ""}
        kind = shape.get(values.ndim, "") or "Matrix"
        if kind == "Scalar" and values.dtype == bool:
            values = values.astype(np.int8)
        return (
            f'<Attribute Name="{name}" AttributeType="{kind}" Center="{centre}">'
            f"{item(h5, key, values)}</Attribute>"
        )

    with atomic_path(heavy) as temporary_heavy, h5py.File(temporary_heavy, "w") as h5:
        geometry = item(h5, "mesh/points", np.asarray(points_m, dtype=float))
        topology = item(h5, "mesh/tetrahedra", np.asarray(tetrahedra, dtype=np.int64))
        static = "".join(
            attribute(h5, name, values, "Cell", f"mesh/{name}")
            for name, values in (cell_data or {}).items()
        )
        for k, (time_value, point_data, frame_cells) in enumerate(frames):
            fields = "".join(
                attribute(h5, name, values, "Node", f"frame{k}/{name}")
                for name, values in point_data.items()
            ) + "".join(
                attribute(h5, name, values, "Cell", f"frame{k}/{name}")
                for name, values in frame_cells.items()
            )
            items.append(
                '<Grid><xi:include xpointer="xpointer(//Grid[@Name=&quot;mesh&quot;]'
                '/*[self::Topology or self::Geometry])" />'
                f'<Time Value="{float(time_value)!r}" />{static}{fields}</Grid>'
            )
    text = (
        '<?xml version="1.0"?>\n<Xdmf Version="3.0" xmlns:xi="http://www.w3.org/2001/XInclude">'
        '<Domain><Grid Name="TimeSeries" GridType="Collection" CollectionType="Temporal">'
        + "".join(items)
        + '</Grid><Grid Name="mesh" GridType="Uniform">'
        f'<Geometry GeometryType="XYZ">{geometry}</Geometry>'
        f'<Topology TopologyType="Tetrahedron" NumberOfElements="{len(tetrahedra)}">'
        f"{topology}</Topology></Grid></Domain></Xdmf>\n"
    )
    with atomic_path(path) as temporary:
        temporary.write_text(text)
