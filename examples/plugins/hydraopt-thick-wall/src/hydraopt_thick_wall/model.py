"""The LV as a thick-walled sphere at end-systole, with a gel layer in the treated wall.

Cavity: a sphere of the patient's end-systolic volume, inner radius r_i. Wall: the patient's
myocardial volume (from the mesh) around it, outer radius r_o (the wall is incompressible, so
its volume fixes r_o). Lamé's solution for a pressurised thick-walled sphere gives the
circumferential stress at radius r:

    sigma(r) = p r_i^3 (1 + r_o^3 / (2 r^3)) / (r_o^3 - r_i^3)

and its mean over the wall, which Laplace's law approaches for a thin wall. In the treated
region the injected gel adds a layer of thickness Q t (Q its polymer's swelling ratio, t the
injected thickness) that shares the wall's load with the myocardium in proportion to its
stiffness (layers strained alike): the myocytes carry

    sigma_myo = sigma_mean(h + h_gel) (h + h_gel) / (h + h_gel E_gel / E_myo).

The gel is taken as it is at ``weeks`` after injection: its mass falls as 2^(-t / t50); a bulk-
degrading gel's modulus falls with it, a surface-eroding gel's thickness does.
"""

from __future__ import annotations

import numpy as np

MMHG_TO_KPA = 0.133322
DAYS_PER_WEEK = 7.0


def sphere_radius_m(volume_ml: float) -> float:
    return float((3.0 * volume_ml * 1e-6 / (4.0 * np.pi)) ** (1.0 / 3.0))


def mean_circumferential_stress_kpa(
    pressure_kpa: float, inner_m: float, thickness_m: np.ndarray
) -> np.ndarray:
    """Lamé's circumferential stress of a thick-walled sphere, averaged over the wall."""
    outer = inner_m + np.asarray(thickness_m, dtype=float)
    radii = inner_m + np.linspace(0.0, 1.0, 65)[:, None] * (outer - inner_m)
    stress = (
        pressure_kpa * inner_m**3 * (1.0 + outer**3 / (2.0 * radii**3)) / (outer**3 - inner_m**3)
    )
    return np.trapezoid(stress, radii, axis=0) / (outer - inner_m)


def gel_at(
    thickness_mm: np.ndarray,
    modulus_kpa: np.ndarray,
    t50_days: np.ndarray,
    swelling_ratio: np.ndarray,
    surface_erosion: np.ndarray,
    weeks: float,
) -> tuple[np.ndarray, np.ndarray]:
    """In-vivo gel layer thickness [m] and modulus [kPa] ``weeks`` after injection."""
    mass = np.exp2(-weeks * DAYS_PER_WEEK / np.asarray(t50_days, dtype=float))
    layer_m = swelling_ratio * thickness_mm * 1e-3 * np.where(surface_erosion, mass, 1.0)
    modulus = np.where(surface_erosion, modulus_kpa, modulus_kpa * mass)
    return layer_m, modulus


def myocyte_stress_kpa(
    pressure_kpa: float,
    inner_m: float,
    wall_m: float,
    gel_m: np.ndarray,
    gel_modulus_kpa: np.ndarray,
    myocardium_modulus_kpa: float,
) -> np.ndarray:
    """The myocytes' mean circumferential stress in a wall with a gel layer."""
    total = wall_m + gel_m
    mean = mean_circumferential_stress_kpa(pressure_kpa, inner_m, total)
    return mean * total / (wall_m + gel_m * gel_modulus_kpa / myocardium_modulus_kpa)
