"""The patient's LV as a FEBio model, and its outcomes from FEBio's logfile data.

Tissue (docs/physics.md §4.1 gives every value and source):

* passive myocardium: FEBio's transversely isotropic Veronda-Westmann, its parameters
  matched to Guccione's law with Guccione et al.'s canine parameters (J Biomech Eng
  1991;113:42-55: C 0.876 kPa, b_f 18.48, b_t 3.58): across the fibres in small strain and
  in its exponential rate, along them in small strain and at 10% fibre stretch;
* active contraction: Guccione, Waldman & McCulloch's model (J Biomech Eng 1993;115:82-90),
  FEBio's ``active_contraction``, ramped from 0 at end-diastole to 1 at end-systole;
* border zone: active tension 0.67 of remote (Wenk et al. 2012), passive as remote; scar:
  no active tension, passive scaled by the infarct's stiffness ratio at its age (§2.3);
* the gel: a neo-Hookean solid of the design's modulus at the follow-up, g times the treated
  myocardium's volume (g its in-vivo thickness over the wall's, :mod:`hydrogel`), energy
  g E/6 (I1 - 3) per volume of tissue: the treated elements are a domain of their own whose
  material is a mixture of the myocardium and the gel. The gel's volume is not meshed: it
  stiffens the treated wall without thickening it.

The mesh is the heart at end-diastole; the adapter first finds the stress-free geometry
(:mod:`.unloading`). Loading: the cavity pressure rises to the patient's end-diastolic
pressure (time 1), then the myocardium activates while the pressure rises to the
end-systolic pressure (time 2); both pressures are those of the patient's calibrated
untreated heart in reference-mechanics' closed loop (§2.5), so both simulators load the same
heart alike. The base is fixed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cache

import numpy as np

from hydraopt.domain.mesh import (
    REGION_BORDER_ZONE,
    REGION_REMOTE,
    REGION_SCAR,
    PatientMesh,
    cavity_volume_m3,
)
from hydraopt_simulators.febio.feb_file import ED_TIME, ES_TIME, LVModel, Material, Part

MMHG_TO_KPA = 0.133322368
M_TO_MM = 1e3
# Guccione et al. 1991 (canine passive myocardium): W = C/2 (exp(Q) - 1),
# Q = b_f E_ff^2 + b_t (E_ss^2 + E_nn^2 + 2 E_sn^2) + ...
GUCCIONE_C_KPA = 0.876
GUCCIONE_B_FIBRE = 18.48
GUCCIONE_B_CROSS = 3.58
# The fibre stretch at which the transversely isotropic law is matched to Guccione's
# (a typical end-diastolic fibre stretch; assumed).
MATCHED_FIBRE_STRETCH = 1.1
# Nearly incompressible: bulk modulus over the passive shear modulus c1 c2 (1.57 kPa), about
# 640 (assumed; FEBio's uncoupled formulation enforces incompressibility by this penalty).
BULK_MODULUS_KPA = 1000.0
# Guccione, Waldman & McCulloch 1993, with the values of the sheep infarct models of Walker et
# al. (J Thorac Cardiovasc Surg 2005;129:382-390) and Wenk et al. (J Biomech Eng 2011).
ACTIVE_T_MAX_KPA = 135.7
ACTIVE_CA0_UM = 4.35
ACTIVE_CA_MAX_UM = 4.35
ACTIVE_B_PER_UM = 4.75
ACTIVE_L0_UM = 1.58
ACTIVE_LR_UM = 1.85
BORDER_ZONE_CONTRACTILITY = 0.67  # Wenk et al., Ann Thorac Surg 2012 (73.1/109.5)
FIBRE_STRAIGHTENED_STRETCH = 10.0  # lam_max: never reached, so c5 never acts


@cache
def myocardium() -> Material:
    """Remote myocardium: transversely isotropic Veronda-Westmann matched to Guccione's law.

    Across the fibres, c1 = C and c2 = b_t / 2 give Guccione's small-strain shear modulus
    C b_t / 2 and its exponential rate in shear of the cross-fibre plane (I1 - 3 = 4 e^2 there,
    Guccione's Q = 2 b_t e^2). Along the fibres, c3 c4 = C (b_f - b_t) gives Guccione's extra
    small-strain fibre stiffness, and c4 makes the fibre Cauchy stress of a uniaxial fibre
    stretch equal to Guccione's at :data:`MATCHED_FIBRE_STRETCH`.
    """
    from scipy.optimize import brentq

    c1, c2 = GUCCIONE_C_KPA, GUCCIONE_B_CROSS / 2.0
    c3c4 = GUCCIONE_C_KPA * (GUCCIONE_B_FIBRE - GUCCIONE_B_CROSS)
    stretch = MATCHED_FIBRE_STRETCH
    fibre_kpa = guccione_uniaxial_kpa(stretch) - veronda_westmann_uniaxial_kpa(c1, c2, stretch)

    def mismatch(c4: float) -> float:
        return (c3c4 / c4) * np.expm1(c4 * (stretch - 1.0)) - fibre_kpa

    c4 = brentq(mismatch, 1e-3, 200.0)
    return Material(
        c1_kpa=c1,
        c2=c2,
        c3_kpa=float(c3c4 / c4),
        c4=float(c4),
        c5_kpa=float(c3c4),
        lam_max=FIBRE_STRAIGHTENED_STRETCH,
        bulk_modulus_kpa=BULK_MODULUS_KPA,
        t_max_kpa=ACTIVE_T_MAX_KPA,
        ca0=ACTIVE_CA0_UM,
        ca_max=ACTIVE_CA_MAX_UM,
        beta_per_um=ACTIVE_B_PER_UM,
        l0_um=ACTIVE_L0_UM,
        refl_um=ACTIVE_LR_UM,
    )


def guccione_uniaxial_kpa(stretch: float) -> float:
    """Cauchy stress of Guccione's law in uniaxial stretch along the fibre (incompressible,
    free laterally)."""
    strain = 0.5 * (stretch**2 - 1.0)
    cross = 0.5 * (1.0 / stretch - 1.0)
    q = GUCCIONE_B_FIBRE * strain**2 + 2 * GUCCIONE_B_CROSS * cross**2
    return float(
        GUCCIONE_C_KPA
        * np.exp(q)
        * (GUCCIONE_B_FIBRE * strain * stretch**2 - GUCCIONE_B_CROSS * cross / stretch)
    )


def veronda_westmann_uniaxial_kpa(c1: float, c2: float, stretch: float) -> float:
    """Cauchy stress of the isotropic Veronda-Westmann term in uniaxial stretch
    (incompressible): 2 [(W1 + W2 I1)(l^2 - 1/l) - W2 (l^4 - 1/l^2)]."""
    i1 = stretch**2 + 2.0 / stretch
    w1, w2 = c1 * c2 * np.exp(c2 * (i1 - 3.0)), -0.5 * c1 * c2
    return float(
        2.0 * ((w1 + w2 * i1) * (stretch**2 - 1.0 / stretch) - w2 * (stretch**4 - stretch**-2))
    )


def region_material(region: int, infarct_stiffness_ratio: float) -> Material:
    base = myocardium()
    if region == REGION_BORDER_ZONE:
        return replace(base, t_max_kpa=base.t_max_kpa * BORDER_ZONE_CONTRACTILITY)
    if region == REGION_SCAR:
        k = infarct_stiffness_ratio
        return replace(base, c1_kpa=base.c1_kpa * k, c3_kpa=base.c3_kpa * k, t_max_kpa=0.0)
    return base


def with_gel(material: Material, gel_ratio: float, gel_modulus_kpa: float) -> Material:
    """A treated element's material: the myocardium and, per volume of it, g volumes of gel
    as a neo-Hookean solid, energy g E/6 (I1 - 3) (incompressible: shear modulus E/3). The
    gel's volume is not meshed: it stiffens the element without thickening it."""
    return replace(material, gel_c1_kpa=gel_ratio * gel_modulus_kpa / 6.0)


PART_NAMES = {REGION_REMOTE: "remote", REGION_BORDER_ZONE: "border_zone", REGION_SCAR: "scar"}


@dataclass(frozen=True)
class Loading:
    """Cavity pressures of the loading path [mmHg]."""

    edp_mmhg: float
    esp_mmhg: float


def lv_model(
    mesh: PatientMesh,
    treated: np.ndarray | None,
    gel_ratio: float,
    gel_modulus_kpa: float,
    infarct_stiffness_ratio: float,
    loading: Loading,
    steps_per_phase: int,
    reference_points_m: np.ndarray | None = None,
    filling_only: bool = False,
) -> LVModel:
    """The model of one heart: ``treated`` (element mask, None for the untreated heart)
    holds the gel of ratio ``gel_ratio`` and modulus ``gel_modulus_kpa``.
    ``reference_points_m`` is the unloaded geometry (:mod:`.unloading`; default: the mesh's
    own, the patient's end-diastolic geometry)."""
    region = np.asarray(mesh.cell_data["region"])
    gel = np.zeros(len(region), dtype=bool) if treated is None else np.asarray(treated, bool)
    parts = []
    for tag, name in PART_NAMES.items():
        material = region_material(tag, infarct_stiffness_ratio)
        for has_gel in (False, True):
            elements = np.flatnonzero((region == tag) & (gel == has_gel))
            if not len(elements):
                continue
            if has_gel:
                parts.append(
                    Part(f"{name}_gel", elements, with_gel(material, gel_ratio, gel_modulus_kpa))
                )
            else:
                parts.append(Part(name, elements, material))
    fibres = np.asarray(mesh.cell_data["fibre_direction"], dtype=float)
    points_m = mesh.points_m if reference_points_m is None else reference_points_m
    return LVModel(
        points_mm=points_m * M_TO_MM,
        tetrahedra=mesh.tetrahedra,
        fibres=fibres / np.linalg.norm(fibres, axis=1, keepdims=True),
        parts=parts,
        endocardium=facets_out_of_wall(mesh.tetrahedra, mesh.surfaces["endo"], mesh.points_m),
        base_nodes=np.unique(mesh.surfaces["base"]),
        pressure_kpa=(0.0, loading.edp_mmhg * MMHG_TO_KPA, loading.esp_mmhg * MMHG_TO_KPA),
        steps_per_phase=steps_per_phase,
        filling_only=filling_only,
    )


def facets_out_of_wall(
    tetrahedra: np.ndarray, facets: np.ndarray, points: np.ndarray
) -> np.ndarray:
    """The facets with their nodes ordered so that each normal points away from the
    tetrahedron it bounds (FEBio's pressure pushes against the facet's normal, so a positive
    cavity pressure then pushes the wall outwards)."""
    facets = np.asarray(facets).copy()
    centre = points[tetrahedra].mean(axis=1)
    faces = np.sort(
        np.concatenate(
            [
                tetrahedra[:, [1, 2, 3]],
                tetrahedra[:, [0, 2, 3]],
                tetrahedra[:, [0, 1, 3]],
                tetrahedra[:, [0, 1, 2]],
            ]
        ),
        axis=1,
    )
    owner = np.tile(np.arange(len(tetrahedra)), 4)
    lookup = {tuple(face): tet for face, tet in zip(faces.tolist(), owner.tolist(), strict=True)}
    tets = np.array([lookup[tuple(sorted(f))] for f in facets.tolist()])
    a, b, c = (points[facets[:, k]] for k in range(3))
    normal = np.cross(b - a, c - a)
    inward = np.einsum("ij,ij->i", normal, centre[tets] - (a + b + c) / 3.0) > 0
    facets[inward] = facets[inward][:, [0, 2, 1]]
    return facets


@dataclass(frozen=True)
class HeartState:
    """What one FEBio run gives at end-diastole and end-systole."""

    edv_ml: float
    esv_ml: float
    bz_stress_kpa: float  # border-zone myocyte fibre stress at end-systole, volume mean
    footprint_strain: float  # fibre strain ED -> ES, volume mean over the infarct footprint
    remote_strain: float
    displacement_ed_mm: np.ndarray
    displacement_es_mm: np.ndarray
    fibre_stress_es_kpa: np.ndarray  # per element

    @property
    def ef_pct(self) -> float:
        return 100.0 * (self.edv_ml - self.esv_ml) / self.edv_ml


def heart_state(
    mesh: PatientMesh,
    model: LVModel,
    node_values: dict[float, np.ndarray],
    element_values: dict[float, np.ndarray],
) -> HeartState:
    """Volumes, stresses and strains from FEBio's displacements ``[nodes, 3]`` and element
    stresses and deformation gradients ``[elements, 15]`` at :data:`ED_TIME` and
    :data:`ES_TIME`. In a treated element the myocytes' fibre stress is the element's less
    the gel's deviatoric share."""
    volumes = mesh.element_volumes_m3()
    endo = mesh.surfaces["endo"]

    def cavity_ml(displacement_mm: np.ndarray) -> float:
        return cavity_volume_m3((model.points_mm + displacement_mm) / M_TO_MM, endo) * 1e6

    gel_c1 = np.zeros(len(volumes))
    for part in model.parts:
        gel_c1[part.elements] = part.material.gel_c1_kpa
    stretch, stress = {}, {}
    for time in (ED_TIME, ES_TIME):
        sigma, deformation = _tensors(element_values[time])
        fibre = np.einsum("eij,ej->ei", deformation, model.fibres)
        stretch[time] = np.linalg.norm(fibre, axis=1)
        f = fibre / stretch[time][:, None]
        myocyte = sigma - _neo_hookean_deviatoric_kpa(deformation, gel_c1)
        stress[time] = np.einsum("ei,eij,ej->e", f, myocyte, f)
    region = np.asarray(mesh.cell_data["region"])
    strain = np.log(stretch[ES_TIME] / stretch[ED_TIME])
    bz = region == REGION_BORDER_ZONE
    footprint = mesh.in_footprint()
    remote = (region == REGION_REMOTE) & ~footprint

    def mean(values: np.ndarray, mask: np.ndarray) -> float:
        return float(np.average(values[mask], weights=volumes[mask])) if mask.any() else np.nan

    return HeartState(
        edv_ml=cavity_ml(node_values[ED_TIME]),
        esv_ml=cavity_ml(node_values[ES_TIME]),
        bz_stress_kpa=mean(stress[ES_TIME], bz),
        footprint_strain=mean(strain, footprint),
        remote_strain=mean(strain, remote),
        displacement_ed_mm=node_values[ED_TIME],
        displacement_es_mm=node_values[ES_TIME],
        fibre_stress_es_kpa=stress[ES_TIME],
    )


def _tensors(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cauchy stress [E, 3, 3] from sx, sy, sz, sxy, syz, sxz and the deformation gradient
    [E, 3, 3] from Fxx..Fzz (row-major), as :data:`ELEMENT_VARIABLES` orders them."""
    sx, sy, sz, sxy, syz, sxz = values[:, :6].T
    sigma = np.stack(
        [np.stack([sx, sxy, sxz], -1), np.stack([sxy, sy, syz], -1), np.stack([sxz, syz, sz], -1)],
        axis=1,
    )
    return sigma, values[:, 6:15].reshape(-1, 3, 3)


def _neo_hookean_deviatoric_kpa(deformation: np.ndarray, c1_kpa: np.ndarray) -> np.ndarray:
    """The deviatoric Cauchy stress of an uncoupled Mooney-Rivlin term c1 (I1~ - 3):
    (2 c1 / J) dev(B~), B~ = J^(-2/3) F F^T (FEBio's uncoupled formulation)."""
    jacobian = np.linalg.det(deformation)
    b = (
        np.einsum("eij,ekj->eik", deformation, deformation)
        * (jacobian ** (-2.0 / 3.0))[:, None, None]
    )
    trace = np.trace(b, axis1=1, axis2=2)
    deviatoric = b - (trace / 3.0)[:, None, None] * np.eye(3)
    return (2.0 * c1_kpa / jacobian)[:, None, None] * deviatoric
