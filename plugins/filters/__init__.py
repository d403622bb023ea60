"""Stage 3's built-in filters, the links of each patient's hierarchical filter chain.

``threshold`` keeps what reaches the therapeutic threshold, ``top-percent`` the best share,
``diversity`` a spread-out set of good designs, ``simulate`` the best by simulated outcomes and
``pareto`` the non-dominated designs (seeds/000, Stage 3). This module holds the settings
models and the registration; each filter lives in its own module, and the one that needs pymoo
imports it when it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal, Self

from pydantic import Field, model_validator

from hydraopt import hookimpl
from hydraopt.plugin_types import FilterPlugin, PluginSettings
from hydraopt_plugins.filters.diversity import DiversityFilter
from hydraopt_plugins.filters.pareto import ParetoFilter
from hydraopt_plugins.filters.ranking import TopPercentFilter
from hydraopt_plugins.filters.simulate import SimulateFilter
from hydraopt_plugins.filters.threshold import ThresholdFilter

# The seeds' therapeutic threshold on the surrogate's predictions.
SEEDS_THRESHOLD_MIN = {"predicted_delta_ef_pct": 3.0, "predicted_bz_stress_reduction_pct": 10.0}
# Maximise delta-EF and stress reduction; minimise arrhythmia risk, that is maximise the
# re-entry vulnerability index (a lower index means a more vulnerable heart).
SEEDS_PARETO_OBJECTIVES: dict[str, Literal["max", "min"]] = {
    "simulated_delta_ef_pct": "max",
    "simulated_bz_stress_reduction_pct": "max",
    "simulated_reentry_vulnerability_index_ms": "max",
}


class ThresholdSettings(PluginSettings):
    min: dict[str, float] = Field(
        default_factory=lambda: dict(SEEDS_THRESHOLD_MIN),
        description="Lowest value kept, by column (column >= value); the seeds' delta-EF >= 3 "
        "%-points and border-zone stress reduction >= 10% by default.",
    )
    max: dict[str, float] = Field(
        default_factory=dict, description="Highest value kept, by column (column <= value)."
    )

    @model_validator(mode="after")
    def _bounds_are_possible(self) -> Self:
        if not self.min and not self.max:
            raise ValueError("give at least one bound in min or max")
        empty = [
            name for name, low in self.min.items() if name in self.max and low > self.max[name]
        ]
        if empty:
            raise ValueError(f"min is above max for {', '.join(empty)}: nothing could be kept")
        return self


class TopPercentSettings(PluginSettings):
    percent: float = Field(
        10.0, gt=0, le=100, description="Share of the entering candidates kept, in percent."
    )
    by: str = Field("reward", min_length=1, description="Column ranked, higher is better.")


class DiversitySettings(PluginSettings):
    keep: int = Field(1000, ge=1, description="Candidates kept.")
    by: str = Field(
        "reward", min_length=1, description="Quality column, higher is better; seeds the pick."
    )
    quality_weight: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Weight of quality against spread in each pick: 0 is pure farthest-point "
        "sampling, 1 keeps the best by quality.",
    )


class SimulateSettings(PluginSettings):
    keep: int = Field(ge=1, description="Candidates kept, the best by the simulated score.")
    simulators: list[str] | None = Field(
        None,
        min_length=1,
        description="Simulators run, by their name in [simulators]; omitted: every "
        "configured simulator.",
    )
    fidelity: str | None = Field(
        None,
        min_length=1,
        description="Fidelity the simulators run at (replaces their settings' fidelity); "
        "omitted: as configured.",
    )
    score: dict[str, float] = Field(
        default_factory=lambda: {"simulated_delta_ef_pct": 1.0},
        description="Weighted sum of columns ranked, higher is better.",
    )

    @model_validator(mode="after")
    def _score_and_simulators(self) -> Self:
        if not any(weight != 0 for weight in self.score.values()):
            raise ValueError("score needs at least one column with a non-zero weight")
        if self.simulators is not None and len(set(self.simulators)) != len(self.simulators):
            raise ValueError(f"simulators {self.simulators} names one simulator twice")
        return self


class ParetoSettings(PluginSettings):
    objectives: dict[str, Literal["max", "min"]] = Field(
        default_factory=lambda: dict(SEEDS_PARETO_OBJECTIVES),
        min_length=1,
        description='Columns to optimise, each "max" or "min"; by default the seeds\' '
        "maximal delta-EF and stress reduction and minimal arrhythmia risk (maximal re-entry "
        "vulnerability index).",
    )
    keep: int = Field(1, ge=1, description="Candidates kept.")
    weights: dict[str, float] | None = Field(
        None,
        description="Preference among the first front, one non-negative weight per objective "
        "(the point whose pseudo-weights are closest comes first); omitted: equal weights.",
    )

    @model_validator(mode="after")
    def _weights_match_objectives(self) -> Self:
        if self.weights is None:
            return self
        unknown = sorted(set(self.weights) - set(self.objectives))
        if unknown:
            raise ValueError(
                f"weights name {', '.join(unknown)}, which are not objectives "
                f"({', '.join(self.objectives)})"
            )
        missing = [name for name in self.objectives if name not in self.weights]
        if missing:
            raise ValueError(f"weights lack objectives {', '.join(missing)}")
        if any(weight < 0 for weight in self.weights.values()):
            raise ValueError("weights must be non-negative")
        if sum(self.weights.values()) <= 0:
            raise ValueError("weights need at least one positive weight")
        return self


@hookimpl
def hydraopt_filters() -> Iterator[FilterPlugin]:
    yield FilterPlugin(
        name="threshold",
        factory=ThresholdFilter,
        settings=ThresholdSettings,
        description="keep candidates whose columns lie within bounds (the therapeutic threshold)",
    )
    yield FilterPlugin(
        name="top-percent",
        factory=TopPercentFilter,
        settings=TopPercentSettings,
        description="keep the best share of the candidates by one column",
    )
    yield FilterPlugin(
        name="diversity",
        factory=DiversityFilter,
        settings=DiversitySettings,
        description="keep good candidates spread over the design space (farthest-point sampling)",
    )
    yield FilterPlugin(
        name="simulate",
        factory=SimulateFilter,
        settings=SimulateSettings,
        description="simulate the candidates and keep the best by the simulated outcomes",
    )
    yield FilterPlugin(
        name="pareto",
        factory=ParetoFilter,
        settings=ParetoSettings,
        description="keep the non-dominated candidates first, by preference, then by rank",
    )
