"""Patients and cohorts: the 6 cardiac and 5 tissue-mechanics features of HYDRA-BERT.

A cohort is small (tens to hundreds of patients), so a patient is one frozen object; what
scales (designs, candidates, outcomes) is columnar, see :mod:`hydraopt.domain.design`.

Besides the 11 features a patient carries the infarct's age at the time of treatment
(``infarct_age_days``). The physics needs it (a healing infarct stiffens over weeks) but it is
not a surrogate feature: the seeds' 19 features describe the heart as imaged, and the age acts
only through the tissue properties the simulators derive from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from hydraopt.errors import DataError

FeatureGroup = Literal["cardiac", "tissue"]


@dataclass(frozen=True)
class PatientFeature:
    """Metadata of one patient feature: its unit and the range a real patient can have.

    ``valid_min``/``valid_max`` are plausibility limits for any adult post-infarction
    ventricle, not the cohort's spread: a value outside them is a data error, not an outlier.
    """

    name: str
    unit: str
    group: FeatureGroup
    description: str
    valid_min: float
    valid_max: float


PATIENT_FEATURES: tuple[PatientFeature, ...] = (
    PatientFeature("lvef_pct", "%", "cardiac", "left-ventricular ejection fraction", 5.0, 80.0),
    PatientFeature(
        "gls_pct",
        "%",
        "cardiac",
        "global longitudinal strain (negative in contraction)",
        -30.0,
        0.0,
    ),
    PatientFeature("edv_ml", "mL", "cardiac", "LV end-diastolic volume", 40.0, 600.0),
    PatientFeature("esv_ml", "mL", "cardiac", "LV end-systolic volume", 10.0, 500.0),
    PatientFeature(
        "scar_fraction_pct",
        "%",
        "cardiac",
        "infarct (scar) size as % of LV myocardium",
        1.0,
        75.0,
    ),
    PatientFeature(
        "bz_fraction_pct",
        "%",
        "cardiac",
        "border-zone (peri-infarct) size as % of LV myocardium",
        1.0,
        40.0,
    ),
    PatientFeature(
        "bz_stress_kpa", "kPa", "tissue", "border-zone end-systolic myofibre stress", 2.0, 120.0
    ),
    PatientFeature(
        "healthy_stress_kpa",
        "kPa",
        "tissue",
        "remote-myocardium end-systolic myofibre stress",
        2.0,
        80.0,
    ),
    PatientFeature(
        "stress_concentration", "1", "tissue", "border-zone over remote fibre stress", 0.5, 4.0
    ),
    PatientFeature(
        "transmurality",
        "1",
        "tissue",
        "scar transmurality as a fraction of wall thickness",
        0.0,
        1.0,
    ),
    PatientFeature(
        "wall_thickness_mm", "mm", "tissue", "mean end-diastolic LV wall thickness", 2.0, 20.0
    ),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in PATIENT_FEATURES)

# Days since the infarct when the cohort does not say: a healed infarct (beyond the fibrotic
# phase of healing, weeks 2-6; Holmes et al., Annu Rev Biomed Eng 2005;7:223-253), the state of
# the chronic heart-failure patients that most hydrogel studies enrol (docs/cohorts.md).
# Patient ids name files (meshes, simulations, work units), so they are file-name safe.
PATIENT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_INFARCT_AGE_DAYS = 90.0
# Where a patient's record comes from: measured in a real patient, or drawn by a cohort model.
# The dataset spreads each origin proportionally over its splits, as the seeds do; "" is not
# stated. Origin describes the record, not the heart: no simulator reads it.
PATIENT_ORIGINS = ("real", "synthetic")
INFARCT_AGE_RANGE_DAYS = (0.0, 36500.0)

# Clinical EF and volumes come from one modality; larger gaps mean a unit or column mix-up.
EF_CONSISTENCY_TOLERANCE_PCT = 5.0
# stress_concentration is bz/healthy stress; allow rounding in the source data.
STRESS_RATIO_TOLERANCE = 0.05


@dataclass(frozen=True)
class Patient:
    """One post-infarction patient, described by the seeds' 11 baseline features."""

    patient_id: str
    lvef_pct: float
    gls_pct: float
    edv_ml: float
    esv_ml: float
    scar_fraction_pct: float
    bz_fraction_pct: float
    bz_stress_kpa: float
    healthy_stress_kpa: float
    stress_concentration: float
    transmurality: float
    wall_thickness_mm: float
    infarct_age_days: float = DEFAULT_INFARCT_AGE_DAYS
    origin: str = ""

    def features(self) -> np.ndarray:
        """The 11 features in :data:`FEATURE_NAMES` order, float64."""
        return np.array([getattr(self, name) for name in FEATURE_NAMES], dtype=np.float64)

    def physical_record(self) -> dict[str, float | str]:
        """Every field that describes the heart (what meshers and simulators may read): all
        but ``origin``, so that relabelling a record does not redo its simulations."""
        record = asdict(self)
        del record["origin"]
        return record

    def problems(self) -> list[str]:
        """Every way this patient is implausible, each naming the field; empty when valid."""
        found = []
        if self.origin not in ("", *PATIENT_ORIGINS):
            found.append(
                f"origin: {self.origin!r} must be one of {', '.join(PATIENT_ORIGINS)} "
                "(or empty: not stated)"
            )
        if not PATIENT_ID_PATTERN.match(self.patient_id):
            found.append(
                f"patient_id: {self.patient_id!r} must be letters, digits, '_', '.' or '-', "
                "starting with a letter or digit (it names the patient's files)"
            )
        for feature in PATIENT_FEATURES:
            value = getattr(self, feature.name)
            if not np.isfinite(value):
                found.append(f"{feature.name}: expected a number, got {value!r}")
            elif not feature.valid_min <= value <= feature.valid_max:
                found.append(
                    f"{feature.name}: {value:g} {feature.unit} is outside the physiological range "
                    f"[{feature.valid_min:g}, {feature.valid_max:g}] {feature.unit}"
                )
        low, high = INFARCT_AGE_RANGE_DAYS
        if not (np.isfinite(self.infarct_age_days) and low <= self.infarct_age_days <= high):
            found.append(
                f"infarct_age_days: expected days since the infarct in [{low:g}, {high:g}], "
                f"got {self.infarct_age_days!r}"
            )
        if found:
            return found
        if self.esv_ml >= self.edv_ml:
            found.append(f"esv_ml: {self.esv_ml:g} mL must be smaller than edv_ml {self.edv_ml:g}")
        else:
            ef_from_volumes = 100.0 * (self.edv_ml - self.esv_ml) / self.edv_ml
            if abs(ef_from_volumes - self.lvef_pct) > EF_CONSISTENCY_TOLERANCE_PCT:
                found.append(
                    f"lvef_pct: {self.lvef_pct:g}% disagrees with (EDV-ESV)/EDV = "
                    f"{ef_from_volumes:.1f}% by more than {EF_CONSISTENCY_TOLERANCE_PCT:g} points"
                )
        if self.scar_fraction_pct + self.bz_fraction_pct > 90.0:
            found.append(
                f"bz_fraction_pct: scar ({self.scar_fraction_pct:g}%) and border zone "
                f"({self.bz_fraction_pct:g}%) leave less than 10% of the myocardium remote"
            )
        if self.scar_fraction_pct > 100.0 * self.transmurality:
            found.append(
                f"transmurality: {self.transmurality:g} is too small for a scar of "
                f"{self.scar_fraction_pct:g}% of the myocardium (the scar would need more than "
                "the whole wall's area)"
            )
        ratio = self.bz_stress_kpa / self.healthy_stress_kpa
        if abs(ratio - self.stress_concentration) > STRESS_RATIO_TOLERANCE * ratio:
            found.append(
                f"stress_concentration: {self.stress_concentration:g} disagrees with "
                f"bz_stress_kpa/healthy_stress_kpa = {ratio:.3f}"
            )
        return found

    def validated(self) -> Patient:
        """Return self, or raise :class:`DataError` naming the patient and every bad field."""
        found = self.problems()
        if found:
            raise DataError(f"patient {self.patient_id!r}: " + "; ".join(found))
        return self


@dataclass(frozen=True)
class Cohort:
    """An ordered set of patients with unique ids."""

    patients: tuple[Patient, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for patient in self.patients:
            if patient.patient_id in seen:
                raise DataError(f"patient id {patient.patient_id!r} appears twice in the cohort")
            seen.add(patient.patient_id)

    def __len__(self) -> int:
        return len(self.patients)

    def __iter__(self) -> Iterator[Patient]:
        return iter(self.patients)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(p.patient_id for p in self.patients)

    def get(self, patient_id: str) -> Patient:
        for patient in self.patients:
            if patient.patient_id == patient_id:
                return patient
        raise DataError(f"no patient {patient_id!r} in the cohort (ids: {', '.join(self.ids)})")

    def feature_matrix(self) -> np.ndarray:
        """Features as a ``[n_patients, 11]`` float64 array, columns in FEATURE_NAMES order."""
        if not self.patients:
            return np.empty((0, len(FEATURE_NAMES)))
        return np.stack([p.features() for p in self.patients])

    def to_columns(self) -> dict[str, np.ndarray]:
        """Columnar form for storage: ``patient_id`` (str), one float64 array per feature and
        ``infarct_age_days``."""
        matrix = self.feature_matrix()
        columns: dict[str, np.ndarray] = {"patient_id": np.array(self.ids, dtype=object)}
        for j, name in enumerate(FEATURE_NAMES):
            columns[name] = matrix[:, j]
        columns["infarct_age_days"] = np.array([p.infarct_age_days for p in self.patients])
        columns["origin"] = np.array([p.origin for p in self.patients], dtype=object)
        return columns

    @classmethod
    def from_columns(cls, columns: Mapping[str, Sequence]) -> Cohort:
        ids = [_text(x) for x in columns["patient_id"]]
        patients = tuple(
            Patient(
                patient_id,
                *(float(columns[name][i]) for name in FEATURE_NAMES),
                infarct_age_days=float(columns["infarct_age_days"][i]),
                origin=_text(columns["origin"][i]) if "origin" in columns else "",
            )
            for i, patient_id in enumerate(ids)
        )
        return cls(patients)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
