"""Stage 3's design engine for one patient: candidates stream through the surrogate and the
filter chain (seeds/000 section 8.1).

Candidates arrive in chunks and are never all held at once. The chain's leading links that
can work chunk by chunk form its *streaming prefix*: any number of row-wise links (a
threshold), then at most one ranking link (top percent), which keeps a running set of the best
it could ever keep: ``kept_count`` of every candidate the generator makes, an upper bound on
what enters it. After the stream, the prefix's survivors get the surrogate's full predictions
(MC dropout: ``refine``), and the remaining links (diversity, simulation, Pareto ranking) run
on them in memory. The first survivor of the last link is the chosen design.

The funnel records, per link, how many candidates entered and left it and how long it took.
Every candidate that entered a link with at most :data:`FINALIST_LIMIT` entrants is kept with
all its columns, so the report can show predictions against simulations and the Pareto front.
A link that keeps nothing stops the chain; the result says which, and keeps what it had.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hydraopt.domain import DesignBatch, Patient
from hydraopt.plugin_types import Candidates, FilterContext, Selection

# Entrants of a link at or below this count are kept, with every column, for the report.
FINALIST_LIMIT = 10_000

Scorer = Callable[[DesignBatch], dict[str, np.ndarray]]


@dataclass(frozen=True)
class Link:
    """One filter of the chain: its position in the funnel (1-based; 0 is the generator),
    plugin name, settings (for messages) and the built filter."""

    position: int
    name: str
    settings: Mapping[str, Any]
    filter: Any

    @property
    def streams_rows(self) -> bool:
        return bool(getattr(self.filter, "rowwise", False))

    @property
    def ranks(self) -> bool:
        return callable(getattr(self.filter, "score", None)) and callable(
            getattr(self.filter, "kept_count", None)
        )

    def describe(self) -> str:
        shown = ", ".join(f"{k} = {v!r}" for k, v in self.settings.items())
        return f"filter {self.position} ({self.name}{': ' + shown if shown else ''})"


@dataclass(frozen=True)
class FunnelRow:
    position: int
    filter: str
    entered: int
    kept: int
    seconds: float


@dataclass
class ScreenResult:
    """One patient's screen: the funnel, the finalists and the chosen design."""

    candidates: int
    funnel: list[FunnelRow]
    finalists: Candidates | None
    last_link: np.ndarray
    survivor: np.ndarray
    chosen: int | None
    metrics: dict[str, float] = field(default_factory=dict)
    emptied_by: Link | None = None
    why_emptied: str = ""

    def emptied_message(self) -> str | None:
        """Which link kept nothing, of how many, with its settings; None when one survived."""
        if self.emptied_by is None:
            return None
        entered = next(r.entered for r in self.funnel if r.position == self.emptied_by.position)
        message = f"{self.emptied_by.describe()} kept none of {entered} candidates"
        return message + (f"; {self.why_emptied}" if self.why_emptied else "")


def streaming_prefix(links: list[Link]) -> int:
    """How many leading links work chunk by chunk: row-wise links, then one ranking link."""
    count = 0
    for link in links:
        if link.streams_rows:
            count += 1
        elif link.ranks:
            return count + 1
        else:
            break
    return count


def screen_patient(
    patient: Patient,
    chunks: Iterable[DesignBatch],
    candidates_upper_bound: int,
    score: Scorer,
    links: list[Link],
    refine: Callable[[Candidates], Candidates],
    context_for: Callable[[Link], FilterContext],
    generated_label: str = "generated",
) -> ScreenResult:
    """Run ``patient``'s candidates through the chain.

    :param chunks: the candidates, chunk by chunk.
    :param candidates_upper_bound: how many ``chunks`` may hold in all (bounds a ranking
        link's running set).
    :param score: a chunk's columns (``reward``, ``predicted_*``) from the surrogate.
    :param refine: the prefix's survivors with the surrogate's full predictions.
    :param context_for: each later link's context (mesh, simulators, random stream, folder).
    """
    prefix = streaming_prefix(links)
    stream = _Stream(links[:prefix], candidates_upper_bound)
    started = time.perf_counter()
    for designs in chunks:
        stream.add(Candidates(patient, designs, score(designs)))
    survivors, funnel = stream.finish()
    funnel.insert(
        0,
        FunnelRow(
            0, generated_label, stream.generated, stream.generated, time.perf_counter() - started
        ),
    )
    result = ScreenResult(stream.generated, funnel, None, np.zeros(0, int), np.zeros(0, bool), None)
    emptied = next((row for row in funnel[1:] if row.kept == 0), None)
    if emptied is not None:
        result.emptied_by = links[emptied.position - 1]
        return result
    if len(survivors):
        survivors = refine(survivors)
    tracker = _Finalists()
    for link in links[prefix:]:
        tracker.entering(survivors, link.position)
        began = time.perf_counter()
        selection: Selection = link.filter.select(survivors, context_for(link))
        keep = np.asarray(selection.keep, dtype=np.int64)
        result.funnel.append(
            FunnelRow(
                link.position, link.name, len(survivors), len(keep), time.perf_counter() - began
            )
        )
        result.metrics.update(selection.metrics)
        survivors = survivors.with_columns(selection.columns)
        tracker.columns(selection.columns)
        if not len(keep):
            result.emptied_by = link
            result.why_emptied = _commonest_failure(selection.columns)
            break
        survivors = survivors.take(keep)
        tracker.kept(keep)
    tracker.finish(survivors, result)
    return result


class _Stream:
    """The streaming prefix: row-wise links applied chunk by chunk, then a ranking link's
    running best set. Newcomers wait until they are as many as the set holds, then the best
    of both are kept: each candidate is ranked about twice, not once per chunk, and never
    more than twice the set plus one chunk are held."""

    def __init__(self, links: list[Link], upper_bound: int) -> None:
        self.rowwise = [link for link in links if not link.ranks]
        self.ranking = next((link for link in links if link.ranks), None)
        self.entered = {link.position: 0 for link in links}
        self.kept = {link.position: 0 for link in links}
        self.seconds = {link.position: 0.0 for link in links}
        self.generated = 0
        self.capacity = 0 if self.ranking is None else self.ranking.filter.kept_count(upper_bound)
        self.parts: list[Candidates] = []
        self.pool: Candidates | None = None
        self.pool_score = np.zeros(0)
        self.waiting: list[tuple[Candidates, np.ndarray]] = []
        self.waiting_rows = 0

    def add(self, candidates: Candidates) -> None:
        self.generated += len(candidates)
        for link in self.rowwise:
            began = time.perf_counter()
            self.entered[link.position] += len(candidates)
            selection = link.filter.select(candidates, None)
            candidates = candidates.take(np.asarray(selection.keep, dtype=np.int64))
            self.kept[link.position] += len(candidates)
            self.seconds[link.position] += time.perf_counter() - began
        if self.ranking is None:
            self.parts.append(candidates)
            return
        began = time.perf_counter()
        self.entered[self.ranking.position] += len(candidates)
        self._merge(candidates)
        self.seconds[self.ranking.position] += time.perf_counter() - began

    def _merge(self, candidates: Candidates) -> None:
        """Queue the newcomers; keep the best when as many wait as the set holds."""
        if not len(candidates):
            return
        score = self.ranking.filter.score(candidates).astype(np.float64)
        score = np.where(np.isnan(score), -np.inf, score)  # never kept, as at once
        self.waiting.append((candidates, score))
        self.waiting_rows += len(candidates)
        if self.waiting_rows >= max(self.capacity, 1):
            self._flush()

    def _flush(self) -> None:
        """Keep the ``capacity`` best of the set and the waiting (ties: earlier first)."""
        if not self.waiting:
            return
        parts = ([(self.pool, self.pool_score)] if self.pool is not None else []) + self.waiting
        pool = _concat([p for p, _ in parts])
        pool_score = np.concatenate([score for _, score in parts])
        self.waiting, self.waiting_rows = [], 0
        if len(pool) > self.capacity:
            best = best_positions(pool_score, self.capacity)
            pool, pool_score = pool.take(best), pool_score[best]
        self.pool, self.pool_score = pool, pool_score

    def finish(self) -> tuple[Candidates | None, list[FunnelRow]]:
        """The prefix's survivors and its funnel rows."""
        if self.ranking is not None:
            self._flush()
        if self.ranking is None:
            survivors = _concat(self.parts) if self.parts else None
        elif self.pool is None:
            survivors = None
        else:
            began = time.perf_counter()
            final = self.ranking.filter.kept_count(self.entered[self.ranking.position])
            order = np.argsort(-self.pool_score, kind="stable")[:final]
            order = order[np.isfinite(self.pool_score[order])]
            survivors = self.pool.take(order)
            self.seconds[self.ranking.position] += time.perf_counter() - began
        if self.ranking is not None:
            self.kept[self.ranking.position] = 0 if survivors is None else len(survivors)
        rows = [
            FunnelRow(p, link.name, self.entered[p], self.kept[p], self.seconds[p])
            for link in [*self.rowwise, *([self.ranking] if self.ranking else [])]
            for p in [link.position]
        ]
        return survivors, rows


def _missing(n: int, like: np.ndarray) -> np.ndarray:
    """``n`` rows shaped and typed like ``like``, each saying 'not computed': NaN for numbers,
    False for flags, -1 for integers, "" for text."""
    shape = (n, *like.shape[1:])
    if like.dtype == bool:
        return np.zeros(shape, dtype=bool)
    if like.dtype.kind in "iu":
        return np.full(shape, -1, dtype=like.dtype)
    if like.dtype.kind in "OUS":
        return np.full(shape, "", dtype=object)
    return np.full(shape, np.nan)


def _commonest_failure(columns: Mapping[str, np.ndarray]) -> str:
    """The most frequent reason a link's ``*_failure_reason`` column gives, with its count."""
    for name, values in columns.items():
        if name.endswith("failure_reason"):
            reasons, counts = np.unique(np.asarray(values, dtype=str), return_counts=True)
            given = reasons != ""
            if given.any():
                top = np.argmax(np.where(given, counts, -1))
                return f"{counts[top]} of them failed: {reasons[top]}"
    return ""


def best_positions(score: np.ndarray, k: int) -> np.ndarray:
    """Positions of the ``k`` highest scores, in increasing order; among scores tied at the
    cut, the earliest (so a running best set over a stream keeps the earlier candidate, as a
    stable sort of everything would)."""
    if k >= len(score):
        return np.arange(len(score))
    score = np.where(np.isnan(score), -np.inf, score)  # NaN is never better than anything
    cut = np.partition(score, len(score) - k)[len(score) - k]
    above = np.flatnonzero(score > cut)
    tied = np.flatnonzero(score == cut)[: k - len(above)]
    return np.sort(np.concatenate([above, tied]))


def _concat(parts: list[Candidates]) -> Candidates:
    """Candidates of one patient, in order."""
    parts = [p for p in parts if len(p)] or parts[:1]
    columns = {name: np.concatenate([p.columns[name] for p in parts]) for name in parts[0].columns}
    return Candidates(parts[0].patient, DesignBatch.concat([p.designs for p in parts]), columns)


class _Finalists:
    """The candidates of the first link with at most FINALIST_LIMIT entrants, followed to the
    end: which link each reached last, the columns later links added, who survived."""

    def __init__(self) -> None:
        self.table: Candidates | None = None
        self.origin = np.zeros(0, dtype=np.int64)  # current candidate -> finalist row
        self.added: dict[str, np.ndarray] = {}
        self.last_link = np.zeros(0, dtype=np.int64)

    def entering(self, candidates: Candidates, position: int) -> None:
        if self.table is None and len(candidates) <= FINALIST_LIMIT:
            self.table = candidates
            self.origin = np.arange(len(candidates))
            self.last_link = np.full(len(candidates), position, dtype=np.int64)
        elif self.table is not None:
            self.last_link[self.origin] = position

    def columns(self, columns: Mapping[str, np.ndarray]) -> None:
        if self.table is None:
            return
        for name, values in columns.items():
            values = np.asarray(values)
            # A later link's column of another shape (a trajectory over other follow-up
            # times) replaces the earlier one whole: broadcasting it in would corrupt both.
            if name not in self.added or self.added[name].shape[1:] != values.shape[1:]:
                self.added[name] = _missing(len(self.table), values)
            self.added[name][self.origin] = values

    def kept(self, keep: np.ndarray) -> None:
        if self.table is not None:
            self.origin = self.origin[keep]

    def finish(self, survivors: Candidates | None, result: ScreenResult) -> None:
        if self.table is None:
            if survivors is None or not len(survivors):
                return
            shown = survivors.take(np.arange(min(len(survivors), FINALIST_LIMIT)))
            self.table, self.origin = shown, np.arange(len(shown))
            self.last_link = np.full(len(shown), result.funnel[-1].position, dtype=np.int64)
            emptied = result.emptied_by is not None
            survivors_origin = np.zeros(0, dtype=np.int64) if emptied else self.origin
        else:
            survivors_origin = self.origin if result.emptied_by is None else np.zeros(0, int)
        result.finalists = self.table.with_columns(self.added)
        result.last_link = self.last_link
        result.survivor = np.zeros(len(self.table), dtype=bool)
        result.survivor[survivors_origin] = True
        result.chosen = int(survivors_origin[0]) if len(survivors_origin) else None
