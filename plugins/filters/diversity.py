"""``diversity``: keep good candidates spread over the design space."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hydraopt.domain import DesignBatch
from hydraopt.plugin_types import Candidates, FilterContext, Selection
from hydraopt_plugins.filters.columns import scalar_column

if TYPE_CHECKING:
    from hydraopt_plugins.filters import DiversitySettings

# Single precision halves the memory traffic of each distance sweep, which dominates the
# time; ranking distances between 0 and 2.5 needs no more.
DISTANCE_DTYPE = np.float32


class DiversityFilter:
    """Keeps ``keep`` candidates by greedy farthest-point sampling weighted by quality.

    Distances are taken in the normalised design space: the four continuous parameters as unit
    coordinates (each on its own linear or log scale), plus the polymer and the coverage
    pattern each as a one-hot vector scaled by 1/sqrt(2), so that two designs with different
    polymers (or patterns) are 1 apart in that part.

    The first pick is the best candidate by ``by``. Each later pick maximises
    ``(1 - quality_weight) * d_min / d_ref + quality_weight * q``, where ``d_min`` is the
    candidate's distance to the nearest candidate already picked, ``d_ref`` the largest
    ``d_min`` at that step (so the spread term lies in [0, 1]) and ``q`` the candidate's rank by
    ``by`` scaled to [0, 1] (best 1, ties share their mean rank). Ties go to the lower index,
    so the result is deterministic. A candidate whose ``by`` is NaN is never kept; when no more
    than ``keep`` remain, all are kept. Picks are returned in pick order.

    Memory is O(n): one running ``d_min`` per candidate, never an n x n matrix; time is
    O(n * keep).
    """

    def __init__(self, settings: DiversitySettings) -> None:
        self.settings = settings
        self.reads: tuple[str, ...] = (settings.by,)

    def select(self, candidates: Candidates, context: FilterContext) -> Selection:
        values = scalar_column(candidates, self.settings.by, "diversity")
        rated = np.flatnonzero(~np.isnan(values))
        if len(rated) == 0:
            return Selection(np.zeros(0, dtype=np.int64))
        points = DesignPoints.of(candidates.designs.take(rated))
        picks = farthest_point_picks(
            points, values[rated], self.settings.keep, self.settings.quality_weight
        )
        return Selection(rated[picks])


@dataclass(frozen=True)
class DesignPoints:
    """Designs as points of the normalised design space, stored for fast distance sweeps."""

    unit: np.ndarray  # [4, n]: one contiguous row per continuous parameter
    polymer_index: np.ndarray
    coverage_index: np.ndarray

    @classmethod
    def of(cls, designs: DesignBatch) -> DesignPoints:
        return cls(
            np.ascontiguousarray(designs.unit_coordinates().T, dtype=DISTANCE_DTYPE),
            designs.polymer_index.astype(np.int32),
            designs.coverage_index.astype(np.int32),
        )

    def __len__(self) -> int:
        return len(self.polymer_index)

    def squared_distances_to(self, row: int, out: np.ndarray, scratch: np.ndarray) -> None:
        """Squared distance of every point to point ``row``, written into ``out``.

        A scaled one-hot pair differs by 1/sqrt(2) in two places, squared distance 1, so the
        discrete parts add 1 per differing choice without building the one-hot vectors.
        """
        np.not_equal(self.polymer_index, self.polymer_index[row], out=out, casting="unsafe")
        out += self.coverage_index != self.coverage_index[row]
        for coordinate in self.unit:
            np.subtract(coordinate, coordinate[row], out=scratch)
            scratch *= scratch
            out += scratch


def quality_rank(values: np.ndarray) -> np.ndarray:
    """``values`` replaced by their rank scaled to [0, 1]: best 1, worst 0, ties share the mean
    of their ranks; a single value ranks 1."""
    if len(values) == 1:
        return np.ones(1)
    _, group, group_size = np.unique(values, return_inverse=True, return_counts=True)
    last_rank = np.cumsum(group_size) - 1
    mean_rank = last_rank - (group_size - 1) / 2.0
    return mean_rank[group] / (len(values) - 1)


def farthest_point_picks(
    points: DesignPoints, quality: np.ndarray, count: int, quality_weight: float
) -> np.ndarray:
    """Indices of up to ``count`` points in pick order, by the rule of :class:`DiversityFilter`."""
    count = min(count, len(points))
    nearest_squared = np.full(len(points), np.inf, dtype=DISTANCE_DTYPE)
    distance_squared = np.empty(len(points), dtype=DISTANCE_DTYPE)
    scratch = np.empty(len(points), dtype=DISTANCE_DTYPE)
    score = np.empty(len(points), dtype=DISTANCE_DTYPE)
    # The quality term of every pick score, set to -inf once a point is picked so that it is
    # never picked again.
    quality_term = (quality_weight * quality_rank(quality)).astype(DISTANCE_DTYPE)
    picks = np.empty(count, dtype=np.int64)
    pick = int(np.argmax(quality))
    for step in range(count):
        picks[step] = pick
        quality_term[pick] = -np.inf
        if step == count - 1:
            break
        points.squared_distances_to(pick, distance_squared, scratch)
        np.minimum(nearest_squared, distance_squared, out=nearest_squared)
        np.sqrt(nearest_squared, out=score)
        # Picked points are at distance 0, so the largest over all is the largest over the rest.
        reference = score.max()
        score *= DISTANCE_DTYPE((1.0 - quality_weight) / reference if reference > 0 else 0.0)
        score += quality_term
        pick = int(np.argmax(score))
    return picks
