"""Reading candidate columns the way every filter needs them."""

from __future__ import annotations

import numpy as np

from hydraopt.plugin_types import Candidates


def scalar_column(candidates: Candidates, name: str, filter_name: str) -> np.ndarray:
    """Column ``name`` as float64 ``[n]``; a missing or multi-dimensional column is an error
    naming the filter, since the filter ranks or bounds one number per candidate."""
    values = np.asarray(candidates[name])
    if values.ndim != 1:
        raise ValueError(
            f"filter {filter_name!r} needs one number per candidate in column {name!r}, "
            f"which has shape {values.shape}"
        )
    return values.astype(np.float64, copy=False)


def best_first(score: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rows`` ordered by ``score[rows]`` descending, ties by lower row first."""
    rows = np.asarray(rows, dtype=np.int64)
    return rows[np.lexsort((rows, -score[rows]))]
