"""Simulated or predicted outcomes: named arrays with declared units.

A simulator declares its outputs (:class:`OutputSpec`) and returns :class:`Outcomes` whose
arrays have one row per design; a trajectory output (say ΔEF at several follow-up times)
has trailing dimensions declared in its spec.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class OutputSpec:
    """One declared output: its name (units in the name), unit, meaning, and per-design shape."""

    name: str
    unit: str
    description: str
    shape: tuple[int, ...] = ()


@dataclass(frozen=True, eq=False)
class Outcomes:
    """Outcomes for ``n`` designs.

    ``values[name]`` has shape ``(n, *spec.shape)``. ``failed`` marks designs whose evaluation
    failed (a crashed simulation, an infeasible design); their values are NaN and
    ``failure_reason`` says why (empty string where nothing failed).
    """

    specs: tuple[OutputSpec, ...]
    values: Mapping[str, np.ndarray]
    failed: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    failure_reason: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))

    def __post_init__(self) -> None:
        names = [s.name for s in self.specs]
        if sorted(names) != sorted(self.values):
            raise ValueError(f"outcome values {sorted(self.values)} do not match specs {names}")
        n = len(self)
        for spec in self.specs:
            expected = (n, *spec.shape)
            if np.shape(self.values[spec.name]) != expected:
                raise ValueError(
                    f"output {spec.name} has shape {np.shape(self.values[spec.name])}, "
                    f"expected {expected}"
                )
        if len(self.failed) == 0 and n:
            object.__setattr__(self, "failed", np.zeros(n, dtype=bool))
        if len(self.failure_reason) == 0 and n:
            object.__setattr__(self, "failure_reason", np.full(n, "", dtype=object))
        if len(self.failed) != n or len(self.failure_reason) != n:
            raise ValueError("failed and failure_reason need one entry per design")

    def __len__(self) -> int:
        if not self.specs:
            return len(self.failed)
        return len(self.values[self.specs[0].name])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.values[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.specs)

    def units(self) -> dict[str, str]:
        return {s.name: s.unit for s in self.specs}

    @staticmethod
    def merge(parts: Sequence[Outcomes]) -> Outcomes:
        """Side-by-side merge of outcomes for the same designs (say mechanics + EP)."""
        specs = tuple(s for part in parts for s in part.specs)
        names = [s.name for s in specs]
        clash = sorted({n for n in names if names.count(n) > 1})
        if clash:
            raise ValueError(f"outputs {clash} are produced by more than one simulator")
        failed = np.logical_or.reduce([p.failed for p in parts])
        reason = np.array(
            [
                "; ".join(r for r in reasons if r)
                for reasons in zip(*(p.failure_reason for p in parts), strict=True)
            ],
            dtype=object,
        )
        values = {k: v for part in parts for k, v in part.values.items()}
        return Outcomes(specs, values, failed, reason)


@dataclass(frozen=True, eq=False)
class Predictions:
    """A surrogate's answer for ``n`` designs: the predicted outcomes (``mean``) and, per
    output, the standard deviation of the prediction, the same shape as the output (NaN where
    the design is marked failed)."""

    mean: Outcomes
    std: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        if sorted(self.std) != sorted(self.mean.names):
            raise ValueError(
                f"std is given for {sorted(self.std)}, the predictions are {list(self.mean.names)}"
            )
        for name in self.mean.names:
            if np.shape(self.std[name]) != np.shape(self.mean[name]):
                raise ValueError(
                    f"std of {name} has shape {np.shape(self.std[name])}, "
                    f"the prediction {np.shape(self.mean[name])}"
                )

    def __len__(self) -> int:
        return len(self.mean)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.mean[name]
