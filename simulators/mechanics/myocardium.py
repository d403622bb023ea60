"""Fibre stress of the wall's tissues: myocardium, infarct scar and injected hydrogel.

The laws are those of the CircAdapt patch (Walmsley et al., PLoS Comput Biol
2015;11:e1004284; Arts et al., Am J Physiol Heart Circ Physiol 2005;288:H1943; parameter values
from the model's reference code), taken quasi-statically. Sarcomere length Ls = LsRef lambda,
lambda the fibre stretch from the reference length LsRef = 2.0 um.

* passive myocardium, extracellular matrix plus titin:
  sigma_p = 0.0349 SfPas ((Ls/Ls0)^k1 - 1) + 0.01 SfAct_ref ((Ls/Ls0)^(2 LsRef/dLs) - 1),
  zero at the unloaded length Ls0 = 1.8 um (SfPas 22 kPa, k1 = 10, dLs = 0.6 um,
  SfAct_ref = 84 kPa); the titin term keeps the reference active stress, so calibrating a
  patient's contractility does not change the passive wall;
* active myocardium: sigma_a = c SfAct e(t) (Ls - Lsc0 - Lse) / um for Ls > Lsc0 + Lse, the
  isometric stress of CircAdapt's contractile element (Lsc0 = 1.51 um) with its series
  element at rest length (Lse = 0.04 um: no shortening-velocity dependence) and the
  contractility state replaced by the chamber activation e(t) in [0, 1]; c is the tissue's
  contractility relative to remote myocardium;
* infarct scar: no active stress (Wenk et al., J Biomech Eng 2011: Tmax in the infarct is
  zero) and the passive law scaled by the infarct's stiffness relative to myocardium, which
  rises as the infarct heals (:func:`infarct_stiffness_ratio`);
* hydrogel, a neo-Hookean solid bonded into the wall and stretched with it in the wall's
  plane (equibiaxially, incompressible): its one-fibre stress, the stress doing the same work
  per volume as the in-plane stresses, is (2E/3)(lambda_g^2 - lambda_g^-4), with lambda_g =
  Ls/Ls0 (stress-free where the myocardium is unloaded: assumed, see docs/physics.md).

All functions are compiled with numba (they run inside the closed-loop integration) and
return the stress [Pa] and its derivative with respect to lambda.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# Compiled kernels may contract, reassociate and approximate floating-point operations, but
# keep NaN and infinity semantics (a failed heart must stay visibly non-finite).
FAST_MATH = {"contract", "afn", "arcp", "reassoc", "nsz"}

LS_REF_UM = 2.0
LS0_PASSIVE_UM = 1.8
DLS_PASSIVE_UM = 0.6
ECM_EXPONENT = 10  # an integer: the power is taken by multiplication
SF_PASSIVE_PA = 22.0e3
SF_ACTIVE_REFERENCE_PA = 84.0e3
LSC0_ACTIVE_UM = 1.51
SERIES_ELEMENT_UM = 0.04
ECM_FACTOR = 0.0349
TITIN_FACTOR = 0.01
TITIN_EXPONENT = 2.0 * LS_REF_UM / DLS_PASSIVE_UM
ACTIVE_ONSET_STRETCH = (LSC0_ACTIVE_UM + SERIES_ELEMENT_UM) / LS_REF_UM

# Border zone: contractility over remote, Wenk et al., Ann Thorac Surg 2012;93:1188-1193
# (human, Tmax 73.1 vs 109.5 kPa); passive as remote (Shimkunas et al., Ann Thorac Surg
# 2013;95:1619-1625: no increase in fibrosis in the border zone).
BORDER_ZONE_CONTRACTILITY = 73.1 / 109.5

# Infarct passive stiffness over myocardium's against the infarct's age [days]: as normal
# myocardium during acute ischaemia (Holmes et al., Annu Rev Biomed Eng 2005;7:223-253),
# 55 vs 18 kPa two weeks after the infarct (Berry et al., Am J Physiol Heart Circ Physiol
# 2006;290:H2196, atomic force microscopy; Arunachalam et al., Magn Reson Med 2018;79:361
# bracket it at 14 days in pigs: 1.5x by elastography, 5.9x in tension); linear in between
# and constant after (assumed: no measurement at a later age gives a ratio to normal; collagen
# keeps accumulating to six weeks, Fomovsky & Holmes, Am J Physiol Heart 2010;298:H221).
INFARCT_STIFFNESS_DAYS = (0.0, 14.0)
INFARCT_STIFFNESS_RATIO = (1.0, 55.0 / 18.0)


def infarct_stiffness_ratio(age_days: float | np.ndarray) -> np.ndarray:
    """Passive stiffness of the infarct over myocardium's at the given age."""
    return np.interp(age_days, INFARCT_STIFFNESS_DAYS, INFARCT_STIFFNESS_RATIO)


_ECM_PA = ECM_FACTOR * SF_PASSIVE_PA
_TITIN_PA = TITIN_FACTOR * SF_ACTIVE_REFERENCE_PA


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def passive_stress(stretch: float) -> tuple[float, float]:
    """Passive myocardial fibre stress [Pa] and d/dstretch."""
    relative = stretch * (LS_REF_UM / LS0_PASSIVE_UM)
    squared = relative * relative
    fourth = squared * squared
    ecm = _ECM_PA * fourth * fourth * squared  # relative**ECM_EXPONENT
    titin = _TITIN_PA * np.exp(TITIN_EXPONENT * np.log(relative))
    stress = ecm + titin - _ECM_PA - _TITIN_PA
    return stress, (ECM_EXPONENT * ecm + TITIN_EXPONENT * titin) / stretch


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def active_stress(stretch: float, active_pa: float) -> tuple[float, float]:
    """Active fibre stress [Pa] and d/dstretch, ``active_pa`` = c SfAct e(t)."""
    if stretch <= ACTIVE_ONSET_STRETCH:
        return 0.0, 0.0
    return active_pa * LS_REF_UM * (stretch - ACTIVE_ONSET_STRETCH), active_pa * LS_REF_UM


@njit(cache=True, error_model="numpy", fastmath=FAST_MATH)
def gel_stress(stretch: float, modulus_pa: float) -> tuple[float, float]:
    """One-fibre stress [Pa] of a neo-Hookean gel layer and d/dstretch."""
    if modulus_pa == 0.0:
        return 0.0, 0.0
    g = stretch * (LS_REF_UM / LS0_PASSIVE_UM)
    inverse = 1.0 / (g * g)
    inverse_fourth = inverse * inverse
    scale = 2.0 * modulus_pa / 3.0
    stress = scale * (g * g - inverse_fourth)
    slope = scale * (2.0 * g + 4.0 * inverse_fourth / g) * (LS_REF_UM / LS0_PASSIVE_UM)
    return stress, slope
