"""``simulate``: run simulators on the candidates and keep the best by the simulated outcomes
(the seeds' FEBio pre-screen and full simulation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from hydraopt.domain import Outcomes
from hydraopt.plugin_types import Candidates, FilterContext, Selection, Simulator
from hydraopt_plugins.filters.columns import best_first, scalar_column

if TYPE_CHECKING:
    from hydraopt_plugins.filters import SimulateSettings

SIMULATED_PREFIX = "simulated_"
SIMULATED_OK = "simulated_ok"
FAILURE_REASON = "simulation_failure_reason"  # the first failing simulator's, "" when none


class SimulateFilter:
    """Simulates every entering candidate with each of its simulators (at ``fidelity`` when
    given) and keeps the ``keep`` best by ``score``, a weighted sum of columns (higher first,
    ties by lower index).

    Adds, for every entering candidate, ``simulated_<output>`` for each simulator output (NaN
    where that simulation failed) and ``simulated_ok`` (no simulator failed). A candidate that
    failed or whose score is NaN is never kept. Two simulators producing one output is an
    error, since neither result could be told apart.
    """

    def __init__(self, settings: SimulateSettings) -> None:
        self.settings = settings
        # simulated_* score columns come from this link or an earlier simulating one, which
        # the chain cannot know before the run; only the others are declared as read.
        self.reads: tuple[str, ...] = tuple(
            name for name in settings.score if not name.startswith(SIMULATED_PREFIX)
        )
        # Every column the score weighs: checked once the link's own columns are known.
        self.scores: tuple[str, ...] = tuple(settings.score)

    def simulator_names(self, configured: Sequence[str]) -> tuple[str, ...]:
        """The simulators this link runs, checked against those the pipeline configures."""
        if self.settings.simulators is None:
            return tuple(configured)
        unknown = [name for name in self.settings.simulators if name not in configured]
        if unknown:
            raise ValueError(
                f"filter 'simulate' names simulators {unknown} that the pipeline does not "
                f"configure (configured: {list(configured)})"
            )
        return tuple(self.settings.simulators)

    def produces(self, simulator_outputs: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
        """The columns added, given each configured simulator's output names."""
        names = self.simulator_names(tuple(simulator_outputs))
        owners = output_owners({name: simulator_outputs[name] for name in names})
        return (*(SIMULATED_PREFIX + output for output in owners), SIMULATED_OK, FAILURE_REASON)

    def select(self, candidates: Candidates, context: FilterContext) -> Selection:
        n = len(candidates)
        simulators = {
            name: context.simulator(name, self.settings.fidelity)
            for name in self.simulator_names(context.simulator_names)
        }
        # Refuse clashing outputs before paying for any simulation, and again on what the
        # simulators actually returned.
        output_owners(
            {name: [spec.name for spec in sim.outputs] for name, sim in simulators.items()}
        )
        results = {
            name: self._simulate(name, simulator, candidates, context)
            for name, simulator in simulators.items()
        }
        output_owners({name: outcomes.names for name, outcomes in results.items()})
        columns: dict[str, np.ndarray] = {}
        ok = np.ones(n, dtype=bool)
        reason = np.full(n, "", dtype=object)
        for name, outcomes in results.items():
            failed = np.asarray(outcomes.failed, dtype=bool)
            ok &= ~failed
            first = failed & (reason == "")
            reason[first] = [f"{name}: {r}" for r in outcomes.failure_reason[first]]
            for spec in outcomes.specs:
                values = np.array(outcomes[spec.name], dtype=np.float64)
                values[failed] = np.nan
                columns[SIMULATED_PREFIX + spec.name] = values
        columns[SIMULATED_OK] = ok
        columns[FAILURE_REASON] = reason
        score = self._score(candidates.with_columns(columns))
        keepable = np.flatnonzero(ok & ~np.isnan(score))
        keep = best_first(score, keepable)[: self.settings.keep]
        metrics = {"simulated": float(n), "simulation_failures": float(n - ok.sum())}
        return Selection(keep, columns, metrics)

    def _simulate(
        self, name: str, simulator: Simulator, candidates: Candidates, context: FilterContext
    ) -> Outcomes:
        if len(candidates) == 0:
            # Nothing to run: empty columns of the declared shapes.
            specs = tuple(simulator.outputs)
            values = {spec.name: np.zeros((0, *spec.shape)) for spec in specs}
            return Outcomes(specs, values)
        workdir = context.workdir / name
        workdir.mkdir(parents=True, exist_ok=True)
        outcomes = simulator.simulate(candidates.patient, context.mesh, candidates.designs, workdir)
        if len(outcomes) != len(candidates):
            raise ValueError(
                f"simulator {name!r} returned {len(outcomes)} outcomes for "
                f"{len(candidates)} designs"
            )
        return outcomes

    def _score(self, candidates: Candidates) -> np.ndarray:
        score = np.zeros(len(candidates))
        for name, weight in self.settings.score.items():
            if weight != 0:  # 0 * NaN would still poison the sum
                score += weight * scalar_column(candidates, name, "simulate")
        return score


def output_owners(outputs: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Each output name and the simulator producing it; an output produced by two simulators
    is a ValueError naming both."""
    owners: dict[str, str] = {}
    for simulator, names in outputs.items():
        for output in names:
            if output in owners:
                raise ValueError(
                    f"simulators {owners[output]!r} and {simulator!r} both produce output "
                    f"{output!r}; the 'simulate' filter cannot tell their results apart"
                )
            owners[output] = simulator
    return owners
