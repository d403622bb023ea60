"""The left-ventricular wall as one-fibre patches sharing a spherical cavity.

This is the CircAdapt MultiPatch wall (Walmsley et al., PLoS Comput Biol 2015;11:e1004284;
Arts et al., Am J Physiol Heart Circ Physiol 2005;288:H1943) for the LV alone: the cavity is a
sphere with a thin wall whose mid-wall surface encloses V_m = V + V_wall / 2, of area
A_m = (36 pi V_m^2)^(1/3) and radius r_m = (3 V_m / 4 pi)^(1/3). The wall is cut into patches
that share its tension and whose areas add up to A_m:

    sum_i A_i = A_m(V),    A_i = A_ref,i lambda_i^2,
    T = (V_c,i sigma_myo(lambda_i) + V_s,i k sigma_p(lambda_i) + V_g,i sigma_gel(lambda_i)) / A_i

for every patch i, with its layers of viable myocardium (volume V_c, stress sigma_myo =
sigma_p + sigma_a, :mod:`.myocardium`), scar (V_s, the passive law times the infarct's
stiffness k) and hydrogel (V_g). The cavity pressure follows from virtual work,
p dV = sum_i (V sigma)_i dlambda_i / lambda_i, as p = T / r_m. A compliant patch therefore
stretches when the tension rises in systole: an infarct bulges and takes stroke volume from
the contracting wall, and a stiff gel layer in it carries part of the tension.

Patches (:data:`PATCHES`): remote myocardium; border zone outside the infarct's footprint,
treated and untreated by the design's coverage; and the infarct footprint, the wall over the
scar (scar plus the viable myocardium over a non-transmural scar, in parallel), all from the
patient's mesh (:class:`PatchVolumes`).

For each cavity volume and activation the patch stretches and the tension are solved jointly
by Newton's method (the per-patch equations are eliminated in closed form, leaving one linear
equation for the tension step), started from the previous solution. The closed loop needs the
pressure and its volume derivative, dp/dV = (2 / r_m^2) / sum_i dA_i/dT - T / (3 r_m V_m).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from hydraopt.domain import COVERAGE_PATTERNS
from hydraopt.domain.mesh import REGION_BORDER_ZONE, REGION_REMOTE, REGION_SCAR, PatientMesh
from hydraopt_simulators.mechanics.myocardium import (
    BORDER_ZONE_CONTRACTILITY,
    FAST_MATH,
    active_stress,
    gel_stress,
    passive_stress,
)

PATCHES = ("remote", "bz_treated", "bz_untreated", "infarct")
REMOTE, BZ_TREATED, BZ_UNTREATED, INFARCT = range(len(PATCHES))
# A converged solve: at most this many Newton steps, stopping when area and tension agree to
# this relative tolerance. Screening takes one step per time step instead, from the previous
# step's solution (its error is second order in the change over a step).
NEWTON_ITERATIONS = 30
NEWTON_TOLERANCE = 1e-11
STRETCH_BOUNDS = (0.5, 1.8)  # sarcomeres between 1.0 and 3.6 um
MMHG_PA = 133.322


@dataclass(frozen=True)
class PatchVolumes:
    """Tissue volumes per coverage pattern (rows, :data:`COVERAGE_PATTERNS` order) and patch
    (columns, :data:`PATCHES` order), as fractions of the myocardium: viable remote and
    border-zone myocardium, scar, and the myocardium the gel is injected into."""

    remote: np.ndarray
    border_zone: np.ndarray
    scar: np.ndarray
    treated: np.ndarray

    @classmethod
    def from_mesh(cls, mesh: PatientMesh) -> PatchVolumes:
        volumes = mesh.element_volumes_m3()
        volumes = volumes / volumes.sum()
        region = mesh.cell_data["region"]
        footprint = mesh.in_footprint()
        shape = (len(COVERAGE_PATTERNS), len(PATCHES))
        tissue = {name: np.zeros(shape) for name in ("remote", "border_zone", "scar", "treated")}
        for c, coverage in enumerate(COVERAGE_PATTERNS):
            treated = mesh.treated(coverage)
            patch = np.full(len(volumes), REMOTE)
            outside = ~footprint & (region == REGION_BORDER_ZONE)
            patch[outside & treated] = BZ_TREATED
            patch[outside & ~treated] = BZ_UNTREATED
            patch[footprint] = INFARCT
            for name, mask in (
                ("remote", region == REGION_REMOTE),
                ("border_zone", region == REGION_BORDER_ZONE),
                ("scar", region == REGION_SCAR),
                ("treated", treated),
            ):
                tissue[name][c] = np.bincount(patch, volumes * mask, minlength=len(PATCHES))
        return cls(**tissue)

    @property
    def myocardium(self) -> np.ndarray:
        return self.remote + self.border_zone + self.scar


@dataclass
class Wall:
    """``n`` walls at once. Per wall and patch [n, P]: reference mid-wall area [m^2] (the area at
    fibre stretch 1), viable myocardium [m^3] and its contractility relative to remote, of it
    the border zone [m^3], scar [m^3] and its stiffness relative to myocardium, gel [m^3] and
    its modulus [Pa]; per wall [n]: remote active stress SfAct [Pa]. ``stretch`` and
    ``tension`` hold the last solution (the next solve starts from it)."""

    reference_area_m2: np.ndarray
    viable_m3: np.ndarray
    contractility: np.ndarray
    border_zone_m3: np.ndarray
    scar_m3: np.ndarray
    scar_stiffness: np.ndarray
    gel_m3: np.ndarray
    gel_modulus_pa: np.ndarray
    active_stress_pa: np.ndarray

    def __post_init__(self) -> None:
        self.stretch = np.ones_like(self.reference_area_m2)
        self.tension = np.zeros(len(self.active_stress_pa))

    def __len__(self) -> int:
        return len(self.active_stress_pa)

    @property
    def wall_volume_m3(self) -> np.ndarray:
        return (self.viable_m3 + self.scar_m3 + self.gel_m3).sum(axis=1)

    def arrays(self) -> tuple[np.ndarray, ...]:
        """The wall as the tuple of arrays the compiled solver takes."""
        return (
            self.reference_area_m2,
            self.viable_m3,
            self.contractility * self.active_stress_pa[:, None],
            self.scar_m3 * self.scar_stiffness,
            self.gel_m3,
            self.gel_modulus_pa,
            self.wall_volume_m3,
        )

    def pressure_mmhg(self, volume_ml: np.ndarray, activation: float | np.ndarray) -> np.ndarray:
        """Cavity pressure of each wall at the given volumes and activation (exact solve)."""
        volume = np.asarray(volume_ml, dtype=float) * 1e-6
        activation = np.broadcast_to(np.asarray(activation, dtype=float), volume.shape)
        pressure = np.empty(len(self))
        arrays = self.arrays()
        work = np.empty((2, len(PATCHES)))
        for j in range(len(self)):
            pressure[j] = solve_wall(
                volume[j],
                activation[j],
                j,
                arrays,
                self.stretch,
                self.tension,
                NEWTON_ITERATIONS,
                work,
            )[0]
        return pressure / MMHG_PA

    def border_zone_stress_pa(self, stretch: np.ndarray, activation: np.ndarray) -> np.ndarray:
        """Volume-mean fibre stress [Pa] of the border-zone myocytes at the given patch
        stretches [n, P] and activations [n]."""
        active = BORDER_ZONE_CONTRACTILITY * self.active_stress_pa * activation
        stress = _myocyte_stress(stretch, np.broadcast_to(active[:, None], stretch.shape))
        weights = self.border_zone_m3
        return (stress * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-30)


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def _myocyte_stress(stretch: np.ndarray, active_pa: np.ndarray) -> np.ndarray:
    out = np.empty_like(stretch)
    for j in range(stretch.shape[0]):
        for i in range(stretch.shape[1]):
            passive = passive_stress(stretch[j, i])[0]
            out[j, i] = passive + active_stress(stretch[j, i], active_pa[j, i])[0]
    return out


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def patch_tension(
    stretch: float,
    area_ref: float,
    viable: float,
    active_pa: float,
    scar: float,
    gel: float,
    gel_modulus: float,
) -> tuple[float, float]:
    """Tension T [N/m] of one patch at the given stretch, and dT/dstretch."""
    sp, dsp = passive_stress(stretch)
    sa, dsa = active_stress(stretch, active_pa)
    sg, dsg = gel_stress(stretch, gel_modulus)
    force = viable * (sp + sa) + scar * sp + gel * sg
    dforce = viable * (dsp + dsa) + scar * dsp + gel * dsg
    inverse_area = 1.0 / (area_ref * stretch * stretch)
    tension = force * inverse_area
    slope = (dforce - 2.0 * force / stretch) * inverse_area
    return tension, max(slope, 1e-9 * (abs(tension) + 1.0))


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def solve_wall(
    volume_m3: float,
    activation: float,
    j: int,
    arrays: tuple,
    stretch: np.ndarray,
    tension: np.ndarray,
    iterations: int,
    work: np.ndarray,
) -> tuple[float, float]:
    """Cavity pressure [Pa] and dp/dV [Pa/m^3] of wall ``j`` at the given cavity volume and
    activation after at most ``iterations`` Newton steps from the stored solution; updates
    ``stretch[j]`` and ``tension[j]``. ``work`` is scratch space, [2, patches]."""
    area_ref, viable, active, scar, gel, modulus, wall_volume = arrays
    mid_volume = volume_m3 + 0.5 * wall_volume[j]
    radius = np.cbrt(3.0 * mid_volume / (4.0 * np.pi))
    mid_area = 4.0 * np.pi * radius * radius
    residual, slope = work[0], work[1]
    t = tension[j]
    compliance = 1.0
    for _ in range(iterations):
        # Each patch's equation T_i(lambda_i) = T, linearised, gives its stretch step in
        # terms of the tension step; the area condition then fixes the tension step.
        compliance, weighted, area = 0.0, 0.0, 0.0
        for i in range(area_ref.shape[1]):
            if area_ref[j, i] <= 0.0:
                continue
            lam = stretch[j, i]
            t_i, slope[i] = patch_tension(
                lam,
                area_ref[j, i],
                viable[j, i],
                active[j, i] * activation,
                scar[j, i],
                gel[j, i],
                modulus[j, i],
            )
            residual[i] = t_i - t
            weight = 2.0 * area_ref[j, i] * lam / slope[i]  # dA_i/dT
            compliance += weight
            weighted += weight * residual[i]
            area += area_ref[j, i] * lam * lam
        step = (mid_area - area + weighted) / compliance
        t += step
        for i in range(area_ref.shape[1]):
            if area_ref[j, i] > 0.0:
                lam = stretch[j, i] + (step - residual[i]) / slope[i]
                stretch[j, i] = min(max(lam, STRETCH_BOUNDS[0]), STRETCH_BOUNDS[1])
        if abs(mid_area - area) < NEWTON_TOLERANCE * mid_area and abs(step) < NEWTON_TOLERANCE * (
            abs(t) + 1.0
        ):
            break
    tension[j] = t
    pressure = t / radius
    stiffness = 2.0 / (radius * radius * compliance) - t / (3.0 * radius * mid_volume)
    return pressure, stiffness
