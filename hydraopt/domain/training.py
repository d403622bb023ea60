"""What a surrogate is trained on: simulated outcomes of designs on patients, split by patient.

Validation is on held-out patients, never on held-out designs of training patients: a
surrogate must generalise to the next patient, and designs of one patient are correlated.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from hydraopt.domain.design import COVERAGE_PATTERNS, DEFAULT_PARAMETERS, DesignBatch, DesignSpace
from hydraopt.domain.outcomes import Outcomes
from hydraopt.domain.patient import PATIENT_FEATURES, Cohort, Patient


@dataclass(frozen=True)
class DatasetFeature:
    """One of the 19 numerical input features of a training row (seeds/001, section 3.3)."""

    name: str
    unit: str
    group: str  # cardiac, tissue, hydrogel or treatment


# Patient cardiac (6) and tissue mechanics (5), then the hydrogel (3: modulus, half-life,
# conductivity) and the treatment (5: patch thickness and the coverage pattern one-hot).
DATASET_FEATURES: tuple[DatasetFeature, ...] = (
    *(DatasetFeature(f.name, f.unit, f.group) for f in PATIENT_FEATURES),
    *(DatasetFeature(p.name, p.unit, "hydrogel") for p in DEFAULT_PARAMETERS[:3]),
    DatasetFeature(DEFAULT_PARAMETERS[3].name, DEFAULT_PARAMETERS[3].unit, "treatment"),
    *(DatasetFeature(f"coverage_{c}", "1", "treatment") for c in COVERAGE_PATTERNS),
)
DATASET_FEATURE_NAMES = tuple(f.name for f in DATASET_FEATURES)


def feature_columns(patient: Patient, designs: DesignBatch) -> dict[str, np.ndarray]:
    """The 19 features of ``patient`` with each of ``designs``, one float64 column each."""
    n = len(designs)
    columns = {
        f.name: np.full(n, getattr(patient, f.name), dtype=np.float64) for f in PATIENT_FEATURES
    }
    for parameter in DEFAULT_PARAMETERS:
        columns[parameter.name] = np.asarray(getattr(designs, parameter.name), dtype=np.float64)
    for c, coverage in enumerate(COVERAGE_PATTERNS):
        columns[f"coverage_{coverage}"] = (designs.coverage_index == c).astype(np.float64)
    return {name: columns[name] for name in DATASET_FEATURE_NAMES}


@dataclass(frozen=True)
class TrainingData:
    """Per patient, its designs and their simulated outcomes (rows aligned).

    :param validation_ids: patients held out of training, to judge the fit on.
    """

    space: DesignSpace
    patients: Cohort
    designs: Mapping[str, DesignBatch]
    outcomes: Mapping[str, Outcomes]
    validation_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        ids = set(self.patients.ids)
        for name, part in (("designs", self.designs), ("outcomes", self.outcomes)):
            if set(part) != ids:
                raise ValueError(f"{name} must be given for exactly the cohort's patients")
        for pid in ids:
            if len(self.designs[pid]) != len(self.outcomes[pid]):
                raise ValueError(f"patient {pid}: designs and outcomes differ in rows")
        unknown = sorted(set(self.validation_ids) - ids)
        if unknown:
            raise ValueError(f"validation patients {unknown} are not in the cohort")

    @property
    def training_ids(self) -> tuple[str, ...]:
        held_out = set(self.validation_ids)
        return tuple(pid for pid in self.patients.ids if pid not in held_out)
