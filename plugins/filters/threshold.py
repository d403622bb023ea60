"""``threshold``: keep the candidates whose columns all lie within bounds."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hydraopt.plugin_types import Candidates, FilterContext, Selection
from hydraopt_plugins.filters.columns import scalar_column

if TYPE_CHECKING:
    from hydraopt_plugins.filters import ThresholdSettings


class ThresholdFilter:
    """Keeps a candidate when every column in ``min`` is >= its bound and every column in
    ``max`` is <= its bound; NaN fails every bound. Keeps the incoming order. Each candidate is
    judged on its own columns (``rowwise``), so the engine may apply it chunk by chunk."""

    rowwise = True

    def __init__(self, settings: ThresholdSettings) -> None:
        self.settings = settings
        self.reads: tuple[str, ...] = tuple(dict.fromkeys([*settings.min, *settings.max]))

    def select(self, candidates: Candidates, context: FilterContext) -> Selection:
        inside = np.ones(len(candidates), dtype=bool)
        # Comparisons with NaN are False, so a NaN column fails its bound.
        for name, low in self.settings.min.items():
            inside &= scalar_column(candidates, name, "threshold") >= low
        for name, high in self.settings.max.items():
            inside &= scalar_column(candidates, name, "threshold") <= high
        return Selection(np.flatnonzero(inside).astype(np.int64))
