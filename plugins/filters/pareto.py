"""``pareto``: keep the non-dominated candidates first (the seeds' multi-objective choice)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hydraopt.plugin_types import Candidates, FilterContext, Selection
from hydraopt_plugins.filters.columns import scalar_column

if TYPE_CHECKING:
    from hydraopt_plugins.filters import ParetoSettings

# Reference point of the hypervolume in every normalised minimisation coordinate: just beyond
# the worst entering candidate, so the front's extreme points still add volume.
HYPERVOLUME_REFERENCE = 1.1


class ParetoFilter:
    """Ranks the candidates by non-dominated sorting of ``objectives`` and keeps ``keep``.

    Order: the first front, by preference (the point whose pseudo-weights, Deb and Deb 2014,
    are closest in L1 to ``weights`` first); then the later fronts, by rank and, within a
    front, by crowding distance, largest first (NSGA-II). Remaining ties go to the lower index.
    A candidate with a NaN (or infinite) objective is never kept.

    Adds ``pareto_rank`` (0 is the first front, -1 where an objective is NaN) and
    ``crowding_distance`` (within its front; inf at a front's extremes; NaN where unranked).
    Reports ``pareto_front_size`` and ``pareto_hypervolume``: the hypervolume of the first
    front in objective space normalised per objective to [0, 1] by the entering candidates'
    minimum and maximum ("max" objectives negated, so 0 is the best entering value), with the
    reference point 1.1 in every coordinate.
    """

    def __init__(self, settings: ParetoSettings) -> None:
        self.settings = settings
        self.reads: tuple[str, ...] = tuple(settings.objectives)
        # The objectives and their senses, in order: the engine records them for the report.
        self.objectives: dict[str, str] = dict(settings.objectives)
        weights = settings.weights or dict.fromkeys(settings.objectives, 1.0)
        preference = np.array([weights[name] for name in settings.objectives], dtype=np.float64)
        self.preference = preference / preference.sum()

    def select(self, candidates: Candidates, context: FilterContext) -> Selection:
        minimised = self._minimised_objectives(candidates)
        rated = np.flatnonzero(np.isfinite(minimised).all(axis=1))
        rank = np.full(len(candidates), -1, dtype=np.int64)
        crowding = np.full(len(candidates), np.nan)
        order = []
        fronts = non_dominated_fronts(minimised[rated]) if len(rated) else []
        for front_rank, front in enumerate(fronts):
            rows = rated[front]
            rank[rows] = front_rank
            crowding[rows] = crowding_distances(minimised[rows])
            if front_rank == 0:
                order.append(rows[preference_order(minimised[rows], self.preference)])
            else:
                order.append(rows[np.lexsort((rows, -crowding[rows]))])
        first_front = rated[fronts[0]] if fronts else np.zeros(0, dtype=np.int64)
        keep = np.concatenate([np.zeros(0, dtype=np.int64), *order])[: self.settings.keep]
        metrics = {
            "pareto_hypervolume": normalised_hypervolume(minimised[rated], minimised[first_front]),
            "pareto_front_size": float(len(first_front)),
        }
        columns = {"pareto_rank": rank, "crowding_distance": crowding}
        return Selection(keep.astype(np.int64), columns, metrics)

    def _minimised_objectives(self, candidates: Candidates) -> np.ndarray:
        """``[n, objectives]``, every objective turned into one to minimise."""
        columns = [
            scalar_column(candidates, name, "pareto") * (-1.0 if sense == "max" else 1.0)
            for name, sense in self.settings.objectives.items()
        ]
        return np.stack(columns, axis=1).reshape(len(candidates), len(columns))


def non_dominated_fronts(minimised: np.ndarray) -> list[np.ndarray]:
    """Row indices of each front, best front first, each ascending."""
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    return [np.sort(front) for front in NonDominatedSorting().do(minimised)]


def crowding_distances(front: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of each point of one front (inf for its extreme points)."""
    from pymoo.operators.survival.rank_and_crowding.metrics import get_crowding_function

    return np.asarray(get_crowding_function("cd").do(front), dtype=np.float64)


def preference_order(front: np.ndarray, preference: np.ndarray) -> np.ndarray:
    """Positions in ``front`` ordered by how close each point's pseudo-weights are to
    ``preference`` (L1 distance), ties by position."""
    positions = np.arange(len(front))
    # An objective equal over the whole front expresses no trade-off (and would divide by a
    # zero range), so pseudo-weights are taken over the others.
    varying = front.max(axis=0) > front.min(axis=0)
    if len(front) == 1 or not varying.any():
        return positions
    from pymoo.mcdm.pseudo_weights import PseudoWeights

    wanted = preference[varying]
    if wanted.sum() > 0:
        wanted = wanted / wanted.sum()
    _, pseudo_weights = PseudoWeights(wanted).do(front[:, varying], return_pseudo_weights=True)
    gap = np.abs(pseudo_weights - wanted).sum(axis=1)
    return positions[np.lexsort((positions, gap))]


def normalised_hypervolume(entered: np.ndarray, front: np.ndarray) -> float:
    """Hypervolume of ``front`` with each objective scaled to [0, 1] by ``entered``'s range
    (a constant objective to 0), reference point 1.1 in every coordinate."""
    if len(front) == 0:
        return 0.0
    from pymoo.indicators.hv import HV

    low = entered.min(axis=0)
    span = entered.max(axis=0) - low
    span[span == 0] = 1.0
    reference = np.full(entered.shape[1], HYPERVOLUME_REFERENCE)
    return float(HV(ref_point=reference).do((front - low) / span))
