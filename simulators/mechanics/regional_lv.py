"""A regional time-varying-elastance left ventricle of an infarcted heart.

The LV wall is split into regions i (remote, treated border zone, untreated border zone,
scar) holding volume fractions w_i of the myocardium (from the patient's mesh). Each region
owns a share of the cavity and they share its pressure, so their compliances add:

    V_i(t) = V0_i + w_i p(t) / (k_i EB + a_i EA e(t) + dEB_i)        (regional volume)
    V(t) = sum_i V_i(t)   =>   p(t) = (V - V0) / C(t),  C(t) = sum_i w_i / E_i(t)

with EB, EA the healthy chamber's passive and active elastance (Regazzoni et al. 2022's LV
when the heart is healthy: then C(t) = 1 / (EB + EA e(t)) exactly), k_i the region's passive
stiffness relative to healthy myocardium, a_i its contractility relative to healthy
myocardium, and dEB_i the stiffness the hydrogel adds (:mod:`.hydrogel`). Scar has no active
tension (a = 0) and, by default, twenty times the passive elastance of healthy myocardium
(collagen scar stiffens steeply with strain, so at systolic loads it is far stiffer than the
small-strain ratio of 55 vs 18 kPa of Berry et al. 2006; see docs/physics.md); the border zone
contracts with about two thirds of the remote strength (Wenk
et al. 2012: maximal active tension 73.1 vs 109.5 kPa). A non-contracting, compliant region
bulges in systole: the regional dyskinesis that lowers the infarcted heart's EF and that a
stiffening hydrogel reduces.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hydraopt_simulators.mechanics.closed_loop import CHAMBERS, HEART_RATE_HZ, activation

REGIONS = ("remote", "bz_treated", "bz_untreated", "scar")
REMOTE, BZ_TREATED, BZ_UNTREATED, SCAR = range(4)


@dataclass(frozen=True)
class TissueProperties:
    """Regional passive stiffness (k) and contractility (a) relative to healthy myocardium."""

    scar_stiffness_ratio: float
    bz_stiffness_ratio: float
    bz_contractility_ratio: float

    def stiffness(self) -> np.ndarray:
        return np.array(
            [1.0, self.bz_stiffness_ratio, self.bz_stiffness_ratio, self.scar_stiffness_ratio]
        )

    def contractility(self) -> np.ndarray:
        return np.array([1.0, self.bz_contractility_ratio, self.bz_contractility_ratio, 0.0])


@dataclass
class RegionalLV:
    """``n`` hearts at once. Arrays are [n, 4] (regions in :data:`REGIONS` order) or [n]."""

    weights: np.ndarray
    passive_mmhg_per_ml: np.ndarray
    active_mmhg_per_ml: np.ndarray
    v0_regional_ml: np.ndarray

    def __post_init__(self) -> None:
        self.v0 = self.v0_regional_ml.sum(axis=1)
        lv = CHAMBERS["LV"]
        self._timing = (lv["tC"], lv["TC"], lv["TR"], 1.0 / HEART_RATE_HZ)

    def activation(self, t: np.ndarray | float) -> np.ndarray:
        return activation(t, *self._timing)

    def regional_compliance(self, t: np.ndarray | float) -> np.ndarray:
        """dV_i/dp per region [n, 4] at time(s) t (scalar, or [n])."""
        e = np.asarray(self.activation(t))
        e = e[:, None] if e.ndim else e
        return self.weights / (self.passive_mmhg_per_ml + self.active_mmhg_per_ml * e)

    def compliance(self, t: float) -> np.ndarray:
        return self.regional_compliance(t).sum(axis=1)

    def regional_volumes(self, p_mmhg: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Regional cavity volumes [n, 4] at LV pressure p and time t (both [n])."""
        return self.v0_regional_ml + p_mmhg[:, None] * self.regional_compliance(t)


def build_regional_lv(
    weights: np.ndarray,
    elastance_active: float,
    elastance_passive: float,
    v0_ml: float,
    tissue: TissueProperties,
    added_passive: np.ndarray | None = None,
    displaced_ml: np.ndarray | None = None,
) -> RegionalLV:
    """Hearts sharing the patient's calibrated elastances, each with its own region weights
    [n, 4], added passive elastance [n, 4] and endocardial displacement [n, 4] by a gel."""
    n = len(weights)
    added = np.zeros((n, 4)) if added_passive is None else added_passive
    displaced = np.zeros((n, 4)) if displaced_ml is None else displaced_ml
    return RegionalLV(
        weights=weights,
        passive_mmhg_per_ml=elastance_passive * tissue.stiffness()[None, :] + added,
        active_mmhg_per_ml=np.broadcast_to(elastance_active * tissue.contractility(), (n, 4)),
        v0_regional_ml=weights * v0_ml - displaced,
    )
