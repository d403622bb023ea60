"""What an injected hydrogel is at each time after injection, for both reference simulators.

Swelling: the injected volume takes up water to its polymer's equilibrium swelling ratio Q
(library), so the in-vivo gel layer is Q times the injected thickness.

Degradation: the remaining mass fraction follows first-order kinetics, m(t) = 2^(-t / t50),
t50 the design's half-life. How the gel loses its mass depends on the polymer
(``degradation_mode`` in the library, with its literature source):

* bulk (hydrolysis throughout the network): the modulus falls with the density of elastically
  active chains, E(t) = E0 m(t) (rubber elasticity), and the loosening network swells as it
  loses mass, V(t) = V_swollen m(t)^(2/5) (Flory-Rehner: Q ~ crosslink density^(-3/5)).
  The network holds together only while enough crosslinks survive: below the reverse gel
  point, a crosslink fraction of 1/(f - 1) = 1/3 for tetrafunctional junctions (Flory, J Am
  Chem Soc 1941;63:3083-3090), it falls apart into soluble fragments and is gone (reverse
  gelation of hydrolytically degrading hydrogels: Metters, Anseth & Bowman, Polymer
  2000;41:3993-4004). The crosslink fraction is taken equal to the mass fraction (assumed,
  as for the modulus).
* surface (enzymatic or cellular erosion from the interface): the gel shrinks,
  V(t) = V_swollen m(t), while what remains keeps its modulus, E(t) = E0; once less than one
  part in a million is left it is gone.

The mechanics (:mod:`hydraopt_simulators.mechanics`) and the electrophysiology
(:mod:`hydraopt_simulators.ep`) take the gel's modulus, conductivity and volume from here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hydraopt.domain import DesignBatch

DAYS_PER_WEEK = 7.0
# Flory-Rehner: equilibrium swelling Q ~ (crosslink density)^(-3/5), so a bulk-degrading gel's
# volume goes as m * m^(-3/5) = m^(2/5).
BULK_SWELLING_EXPONENT = 0.4
# Flory-Stockmayer critical crosslink fraction 1/(f - 1) for tetrafunctional junctions (f = 4).
REVERSE_GEL_FRACTION = 1.0 / 3.0
# A surface-eroding gel with less than one part in a million left is gone.
SURFACE_ERODED_FRACTION = 2.0**-20


@dataclass(frozen=True)
class GelState:
    """Per design at one time after injection: the gel's modulus [kPa] and its in-vivo
    thickness over the wall's (equivalently, its volume over the treated myocardium's); both
    are zero once the gel is gone."""

    modulus_kpa: np.ndarray
    thickness_ratio: np.ndarray

    @property
    def present(self) -> np.ndarray:
        return self.thickness_ratio > 0


def remaining_mass_fraction(t50_days: np.ndarray, weeks: float) -> np.ndarray:
    return np.exp2(-weeks * DAYS_PER_WEEK / np.asarray(t50_days, dtype=float))


def gel_state(designs: DesignBatch, wall_thickness_mm: float, weeks: float) -> GelState:
    """The gel of each design ``weeks`` after injection."""
    swelling, surface_erosion = polymer_properties(designs)
    mass = remaining_mass_fraction(designs.t50_days, weeks)
    gone = np.where(surface_erosion, mass < SURFACE_ERODED_FRACTION, mass < REVERSE_GEL_FRACTION)
    modulus = np.where(surface_erosion, designs.stiffness_kpa, designs.stiffness_kpa * mass)
    volume_fraction = np.where(surface_erosion, mass, mass**BULK_SWELLING_EXPONENT)
    thickness = swelling * designs.thickness_mm * volume_fraction / wall_thickness_mm
    return GelState(np.where(gone, 0.0, modulus), np.where(gone, 0.0, thickness))


def polymer_feasibility(designs: DesignBatch) -> tuple[np.ndarray, np.ndarray]:
    """Designs a polymer cannot make, and why (never clipped: flagged)."""
    masks = designs.outside_polymer_range()
    infeasible = np.logical_or.reduce(list(masks.values()))
    reasons = np.full(len(designs), "", dtype=object)
    polymers = designs.space.polymers
    units = {"stiffness_kpa": "kPa", "t50_days": "days", "conductivity_s_per_m": "S/m"}
    for row in np.flatnonzero(infeasible):
        polymer = polymers[int(designs.polymer_index[row])]
        reasons[row] = "; ".join(
            f"{name} {getattr(designs, name)[row]:.3g} is outside {polymer.name}'s achievable "
            f"{getattr(polymer, name).low:g}-{getattr(polymer, name).high:g} {units[name]}"
            for name, mask in masks.items()
            if mask[row]
        )
    return infeasible, reasons


def polymer_properties(designs: DesignBatch) -> tuple[np.ndarray, np.ndarray]:
    """Per design, its polymer's swelling ratio and whether it erodes from the surface."""
    polymers = designs.space.polymers
    swelling = np.array([p.swelling_ratio for p in polymers])[designs.polymer_index]
    surface = np.array([p.degradation_mode == "surface" for p in polymers])[designs.polymer_index]
    return swelling, surface
