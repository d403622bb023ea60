"""What an injected hydrogel does to the wall it covers, and how that changes with time.

Degradation: the gel's remaining mass fraction follows first-order kinetics,
m(t) = 2^(-t / t50). How the gel loses its mass depends on the polymer
(``degradation_mode`` in the library, with its literature source):

* bulk (hydrolysis throughout the network): the modulus falls with the crosslink density,
  E(t) = E0 m(t) (rubber elasticity: E is proportional to the density of elastically active
  chains), and the loosening network swells as it loses mass: with Flory-Rehner's
  Q ~ nu^(-3/5) and nu ~ m, the volume is V(t) = V_swollen m(t)^(2/5);
* surface (enzymatic or cellular erosion from the interface): the gel shrinks,
  V(t) = V_swollen m(t), while what remains keeps its modulus, E(t) = E0.

Swelling: the injected volume takes up water to its equilibrium swelling ratio Q (library),
so the in-vivo patch is Q times the injected thickness.

Mechanical effect on a covered region with wall thickness h and gel thickness
h_gel(t) = Q thickness (bulk) or Q thickness m(t) (surface), g = h_gel / h:

* passive stiffness: gel and myocardium deform together (layers in parallel), so the region's
  passive elastance gains EB E_gel / E_myo g (its stiffness is modulus x thickness);
* wall volume: the gel thickens the wall; half of the added volume moves the endocardium
  inwards (the mid-wall stays in place), reducing the region's unloaded cavity volume;
* fibre stress: Arts et al.'s one-fibre relation sigma_f = p (1 + 3 V_cav / V_wall) with the
  gel counted in the load-bearing wall volume in proportion to its share of the layer
  stiffness, E_gel / (E_gel + E_tissue).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hydraopt.domain import DesignBatch

DAYS_PER_WEEK = 7.0
# Flory-Rehner: equilibrium swelling Q ~ (crosslink density)^(-3/5), so a bulk-degrading gel's
# volume goes as m * m^(-3/5) = m^(2/5).
BULK_SWELLING_EXPONENT = 0.4
GONE = 2.0**-20


@dataclass(frozen=True)
class GelState:
    """Per design at one follow-up time: modulus [kPa] and thickness relative to the wall."""

    modulus_kpa: np.ndarray
    thickness_ratio: np.ndarray


def gel_state(designs: DesignBatch, wall_thickness_mm: float, weeks: float) -> GelState:
    """The gel of each design ``weeks`` after injection, from its numbers and its polymer's
    swelling ratio and degradation mode."""
    swelling, surface_erosion = polymer_properties(designs)
    remaining = np.exp2(-weeks * DAYS_PER_WEEK / designs.t50_days)
    modulus = np.where(surface_erosion, designs.stiffness_kpa, designs.stiffness_kpa * remaining)
    volume_fraction = np.where(surface_erosion, remaining, remaining ** BULK_SWELLING_EXPONENT)
    # After twenty half-lives (one part in a million) nothing is left in the wall.
    volume_fraction = np.where(remaining < GONE, 0.0, volume_fraction)
    thickness = swelling * designs.thickness_mm * volume_fraction
    return GelState(modulus, thickness / wall_thickness_mm)


def load_share(gel_modulus_kpa: np.ndarray, tissue_modulus_kpa: np.ndarray) -> np.ndarray:
    """Fraction of the gel's volume that bears wall load next to tissue of the given modulus."""
    return gel_modulus_kpa / (gel_modulus_kpa + tissue_modulus_kpa)


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
