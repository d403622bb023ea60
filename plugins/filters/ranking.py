"""``top-percent``: keep the best share of the candidates by one column."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from hydraopt.plugin_types import Candidates, FilterContext, Selection
from hydraopt_plugins.filters.columns import best_first, scalar_column

if TYPE_CHECKING:
    from hydraopt_plugins.filters import TopPercentSettings


class TopPercentFilter:
    """Keeps the ``ceil(percent / 100 * n)`` candidates with the highest ``by``, best first,
    ties by lower index. A NaN score (or -inf) is never kept, so fewer may be kept. Because it
    keeps the ``kept_count`` best by ``score``, the engine can keep a running best set while
    candidates stream through."""

    def __init__(self, settings: TopPercentSettings) -> None:
        self.settings = settings
        self.reads: tuple[str, ...] = (settings.by,)

    def score(self, candidates: Candidates) -> np.ndarray:
        """The ``by`` column, higher is better, NaN as -inf."""
        values = scalar_column(candidates, self.settings.by, "top-percent")
        return np.where(np.isnan(values), -np.inf, values)

    def kept_count(self, n_entered: int) -> int:
        """How many of ``n_entered`` candidates are kept at most."""
        # round() first: 0.1 * 30 is 3.0000000000000004 in floating point, which is not 4.
        exact = round(self.settings.percent * n_entered / 100.0, 9)
        return min(n_entered, math.ceil(exact))

    def select(self, candidates: Candidates, context: FilterContext) -> Selection:
        score = self.score(candidates)
        count = min(self.kept_count(len(candidates)), int(np.count_nonzero(score > -np.inf)))
        if count == 0:
            return Selection(np.zeros(0, dtype=np.int64))
        # argpartition finds the count-th best score in O(n); the rows above it and the first
        # rows equal to it are the kept set, which then alone is sorted.
        cutoff = score[np.argpartition(-score, count - 1)[count - 1]]
        above = np.flatnonzero(score > cutoff)
        at_cutoff = np.flatnonzero(score == cutoff)[: count - len(above)]
        return Selection(best_first(score, np.concatenate([above, at_cutoff])))
