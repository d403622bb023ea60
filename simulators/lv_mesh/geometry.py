"""Sizing a truncated prolate ellipsoid to a patient's end-diastolic volume and wall.

The endocardium is the ellipsoid x^2/a^2 + (y^2 + z^2)/b^2 = 1 (long axis x, apex at -a),
cut by the base plane x = c with c = a cos(mu_base); the epicardium has radii a + h and b + h,
h the wall thickness, cut by the same plane. The cavity volume is

    V = pi b^2 [ (a + c) - (a^3 + c^3) / (3 a^2) ],

which fixes the size for a chosen long-to-short axis ratio a/b.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# cardiac-geometries-core's default base level: cos(mu_base_endo) = 5/17.
BASE_COSINE = 5.0 / 17.0


@dataclass(frozen=True)
class EllipsoidGeometry:
    """Radii in metres of the endo- and epicardial ellipsoids, and the base plane x."""

    r_long_endo: float
    r_short_endo: float
    r_long_epi: float
    r_short_epi: float
    base_x: float

    @property
    def mu_base_endo(self) -> float:
        return -math.acos(self.base_x / self.r_long_endo)

    @property
    def mu_base_epi(self) -> float:
        return -math.acos(self.base_x / self.r_long_epi)

    def cavity_volume_ml(self) -> float:
        return truncated_ellipsoid_volume_m3(self.r_long_endo, self.r_short_endo, self.base_x) * 1e6


def truncated_ellipsoid_volume_m3(a: float, b: float, c: float) -> float:
    return math.pi * b**2 * ((a + c) - (a**3 + c**3) / (3 * a**2))


def size_ellipsoid(
    edv_ml: float, wall_thickness_mm: float, long_to_short_ratio: float
) -> EllipsoidGeometry:
    """The geometry whose cavity holds ``edv_ml`` with a wall of ``wall_thickness_mm``."""
    unit = truncated_ellipsoid_volume_m3(
        long_to_short_ratio, 1.0, long_to_short_ratio * BASE_COSINE
    )
    b = (edv_ml * 1e-6 / unit) ** (1.0 / 3.0)
    a = long_to_short_ratio * b
    h = wall_thickness_mm * 1e-3
    return EllipsoidGeometry(
        r_long_endo=a,
        r_short_endo=b,
        r_long_epi=a + h,
        r_short_epi=b + h,
        base_x=a * BASE_COSINE,
    )
