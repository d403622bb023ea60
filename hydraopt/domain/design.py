"""The hybrid design space and columnar batches of designs.

A design is a polymer and a coverage pattern (discrete) plus stiffness, degradation
half-life, conductivity and patch thickness (continuous). Batches hold one array per field:
Stage 3 handles millions of designs per patient, so no Python object exists per design.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hydraopt.domain.polymer import PolymerLibrary

# Global order: a coverage index is stable whatever subset a study allows.
COVERAGE_PATTERNS: tuple[str, ...] = ("scar_only", "scar_bz25", "scar_bz50", "scar_bz100")
Scale = Literal["linear", "log"]


@dataclass(frozen=True)
class ContinuousParameter:
    """One continuous design variable: bounds in its unit, and the scale to sample it on."""

    name: str
    unit: str
    low: float
    high: float
    scale: Scale
    description: str

    def __post_init__(self) -> None:
        if not self.low < self.high:
            raise ValueError(f"{self.name}: min {self.low:g} must be below max {self.high:g}")
        if self.scale == "log" and self.low <= 0:
            raise ValueError(f"{self.name}: a log-scaled range needs min > 0, got {self.low:g}")

    def from_unit(self, u: np.ndarray) -> np.ndarray:
        """Map ``u`` in [0, 1] onto the parameter's range on its scale."""
        u = np.asarray(u, dtype=np.float64)
        if self.scale == "log":
            return np.exp(np.log(self.low) + u * (np.log(self.high) - np.log(self.low)))
        return self.low + u * (self.high - self.low)

    def to_unit(self, x: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`from_unit`."""
        x = np.asarray(x, dtype=np.float64)
        if self.scale == "log":
            return (np.log(x) - np.log(self.low)) / (np.log(self.high) - np.log(self.low))
        return (x - self.low) / (self.high - self.low)


CONTINUOUS_FIELDS: tuple[str, ...] = (
    "stiffness_kpa",
    "t50_days",
    "conductivity_s_per_m",
    "thickness_mm",
)
DEFAULT_PARAMETERS: tuple[ContinuousParameter, ...] = (
    ContinuousParameter("stiffness_kpa", "kPa", 0.5, 50.0, "log", "hydrogel elastic modulus E"),
    ContinuousParameter("t50_days", "day", 1.0, 180.0, "log", "degradation half-life t50"),
    ContinuousParameter(
        "conductivity_s_per_m", "S/m", 0.001, 1.0, "log", "hydrogel electrical conductivity"
    ),
    ContinuousParameter("thickness_mm", "mm", 0.1, 2.0, "linear", "injected patch thickness"),
)


@dataclass(frozen=True)
class DesignSpace:
    """What a study may choose: polymers, coverage patterns and continuous bounds."""

    polymers: PolymerLibrary
    coverages: tuple[str, ...] = COVERAGE_PATTERNS
    parameters: tuple[ContinuousParameter, ...] = DEFAULT_PARAMETERS

    def __post_init__(self) -> None:
        unknown = [c for c in self.coverages if c not in COVERAGE_PATTERNS]
        if unknown or not self.coverages:
            raise ValueError(f"coverage patterns must be a non-empty subset of {COVERAGE_PATTERNS}")
        if tuple(p.name for p in self.parameters) != CONTINUOUS_FIELDS:
            raise ValueError(f"continuous parameters must be, in order, {CONTINUOUS_FIELDS}")

    @property
    def coverage_indices(self) -> np.ndarray:
        """Global indices (into COVERAGE_PATTERNS) of the allowed coverage patterns."""
        return np.array([COVERAGE_PATTERNS.index(c) for c in self.coverages], dtype=np.int64)

    def parameter(self, name: str) -> ContinuousParameter:
        return self.parameters[CONTINUOUS_FIELDS.index(name)]

    def polymer_unit_bounds(self) -> np.ndarray:
        """Per polymer, the unit-cube interval ``[low, high]`` of each continuous parameter
        that lies inside both the space's bounds and the polymer's achievable range,
        ``[n_polymers, 4, 2]``; low > high where they do not overlap."""
        bounds = np.zeros((len(self.polymers), len(CONTINUOUS_FIELDS), 2))
        bounds[:, :, 1] = 1.0
        for i, polymer in enumerate(self.polymers):
            for j, parameter in enumerate(self.parameters):
                achievable = getattr(polymer, parameter.name, None)
                if achievable is None:  # thickness: any the surgeon injects
                    continue
                low = max(parameter.low, achievable.low)
                high = min(parameter.high, achievable.high)
                bounds[i, j] = parameter.to_unit(np.array([low, high]))
        return bounds

    def designs_from_unit(
        self, polymer_index: np.ndarray, coverage_choice: np.ndarray, unit: np.ndarray
    ) -> DesignBatch:
        """Build a batch from choices and a ``[n, 4]`` array of unit-cube coordinates.

        ``coverage_choice`` indexes :attr:`coverages` (the allowed subset); the batch stores
        global coverage indices.
        """
        unit = np.asarray(unit, dtype=np.float64)
        continuous = {p.name: p.from_unit(unit[:, j]) for j, p in enumerate(self.parameters)}
        return DesignBatch(
            space=self,
            polymer_index=np.asarray(polymer_index, dtype=np.int64),
            coverage_index=self.coverage_indices[np.asarray(coverage_choice, dtype=np.int64)],
            **continuous,
        )


@dataclass(frozen=True, eq=False)
class DesignBatch:
    """``n`` designs as parallel arrays; ``polymer_index`` indexes ``space.polymers`` and
    ``coverage_index`` indexes :data:`COVERAGE_PATTERNS`."""

    space: DesignSpace
    polymer_index: np.ndarray
    coverage_index: np.ndarray
    stiffness_kpa: np.ndarray
    t50_days: np.ndarray
    conductivity_s_per_m: np.ndarray
    thickness_mm: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.polymer_index)
        for name in ("coverage_index", *CONTINUOUS_FIELDS):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"design field {name} has {len(getattr(self, name))} rows, not {n}"
                )
        if n and (
            self.polymer_index.min() < 0 or self.polymer_index.max() >= len(self.space.polymers)
        ):
            raise ValueError("polymer_index out of range of the design space's polymer library")
        if n and (
            self.coverage_index.min() < 0 or self.coverage_index.max() >= len(COVERAGE_PATTERNS)
        ):
            raise ValueError("coverage_index out of range of COVERAGE_PATTERNS")

    def __len__(self) -> int:
        return len(self.polymer_index)

    def columns(self) -> dict[str, np.ndarray]:
        """The batch as named arrays (for storage and for feature building)."""
        return {
            "polymer_index": self.polymer_index,
            "coverage_index": self.coverage_index,
            **{name: getattr(self, name) for name in CONTINUOUS_FIELDS},
        }

    @classmethod
    def from_columns(cls, space: DesignSpace, columns: Mapping[str, np.ndarray]) -> DesignBatch:
        return cls(
            space=space,
            polymer_index=np.asarray(columns["polymer_index"], dtype=np.int64),
            coverage_index=np.asarray(columns["coverage_index"], dtype=np.int64),
            **{name: np.asarray(columns[name], dtype=np.float64) for name in CONTINUOUS_FIELDS},
        )

    def take(self, rows: np.ndarray | slice) -> DesignBatch:
        """The designs at ``rows`` (an index array, boolean mask or slice)."""
        return DesignBatch.from_columns(self.space, {k: v[rows] for k, v in self.columns().items()})

    @staticmethod
    def concat(batches: Sequence[DesignBatch]) -> DesignBatch:
        if not batches:
            raise ValueError("concat needs at least one batch")
        space = batches[0].space
        if any(b.space is not space and b.space != space for b in batches):
            raise ValueError("cannot concatenate design batches from different design spaces")
        names = batches[0].columns().keys()
        return DesignBatch.from_columns(
            space, {k: np.concatenate([b.columns()[k] for b in batches]) for k in names}
        )

    def unit_coordinates(self) -> np.ndarray:
        """Continuous fields mapped to [0, 1] on each parameter's scale, ``[n, 4]``."""
        return np.stack(
            [p.to_unit(getattr(self, p.name)) for p in self.space.parameters], axis=1
        ).reshape(len(self), len(CONTINUOUS_FIELDS))

    def out_of_bounds(self) -> dict[str, np.ndarray]:
        """Per continuous field, a mask of designs outside the design space's bounds."""
        return {
            p.name: _outside(getattr(self, p.name), p.low, p.high) for p in self.space.parameters
        }

    def outside_polymer_range(self) -> dict[str, np.ndarray]:
        """Per continuous property, a mask of designs outside their own polymer's achievable
        range: such a design cannot be made, and simulators flag it instead of clipping it."""
        polymers = self.space.polymers
        masks = {}
        for name in ("stiffness_kpa", "t50_days", "conductivity_s_per_m"):
            low = np.array([getattr(p, name).low for p in polymers])[self.polymer_index]
            high = np.array([getattr(p, name).high for p in polymers])[self.polymer_index]
            masks[name] = _outside(getattr(self, name), low, high)
        return masks

    def describe(self, row: int) -> str:
        """A one-line description of one design, for messages and reports."""
        polymer = self.space.polymers[int(self.polymer_index[row])].name
        coverage = COVERAGE_PATTERNS[int(self.coverage_index[row])]
        return (
            f"{polymer}, {coverage}, E={self.stiffness_kpa[row]:.3g} kPa, "
            f"t50={self.t50_days[row]:.3g} d, sigma={self.conductivity_s_per_m[row]:.3g} S/m, "
            f"thickness={self.thickness_mm[row]:.3g} mm"
        )


# Bounds mapped through a log scale and back come out a few ulps off.
_RELATIVE_TOLERANCE = 1e-9


def _outside(values: np.ndarray, low: np.ndarray | float, high: np.ndarray | float) -> np.ndarray:
    """Outside ``[low, high]``; NaN is outside every range."""
    inside = (values >= low * (1 - _RELATIVE_TOLERANCE)) & (
        values <= high * (1 + _RELATIVE_TOLERANCE)
    )
    return ~inside
