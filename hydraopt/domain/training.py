"""What a surrogate predicts from and is trained on: rows of (patient, design), columnar.

Validation is on held-out patients, never on held-out designs of training patients: a
surrogate must generalise to the next patient, and designs of one patient are correlated.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from hydraopt.domain.design import COVERAGE_PATTERNS, DEFAULT_PARAMETERS, DesignBatch
from hydraopt.domain.outcomes import OutputSpec
from hydraopt.domain.patient import PATIENT_FEATURES, Patient
from hydraopt.domain.polymer import POLYMER_CATEGORIES, Polymer


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
class PolymerInput:
    """What a surrogate sees of a polymer: its name, repeat unit (PSMILES, ``[*]`` end points)
    and category (one of :data:`POLYMER_CATEGORIES`)."""

    name: str
    psmiles: str
    category: str

    @property
    def category_index(self) -> int:
        return POLYMER_CATEGORIES.index(self.category)


def polymer_inputs(polymers: Iterable[Polymer]) -> tuple[PolymerInput, ...]:
    """What a surrogate sees of each polymer of a library, in its order."""
    return tuple(PolymerInput(p.name, p.psmiles, p.category) for p in polymers)


@dataclass(frozen=True, eq=False)
class SurrogateInputs:
    """What a surrogate predicts from, for ``n`` rows (patient x design), columnar.

    :param features: ``[n, 19]`` float64, the :data:`DATASET_FEATURES` in order.
    :param polymer_index: ``[n]`` int64, each row's polymer in ``polymers``.
    :param polymers: the polymers the rows refer to (a batch of thousands holds a few dozen).
    :param patient_id: ``[n]``, each row's patient (to group and report by).
    """

    features: np.ndarray
    polymer_index: np.ndarray
    polymers: tuple[PolymerInput, ...]
    patient_id: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.polymer_index)
        if self.features.shape != (n, len(DATASET_FEATURES)):
            raise ValueError(
                f"features have shape {self.features.shape}, expected ({n}, "
                f"{len(DATASET_FEATURES)})"
            )
        if len(self.patient_id) != n:
            raise ValueError("patient_id needs one entry per row")
        if n and (self.polymer_index.min() < 0 or self.polymer_index.max() >= len(self.polymers)):
            raise ValueError("polymer_index out of range of polymers")
        unknown = sorted({p.category for p in self.polymers} - set(POLYMER_CATEGORIES))
        if unknown:
            raise ValueError(f"unknown polymer categories {unknown}")

    def __len__(self) -> int:
        return len(self.polymer_index)

    @classmethod
    def for_designs(cls, patient: Patient, designs: DesignBatch) -> SurrogateInputs:
        """The rows of one patient with each of ``designs``."""
        columns = feature_columns(patient, designs)
        return cls(
            features=np.column_stack([columns[name] for name in DATASET_FEATURE_NAMES]),
            polymer_index=np.asarray(designs.polymer_index, dtype=np.int64),
            polymers=polymer_inputs(designs.space.polymers),
            patient_id=np.full(len(designs), patient.patient_id, dtype=object),
        )

    def take(self, rows: np.ndarray | slice) -> SurrogateInputs:
        """The rows at ``rows`` (an index array, boolean mask or slice)."""
        return SurrogateInputs(
            self.features[rows], self.polymer_index[rows], self.polymers, self.patient_id[rows]
        )

    @property
    def row_psmiles(self) -> np.ndarray:
        """Each row's PSMILES (object array)."""
        return np.array([p.psmiles for p in self.polymers], dtype=object)[self.polymer_index]


@dataclass(frozen=True, eq=False)
class TrainingData:
    """Surrogate inputs with the simulated targets of each row.

    :param targets: name -> ``[n, *spec.shape]``; ``is_optimal`` (0 or 1) among them when the
        dataset labels it.
    :param specs: each target's name, unit and shape.
    """

    inputs: SurrogateInputs
    targets: Mapping[str, np.ndarray]
    specs: tuple[OutputSpec, ...]

    def __post_init__(self) -> None:
        names = [s.name for s in self.specs]
        if sorted(names) != sorted(self.targets):
            raise ValueError(f"targets {sorted(self.targets)} do not match specs {names}")
        for spec in self.specs:
            expected = (len(self.inputs), *spec.shape)
            if np.shape(self.targets[spec.name]) != expected:
                raise ValueError(
                    f"target {spec.name} has shape {np.shape(self.targets[spec.name])}, "
                    f"expected {expected}"
                )

    def __len__(self) -> int:
        return len(self.inputs)

    def take(self, rows: np.ndarray | slice) -> TrainingData:
        return TrainingData(
            self.inputs.take(rows), {k: v[rows] for k, v in self.targets.items()}, self.specs
        )

    def spec(self, name: str) -> OutputSpec:
        return next(s for s in self.specs if s.name == name)


@dataclass(frozen=True)
class SurrogateDomain:
    """What a fitted surrogate has seen: the repeat units of its training polymers and each
    feature's range over its training rows. A study asking it about other polymers, or designs
    beyond these ranges, asks it to extrapolate.

    :param psmiles: the training polymers' PSMILES.
    :param feature_ranges: feature name -> (smallest, largest) value trained on, in its unit.
    """

    psmiles: frozenset[str]
    feature_ranges: Mapping[str, tuple[float, float]]

    @classmethod
    def of(cls, data: TrainingData) -> SurrogateDomain:
        features = data.inputs.features
        ranges = {
            name: (float(np.nanmin(features[:, j])), float(np.nanmax(features[:, j])))
            for j, name in enumerate(DATASET_FEATURE_NAMES)
        }
        used = np.unique(data.inputs.polymer_index)
        return cls(frozenset(data.inputs.polymers[i].psmiles for i in used), ranges)
