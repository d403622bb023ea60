"""Seeded synthetic post-infarction cohorts drawn from published statistics.

Two populations, mixed in a chosen proportion:

* ``subacute-stemi``: large anterior STEMI a few days after primary PCI, the population of the
  PRESERVATION-I trial of an injectable alginate (inclusion: infarct >= 20% or EF <= 35%).
* ``chronic-hfref``: chronic ischaemic heart failure with reduced EF, the population of the
  AUGMENT-HF trial of Algisyl-LVR (inclusion: EF <= 35%, wall thickness >= 8 mm).

Every distribution below carries its source key; the references are in
``docs/cohorts.md``. Where a number is a calibrated assumption rather than a published
statistic it says so ("assumed"). Feature relations follow the literature: ESV from EDV and
EF; GLS from EF (Delgado2008); EF falling with infarct size (Wu2008, r = -0.75); border zone as
a share of the infarct (Yan2006); BZ stress as remote stress times a concentration (Walker2005).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hydraopt.domain import Cohort, Patient

Population = Literal["subacute-stemi", "chronic-hfref"]


@dataclass(frozen=True)
class PopulationStatistics:
    """Distribution parameters of one population; units are in the names."""

    # LVEF. subacute: EF = ef_intercept_pct + ef_per_scar_pct * scar + N(0, ef_sd_pct)
    # (Wu2008: EF 49% in the smallest vs 32 +/- 9% in the largest infarct tertile).
    # chronic: N(26, 5) (Anker2015, baseline EF 26 +/- 5%); ef_per_scar_pct = 0.
    ef_intercept_pct: float
    ef_per_scar_pct: float
    ef_sd_pct: float
    ef_range_pct: tuple[float, float]
    # EDV lognormal: median and geometric SD. subacute: EDV index 86 +/- 19 mL/m2 (Wu2008)
    # times a body-surface area of 1.95 m2; chronic: LVEDD index 30-40 mm/m2 (Anker2015)
    # through the Teichholz formula (derived).
    edv_median_ml: float
    edv_geometric_sd: float
    edv_range_ml: tuple[float, float]
    # Mean end-diastolic wall thickness, echo convention (assumed spread; chronic: >= 8 mm is
    # the AUGMENT-HF inclusion criterion).
    wall_thickness_mean_mm: float
    wall_thickness_sd_mm: float
    wall_thickness_range_mm: tuple[float, float]
    # Days from the infarct to the injection, uniform. subacute: 2-5 days after primary PCI,
    # PRESERVATION-I's treatment window (Rao2016); chronic: assumed months to years (AUGMENT-HF
    # enrolled chronic heart failure without stating the infarct's age; the physics treats any
    # infarct older than two weeks alike).
    infarct_age_range_days: tuple[float, float]


POPULATIONS: dict[str, PopulationStatistics] = {
    "subacute-stemi": PopulationStatistics(
        ef_intercept_pct=60.0,
        ef_per_scar_pct=-0.7,
        ef_sd_pct=6.0,
        ef_range_pct=(20.0, 55.0),
        edv_median_ml=170.0,
        edv_geometric_sd=1.25,
        edv_range_ml=(90.0, 400.0),
        wall_thickness_mean_mm=9.0,
        wall_thickness_sd_mm=1.5,
        wall_thickness_range_mm=(6.0, 14.0),
        infarct_age_range_days=(2.0, 5.0),
    ),
    "chronic-hfref": PopulationStatistics(
        ef_intercept_pct=26.0,
        ef_per_scar_pct=0.0,
        ef_sd_pct=5.0,
        ef_range_pct=(15.0, 35.0),
        edv_median_ml=240.0,
        edv_geometric_sd=1.3,
        edv_range_ml=(120.0, 500.0),
        wall_thickness_mean_mm=9.5,
        wall_thickness_sd_mm=1.2,
        wall_thickness_range_mm=(8.0, 14.0),
        infarct_age_range_days=(180.0, 1825.0),
    ),
}

# Resting stroke volume of these patients, mL: EDV x EF outside it would need a cardiac output
# (at 75 beats/min) below 3 or above 6.4 L/min (assumed from the normal 60-100 mL and the
# lower values of heart failure).
STROKE_VOLUME_RANGE_ML = (40.0, 85.0)
# At least this share of the myocardium stays remote (neither scar nor border zone).
MIN_REMOTE_PCT = 30.0

# Infarct size, % of LV mass: Gamma(k=1.45, theta=15.2) fits the pooled STEMI CMR median 17.9%
# (IQR 8.0-29.8) of Stone2016; hydrogel candidates have large infarcts, so truncate to 15-60%.
SCAR_GAMMA_SHAPE = 1.45
SCAR_GAMMA_SCALE_PCT = 15.2
SCAR_RANGE_PCT = (15.0, 60.0)
# The largest EF an infarct leaves: 72.2 - 1.18 x infarct size (% of LV), the upper envelope of
# EF against CMR infarct size in healed infarction (Ugander2008). EF is drawn below it, and the
# infarct no larger than leaves MIN_EF_INTERVAL_PCT of the population's EF range open.
MAX_EF_INTERCEPT_PCT = 72.2
MAX_EF_PER_SCAR = 1.18
MIN_EF_INTERVAL_PCT = 3.0
# Peri-infarct (border-zone) share of the infarct, Beta with mean 0.35, SD 0.12 (Yan2006's
# "% periphery"; the spread is assumed). Border zone is capped by the feature's valid range.
BZ_SHARE_BETA = (5.18, 9.62)
BZ_RANGE_PCT = (2.0, 40.0)
# Mean transmurality within infarcted segments, Beta(3.9, 2.6): mean 0.6 (Kim2000; assumed shape),
# conditioned on the infarct covering at most MAX_INFARCT_EXTENT of the LV wall's area
# (extent = scar fraction / transmurality).
TRANSMURALITY_BETA = (3.9, 2.6)
MAX_INFARCT_EXTENT = 0.6
# |GLS| = 0.57 + 0.285 * EF + N(0, 2.7): moment-matched to Delgado2008 (|GLS| 11.1 +/- 4.8 at
# EF 37 +/- 14); gives about -11% in STEMI, -8% in HFrEF (Ersboll2013's -14% threshold above).
GLS_INTERCEPT_PCT = 0.57
GLS_PER_EF = 0.285
GLS_SD_PCT = 2.7
GLS_RANGE_PCT = (-30.0, -2.0)
# Remote end-systolic fibre stress N(20, 5) kPa (normal human 16.5 +/- 4.7 kPa, Genet2014, raised
# by dilatation); BZ/remote concentration lognormal, median 1.25, log-SD 0.12 (sheep FE: 29.9 vs
# 24.2 kPa, Walker2005), truncated to 1.0-2.0.
HEALTHY_STRESS_MEAN_KPA = 20.0
HEALTHY_STRESS_SD_KPA = 5.0
HEALTHY_STRESS_RANGE_KPA = (8.0, 40.0)
STRESS_CONCENTRATION_MEDIAN = 1.25
STRESS_CONCENTRATION_LOG_SD = 0.12
STRESS_CONCENTRATION_RANGE = (1.0, 2.0)


def _truncated(
    rng: np.random.Generator, draw: Callable[[int], np.ndarray], low: float, high: float, n: int
) -> np.ndarray:
    """``n`` draws of ``draw`` restricted to ``[low, high]`` by rejection (order-stable)."""
    out = np.empty(n)
    filled = 0
    while filled < n:
        batch = draw(2 * (n - filled) + 8)
        batch = batch[(batch >= low) & (batch <= high)][: n - filled]
        out[filled : filled + len(batch)] = batch
        filled += len(batch)
    return out


def _draw_population(
    rng: np.random.Generator, stats: PopulationStatistics, n: int
) -> dict[str, np.ndarray]:
    ef_low, ef_high = stats.ef_range_pct
    largest_scar = (MAX_EF_INTERCEPT_PCT - ef_low - MIN_EF_INTERVAL_PCT) / MAX_EF_PER_SCAR
    scar = _truncated(
        rng,
        lambda k: rng.gamma(SCAR_GAMMA_SHAPE, SCAR_GAMMA_SCALE_PCT, k),
        SCAR_RANGE_PCT[0],
        min(SCAR_RANGE_PCT[1], largest_scar),
        n,
    )
    ef = np.array(
        [
            _truncated(
                rng,
                lambda k, s=s: (
                    stats.ef_intercept_pct
                    + stats.ef_per_scar_pct * s
                    + rng.normal(0.0, stats.ef_sd_pct, k)
                ),
                ef_low,
                min(ef_high, MAX_EF_INTERCEPT_PCT - MAX_EF_PER_SCAR * s),
                1,
            )[0]
            for s in scar
        ]
    )
    # EDV is drawn given EF so that the stroke volume stays in the resting range.
    edv = np.array(
        [
            _truncated(
                rng,
                lambda k: (
                    stats.edv_median_ml * np.exp(rng.normal(0, np.log(stats.edv_geometric_sd), k))
                ),
                max(stats.edv_range_ml[0], STROKE_VOLUME_RANGE_ML[0] / (e / 100.0)),
                min(stats.edv_range_ml[1], STROKE_VOLUME_RANGE_ML[1] / (e / 100.0)),
                1,
            )[0]
            for e in ef
        ]
    )
    gls = np.array(
        [
            _truncated(
                rng,
                lambda k, e=e: -(GLS_INTERCEPT_PCT + GLS_PER_EF * e + rng.normal(0, GLS_SD_PCT, k)),
                *GLS_RANGE_PCT,
                1,
            )[0]
            for e in ef
        ]
    )
    bz = np.clip(
        rng.beta(*BZ_SHARE_BETA, n) * scar,
        BZ_RANGE_PCT[0],
        np.minimum(BZ_RANGE_PCT[1], 100.0 - MIN_REMOTE_PCT - scar),
    )
    wall = _truncated(
        rng,
        lambda k: rng.normal(stats.wall_thickness_mean_mm, stats.wall_thickness_sd_mm, k),
        *stats.wall_thickness_range_mm,
        n,
    )
    healthy = _truncated(
        rng,
        lambda k: rng.normal(HEALTHY_STRESS_MEAN_KPA, HEALTHY_STRESS_SD_KPA, k),
        *HEALTHY_STRESS_RANGE_KPA,
        n,
    )
    concentration = _truncated(
        rng,
        lambda k: (
            STRESS_CONCENTRATION_MEDIAN * np.exp(rng.normal(0, STRESS_CONCENTRATION_LOG_SD, k))
        ),
        *STRESS_CONCENTRATION_RANGE,
        n,
    )
    return {
        "lvef_pct": ef,
        "gls_pct": gls,
        "edv_ml": edv,
        "esv_ml": edv * (1.0 - ef / 100.0),
        "scar_fraction_pct": scar,
        "bz_fraction_pct": bz,
        "bz_stress_kpa": healthy * concentration,
        "healthy_stress_kpa": healthy,
        "stress_concentration": concentration,
        "transmurality": np.array(
            [
                _truncated(
                    rng,
                    lambda k: rng.beta(*TRANSMURALITY_BETA, k),
                    s / 100.0 / MAX_INFARCT_EXTENT,
                    1.0,
                    1,
                )[0]
                for s in scar
            ]
        ),
        "wall_thickness_mm": wall,
    }


def synthetic_cohort(
    n_patients: int, seed: int, chronic_fraction: float = 0.5, id_prefix: str = "SYN"
) -> Cohort:
    """A cohort of ``n_patients``, ``chronic_fraction`` of them from the chronic-HFrEF
    population and the rest subacute STEMI; the same seed gives the same cohort."""
    if n_patients < 1:
        raise ValueError("n_patients must be at least 1")
    if not 0.0 <= chronic_fraction <= 1.0:
        raise ValueError("chronic_fraction must lie in [0, 1]")
    rng = np.random.default_rng(seed)
    # Infarct ages come from their own stream, so adding them left the features unchanged.
    age_rng = np.random.default_rng([seed, 1])
    n_chronic = round(chronic_fraction * n_patients)
    populations = (
        (POPULATIONS["subacute-stemi"], n_patients - n_chronic),
        (POPULATIONS["chronic-hfref"], n_chronic),
    )
    draws = [_draw_population(rng, stats, n) for stats, n in populations]
    for columns, (stats, n) in zip(draws, populations, strict=True):
        columns["infarct_age_days"] = age_rng.uniform(*stats.infarct_age_range_days, n)
    patients = []
    for columns in draws:
        for i in range(len(columns["lvef_pct"])):
            values = {name: round(float(col[i]), 3) for name, col in columns.items()}
            # Rounding can break the exact ratio; recompute it from the rounded stresses.
            values["stress_concentration"] = round(
                values["bz_stress_kpa"] / values["healthy_stress_kpa"], 4
            )
            pid = f"{id_prefix}{len(patients) + 1:03d}"
            patients.append(Patient(pid, **values, origin="synthetic").validated())
    return Cohort(tuple(patients))
