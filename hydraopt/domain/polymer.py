"""Polymers and the polymer library: the discrete half of the design space.

A polymer carries the properties that the physics needs (achievable ranges, swelling,
degradation behaviour), so a simulator can give the polymer consequences from documented
properties and never from its name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from hydraopt.errors import DataError

# Order matters: the index is the category id that the surrogate's category embedding sees.
POLYMER_CATEGORIES: tuple[str, ...] = (
    "GelMA",
    "PEGDA",
    "Alginate",
    "Chitosan",
    "HA",
    "dECM",
    "Protein",
    "Conductive",
    "Unknown",
)
DegradationMode = Literal["bulk", "surface"]
DEGRADATION_MODES: tuple[str, ...] = ("bulk", "surface")


@dataclass(frozen=True)
class PropertyRange:
    """A closed interval ``[low, high]`` in the unit named by the field that holds it."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"range low {self.low:g} exceeds high {self.high:g}")

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Polymer:
    """A hydrogel the design can choose, with its literature-derived properties.

    ``psmiles`` is the polymer SMILES of the repeat unit with two ``[*]`` end points, the input
    of polyBERT. ``swelling_ratio`` is the equilibrium volume over the injected volume;
    ``degradation_mode`` says whether the gel degrades through its bulk (stiffness falls
    everywhere) or erodes from its surface (volume falls, the remaining gel keeps its stiffness).
    """

    name: str
    display_name: str
    category: str
    psmiles: str
    stiffness_kpa: PropertyRange
    t50_days: PropertyRange
    conductivity_s_per_m: PropertyRange
    swelling_ratio: float
    degradation_mode: DegradationMode
    sources: tuple[str, ...]


@dataclass(frozen=True)
class PolymerLibrary:
    """An ordered set of polymers with unique names; a design refers to one by its index."""

    polymers: tuple[Polymer, ...]
    source: str = "bundled"

    def __post_init__(self) -> None:
        if not self.polymers:
            raise DataError(f"polymer library {self.source}: it holds no polymers")
        names = [p.name for p in self.polymers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise DataError(f"polymer library {self.source}: duplicate names {duplicates}")

    def __len__(self) -> int:
        return len(self.polymers)

    def __iter__(self) -> Iterator[Polymer]:
        return iter(self.polymers)

    def __getitem__(self, index: int) -> Polymer:
        return self.polymers[index]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.polymers)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise DataError(
                f"polymer {name!r} is not in the library {self.source} "
                f"(it has: {', '.join(self.names)})"
            ) from None

    def subset(self, names: list[str]) -> PolymerLibrary:
        """The polymers named, in the order given."""
        return PolymerLibrary(tuple(self.polymers[self.index(n)] for n in names), self.source)
