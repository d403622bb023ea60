"""Conformance of filters: what the design engine relies on at each link of the chain."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hydraopt.domain.mesh import PatientMesh
from hydraopt.plugin_types import (
    Candidates,
    Filter,
    FilterContext,
    FilterPlugin,
    Selection,
    Simulator,
)
from hydraopt.testing.examples import example_candidates, example_mesh
from hydraopt.testing.registration import check_registration, confined


def example_context(
    workdir: Any,
    mesh: PatientMesh | None = None,
    simulators: Mapping[str, Simulator] | None = None,
    seed: int = 0,
) -> FilterContext:
    """A filter's context: the patient's ``mesh`` (default :func:`example_mesh`), the
    ``simulators`` by name (each returned at any fidelity asked), a seeded random stream and
    ``workdir``."""
    simulators = dict(simulators or {})

    def simulator(name: str, fidelity: str | None = None) -> Simulator:
        if name not in simulators:
            raise KeyError(f"no simulator {name!r} in this check's context ({sorted(simulators)})")
        return simulators[name]

    return FilterContext(
        mesh or example_mesh(),
        simulator,
        tuple(simulators),
        np.random.default_rng(seed),
        workdir,
    )


def check_filter(link: Filter, candidates: Candidates, make_context: Any) -> Selection:
    """A filter reads only columns it declares and keeps each entering candidate at most
    once, by index; the columns it adds have a row per entering candidate, its metrics are
    finite numbers; it selects the same with the same random stream; a ``rowwise`` filter
    selects the same chunk by chunk; one that offers ``score`` and ``kept_count`` keeps the
    ``kept_count`` best by ``score``. ``make_context(name)`` gives a fresh context (same
    seed) with its own empty folder."""
    assert isinstance(link, Filter), "reads or select(candidates, context) missing"
    reads = tuple(link.reads)
    assert all(isinstance(name, str) for name in reads), "reads must be column names"
    missing = [name for name in reads if name not in candidates.columns]
    assert not missing, f"the check's candidates lack the columns {missing} the filter reads"
    # A copy each time: a filter that changed its input would show in the second call.
    selection = link.select(candidates.take(np.arange(len(candidates))), make_context("first"))
    n = len(candidates)
    _checked_selection(selection, n)
    again = link.select(candidates.take(np.arange(len(candidates))), make_context("second"))
    assert np.array_equal(np.asarray(again.keep), np.asarray(selection.keep)), (
        "select keeps other candidates given the same candidates and random stream"
    )
    if getattr(link, "rowwise", False):
        half = n // 2
        first = link.select(candidates.take(np.arange(half)), make_context("chunk-1"))
        second = link.select(candidates.take(np.arange(half, n)), make_context("chunk-2"))
        chunked = np.concatenate([np.asarray(first.keep), half + np.asarray(second.keep)])
        assert np.array_equal(chunked, np.asarray(selection.keep)), (
            "a rowwise filter keeps other candidates when they come in chunks"
        )
    score, kept_count = getattr(link, "score", None), getattr(link, "kept_count", None)
    if callable(score) and callable(kept_count):
        values = np.asarray(score(candidates), dtype=float)
        assert values.shape == (n,), f"score returned shape {values.shape} for {n} candidates"
        count = int(kept_count(n))
        assert 0 <= count <= n, f"kept_count({n}) = {count}"
        best = np.argsort(-values, kind="stable")[:count]
        assert set(np.asarray(selection.keep).tolist()) == set(best.tolist()), (
            "select keeps other candidates than the kept_count best by score"
        )
    return selection


def _checked_selection(selection: Any, n: int) -> None:
    assert isinstance(selection, Selection), f"select returned {type(selection).__name__}"
    keep = np.asarray(selection.keep)
    assert keep.ndim == 1 and (keep.size == 0 or keep.dtype.kind in "iu"), (
        "keep must be a 1-D array of candidate indices"
    )
    assert np.all((keep >= 0) & (keep < n)), "keep holds an index of no entering candidate"
    assert len(np.unique(keep)) == len(keep), "keep names a candidate twice"
    for name, values in selection.columns.items():
        assert len(values) == n, f"column {name} has {len(values)} rows for {n} candidates"
    for name, value in selection.metrics.items():
        assert np.isfinite(float(value)), f"metric {name} is {value!r}"


def check_filter_plugin(
    registration: FilterPlugin,
    settings: Mapping[str, Any] | None = None,
    candidates: Candidates | None = None,
    simulators: Mapping[str, Simulator] | None = None,
    mesh: PatientMesh | None = None,
) -> Selection:
    """:func:`check_registration`, then :func:`check_filter` on ``candidates`` (default:
    :func:`example_candidates` holding every column the filter reads) in a context holding
    ``mesh`` and ``simulators``, writing nothing outside the context's folder."""
    assert isinstance(registration, FilterPlugin), (
        f"expected a FilterPlugin, got {type(registration).__name__}"
    )
    link = check_registration(registration, settings)
    if candidates is None:
        candidates = example_candidates(link.reads)
    with confined(f"filter {registration.name!r}") as workdir:

        def make_context(name: str) -> FilterContext:
            folder = workdir / name
            folder.mkdir()
            return example_context(folder, mesh, simulators)

        return check_filter(link, candidates, make_context)
