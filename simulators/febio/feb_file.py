"""FEBio 4 input files (``<febio_spec version="4.0">``) for a pressurised, contracting LV.

The file holds, in FEBio's section order: Module (solid), Control (a quasi-static analysis
with must points at end-diastole and end-systole, the Skyline linear solver, present in every
FEBio build, where pyfebio's default Pardiso needs MKL), Material (per part, the myocardium
as a transversely isotropic Veronda-Westmann solid with Guccione's active contraction, mixed
with the gel's neo-Hookean solid where there is gel), Mesh (nodes, one tet4 element block
per part, the endocardial surface, the base node set), MeshDomains, MeshData (each part's
fibre directions), Boundary (base fixed), Loads (cavity pressure on the endocardium),
LoadData (load curves) and Output (logfile data files).
The layout follows FEBio's own verification inputs (febiosoftware/TestSuite, ``Verify/fi01``,
``fi10``, ``ma21``, ``ma32``).

pyfebio, the official Python package, cannot write this model: its 0.3 release accepts only
the ``pardiso`` and ``mkl_dss`` linear solvers (absent from a FEBio built without MKL) and its
``active_contraction`` has no ``Tmax``; so the file is written with the standard library's
XML tools, and the tests read it back (docs/physics.md §4.1).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hydraopt.atomic import atomic_path

SPEC_VERSION = "4.0"
# Logfile variables: displacements per node; Cauchy stress and the deformation gradient per
# element (fibre stress and stretch are computed from them and the reference fibres).
NODE_VARIABLES = ("ux", "uy", "uz")
ELEMENT_VARIABLES = (
    *("sx", "sy", "sz", "sxy", "syz", "sxz"),
    *("Fxx", "Fxy", "Fxz", "Fyx", "Fyy", "Fyz", "Fzx", "Fzy", "Fzz"),
)
NODE_DATA_FILE = "node_displacement.txt"
ELEMENT_DATA_FILE = "element_stress_deformation.txt"


TISSUE_TYPE = "trans iso Veronda-Westmann"


@dataclass(frozen=True)
class Material:
    """Myocardium: FEBio's transversely isotropic Veronda-Westmann (uncoupled),
    W = c1 (exp(c2 (I1 - 3)) - 1) - c1 c2 (I2 - 3) / 2 + F2(fibre stretch), with Guccione's
    active contraction; where a gel is, ``gel_c1_kpa`` > 0 adds its neo-Hookean energy
    gel_c1 (I1 - 3) as a second solid of a mixture. Stresses in kPa, lengths in mm."""

    c1_kpa: float
    c2: float
    c3_kpa: float
    c4: float
    c5_kpa: float
    lam_max: float
    bulk_modulus_kpa: float
    t_max_kpa: float
    ca0: float
    ca_max: float
    beta_per_um: float
    l0_um: float
    refl_um: float
    gel_c1_kpa: float = 0.0


@dataclass(frozen=True)
class Part:
    """A set of tetrahedra with one material: 0-based rows into the model's elements."""

    name: str
    elements: np.ndarray
    material: Material


@dataclass(frozen=True)
class LVModel:
    """Everything the .feb says, in model units (mm, kPa, model time).

    The time runs 0 to 1 (filling to end-diastole) then 1 to 2 (contraction to
    end-systole): ``pressure_kpa`` is the cavity pressure at times 0, 1, 2 and the activation
    goes 0, 0, 1. ``filling_only`` stops at end-diastole (the unloading iterations)."""

    points_mm: np.ndarray
    tetrahedra: np.ndarray  # [E, 4], 0-based
    fibres: np.ndarray  # [E, 3] unit vectors
    parts: Sequence[Part]
    endocardium: np.ndarray  # [F, 3] 0-based, ordered with normals out of the wall
    base_nodes: np.ndarray  # 0-based
    pressure_kpa: tuple[float, float, float]
    steps_per_phase: int = 10
    filling_only: bool = False

    @property
    def end_time(self) -> float:
        return ED_TIME if self.filling_only else ES_TIME


ED_TIME, ES_TIME = 1.0, 2.0


def write_feb(model: LVModel, path: Path) -> None:
    """Write the model as a FEBio 4 input file at ``path`` (atomically)."""
    root = ET.Element("febio_spec", version=SPEC_VERSION)
    ET.SubElement(root, "Module", type="solid")
    _control(root, model.steps_per_phase, model.end_time)
    materials = ET.SubElement(root, "Material")
    for k, part in enumerate(model.parts, start=1):
        _material(materials, k, part)
    mesh = ET.SubElement(root, "Mesh")
    nodes = ET.SubElement(mesh, "Nodes", name="lv")
    for i, p in enumerate(model.points_mm, start=1):
        ET.SubElement(nodes, "node", id=str(i)).text = _numbers(p)
    for part in model.parts:
        block = ET.SubElement(mesh, "Elements", type="tet4", name=part.name)
        for row in part.elements:
            ET.SubElement(block, "elem", id=str(row + 1)).text = _ids(model.tetrahedra[row])
    surface = ET.SubElement(mesh, "Surface", name="endocardium")
    for i, facet in enumerate(model.endocardium, start=1):
        ET.SubElement(surface, "tri3", id=str(i)).text = _ids(facet)
    base = ET.SubElement(mesh, "NodeSet", name="base")
    base.text = ",".join(str(int(n) + 1) for n in model.base_nodes)
    domains = ET.SubElement(root, "MeshDomains")
    for part in model.parts:
        ET.SubElement(domains, "SolidDomain", name=part.name, mat=part.name)
    data = ET.SubElement(root, "MeshData")
    for part in model.parts:
        fibres = ET.SubElement(data, "ElementData", type=fibre_data_type(part), elem_set=part.name)
        for lid, row in enumerate(part.elements, start=1):
            ET.SubElement(fibres, "e", lid=str(lid)).text = _numbers(model.fibres[row])
    boundary = ET.SubElement(root, "Boundary")
    fixed = ET.SubElement(boundary, "bc", name="base", node_set="base", type="zero displacement")
    for dof in ("x_dof", "y_dof", "z_dof"):
        ET.SubElement(fixed, dof).text = "1"
    loads = ET.SubElement(root, "Loads")
    pressure = ET.SubElement(
        loads, "surface_load", name="cavity", surface="endocardium", type="pressure"
    )
    ET.SubElement(pressure, "pressure", lc="1").text = "1"
    ET.SubElement(pressure, "symmetric_stiffness").text = "1"
    ET.SubElement(pressure, "linear").text = "0"
    ET.SubElement(pressure, "shell_bottom").text = "0"
    load_data = ET.SubElement(root, "LoadData")
    p0, p_ed, p_es = model.pressure_kpa
    _curve(load_data, 1, "cavity_pressure", [(0.0, p0), (ED_TIME, p_ed), (ES_TIME, p_es)])
    _curve(load_data, 2, "activation", [(0.0, 0.0), (ED_TIME, 0.0), (ES_TIME, 1.0)])
    dt = ED_TIME / model.steps_per_phase
    # A dtmax curve's points are must points: the solution lands on ED and ES exactly.
    must = [t for t in (0.0, ED_TIME, ES_TIME) if t <= model.end_time]
    _curve(load_data, 3, "must_points", [(t, dt) for t in must], "STEP")
    output = ET.SubElement(root, "Output")
    logfile = ET.SubElement(output, "logfile")
    ET.SubElement(logfile, "node_data", data=";".join(NODE_VARIABLES), file=NODE_DATA_FILE)
    ET.SubElement(logfile, "element_data", data=";".join(ELEMENT_VARIABLES), file=ELEMENT_DATA_FILE)
    plot = ET.SubElement(output, "plotfile", type="febio")
    for variable in ("displacement", "stress"):
        ET.SubElement(plot, "var", type=variable)
    ET.indent(root, space="\t")
    with atomic_path(Path(path)) as temporary:
        ET.ElementTree(root).write(temporary, encoding="ISO-8859-1", xml_declaration=True)


def _control(root: ET.Element, steps_per_phase: int, end_time: float) -> None:
    control = ET.SubElement(root, "Control")
    dt = ED_TIME / steps_per_phase
    for tag, value in (
        ("analysis", "STATIC"),
        ("time_steps", str(round(end_time / dt))),
        ("step_size", f"{dt:g}"),
        ("plot_zero_state", "0"),
        ("plot_level", "PLOT_MAJOR_ITRS"),
        ("output_level", "OUTPUT_MAJOR_ITRS"),
    ):
        ET.SubElement(control, tag).text = value
    stepper = ET.SubElement(control, "time_stepper", type="default")
    for tag, value in (("max_retries", "10"), ("opt_iter", "10"), ("dtmin", f"{dt / 64:g}")):
        ET.SubElement(stepper, tag).text = value
    ET.SubElement(stepper, "dtmax", lc="3").text = f"{dt:g}"
    solver = ET.SubElement(control, "solver", type="solid")
    for tag, value in (
        ("symmetric_stiffness", "symmetric"),
        # Renumber the equations for a narrow profile: the Skyline solver's cost grows with
        # it (an 8 mm LV: 7 s instead of 6 minutes).
        ("optimize_bw", "1"),
        ("max_refs", "25"),
        ("dtol", "0.001"),
        ("etol", "0.01"),
        ("rtol", "0"),
        ("lstol", "0.9"),
    ):
        ET.SubElement(solver, tag).text = value
    qn = ET.SubElement(solver, "qn_method", type="BFGS")
    ET.SubElement(qn, "max_ups").text = "0"  # full Newton: reform every iteration
    ET.SubElement(solver, "linear_solver", type="skyline")


def _material(parent: ET.Element, material_id: int, part: Part) -> None:
    """The tissue alone, or (where there is gel) an uncoupled solid mixture of the tissue
    and the gel's neo-Hookean solid (FEBio's uncoupled Mooney-Rivlin with c2 = 0)."""
    m = part.material
    if m.gel_c1_kpa == 0.0:
        node = ET.SubElement(
            parent, "material", id=str(material_id), name=part.name, type=TISSUE_TYPE
        )
        _tissue(node, m, m.bulk_modulus_kpa)
        return
    mixture = ET.SubElement(
        parent, "material", id=str(material_id), name=part.name, type="uncoupled solid mixture"
    )
    ET.SubElement(mixture, "density").text = "1"
    ET.SubElement(mixture, "k").text = f"{m.bulk_modulus_kpa:.9g}"
    _tissue(ET.SubElement(mixture, "solid", type=TISSUE_TYPE), m, 0.0)
    gel = ET.SubElement(mixture, "solid", type="Mooney-Rivlin")
    _numbers_under(gel, (("density", 1.0), ("k", 0.0), ("c1", m.gel_c1_kpa), ("c2", 0.0)))


def _tissue(node: ET.Element, m: Material, bulk_modulus_kpa: float) -> None:
    _numbers_under(
        node,
        (
            ("density", 1.0),
            ("k", bulk_modulus_kpa),
            ("c1", m.c1_kpa),
            ("c2", m.c2),
            ("c3", m.c3_kpa),
            ("c4", m.c4),
            ("c5", m.c5_kpa),
            ("lam_max", m.lam_max),
        ),
    )
    ET.SubElement(node, "fiber", type="user")
    active = ET.SubElement(node, "active_contraction")
    ET.SubElement(active, "ascl", lc="2").text = "1"
    _numbers_under(
        active,
        (
            ("Tmax", m.t_max_kpa),
            ("ca0", m.ca0),
            ("camax", m.ca_max),
            ("beta", m.beta_per_um),
            ("l0", m.l0_um),
            ("refl", m.refl_um),
        ),
    )


def _numbers_under(parent: ET.Element, values: tuple[tuple[str, float], ...]) -> None:
    """One child element per (tag, value), the value to nine significant digits."""
    for tag, value in values:
        ET.SubElement(parent, tag).text = f"{value:.9g}"


def fibre_data_type(part: Part) -> str:
    """The ElementData type that maps the fibres onto the part's tissue: its own ``fiber``,
    or the mixture's first solid's."""
    return "fiber" if part.material.gel_c1_kpa == 0.0 else "solid[0].fiber"


def _curve(
    parent: ET.Element,
    curve_id: int,
    name: str,
    points: list[tuple[float, float]],
    interpolate: str = "LINEAR",
) -> None:
    curve = ET.SubElement(parent, "load_controller", id=str(curve_id), name=name, type="loadcurve")
    ET.SubElement(curve, "interpolate").text = interpolate
    ET.SubElement(curve, "extend").text = "CONSTANT"
    node = ET.SubElement(curve, "points")
    for t, value in points:
        ET.SubElement(node, "pt").text = f"{t:.9g},{value:.9g}"


def _numbers(values: np.ndarray) -> str:
    return ",".join(f"{float(v):.9g}" for v in values)


def _ids(rows: np.ndarray) -> str:
    return ",".join(str(int(i) + 1) for i in rows)
