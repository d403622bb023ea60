"""The screening fidelity of ``reference-ep``: the monodomain, solved where the design space
needs it and interpolated between.

The monodomain problem depends on a design only through its coverage pattern, the gel's
volume fraction phi in the treated elements and phi sigma_gel (:mod:`.activation`): the
treated tissue conducts (1 - phi) sigma_tissue and the gel phi sigma_gel. A patient's thousands
of designs are therefore a few curves: per coverage pattern, the outputs over phi sigma_gel
(log-spaced: the gel's effect grows over decades of conductivity) at the smallest and the
largest phi of its designs, linear in phi between them. The largest phi's curves are refined
first; the smallest phi's interpolate their difference from those (phi moves the outputs
little at a given phi sigma_gel, and slowly), except where the largest phi's jump
(:class:`_Curves`). Where the treated elements hold no tissue (a scar-only patch over scar),
phi acts only through phi sigma_gel and one curve is enough. Designs whose gel has gone are
the untreated heart, solved once.

The RVI needs full beats (until every node has repolarised); activation (total activation
time, border-zone velocity, block) needs only beats stopped once every node has activated,
without the plateau and repolarisation. So full beats are refined for the RVI first, and
the activation curves start from every full beat solved and are refined further with the
cheaper beats.
The full beats start at one node per two decades over the designs' range of phi sigma_gel,
and every curve is refined where it needs it: an interval's midpoint is solved, and when it
differs from the monotone cubic (PCHIP) interpolation of the nodes around it by more than the
tolerance (:data:`TOLERANCE`, about half the agreement the fidelity is verified to), both
halves are refined again, up to :data:`MAX_REFINEMENTS` times. An interval across which
conduction block or activation appears or disappears cannot be interpolated: designs in it are
solved directly, as are those of an interval whose last midpoint still missed by more than
twice the tolerance (the verified agreement) after the last refinement, or that holds a single
design. A coverage with fewer designs than the curves would cost is solved design by design.

Every curve of a patient is refined in lockstep: a round's midpoints of every coverage are
integrated in one call, in lanes of alike designs (:func:`.solver.solve_activation`). Nodes
and direct solves are the validation fidelity's own monodomain solutions, so the screening
fidelity agrees with it exactly there and to the tolerance between (checked in
``tests/test_reference_ep.py`` and ``benchmarks/bench_ep_screening.py``).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

from hydraopt.domain import COVERAGE_PATTERNS
from hydraopt_simulators.ep.activation import OUTPUT_NAMES, HeartModel

# Largest disagreement between an interval's solved midpoint and its interpolation before the
# interval is refined: half of the screening fidelity's verified agreement with the
# monodomain (total activation within 2 ms or 2%, whichever is larger; 5% border-zone
# velocity). The RVI is verified by rank (Spearman >= 0.95) and varies by tens of ms over a
# patient's designs; 2 ms keeps its ranks (assumed, and checked by the verification).
TOLERANCE = {
    "total_activation_time_ms": ("ms or relative", (1.0, 0.01)),
    "reentry_vulnerability_index_ms": ("ms", 2.0),
    "bz_conduction_velocity_m_per_s": ("relative", 0.025),
}
ACTIVATION_OUTPUTS = (
    "total_activation_time_ms",
    "bz_conduction_velocity_m_per_s",
    "conduction_block_pct",
)
REPOLARISATION_OUTPUTS = ("reentry_vulnerability_index_ms",)
# Starting nodes per decade of phi sigma_gel: the RVI's full-beat curves start coarser (the
# RVI bends gently), and the activation curves start from every node those beats solved.
NODES_PER_DECADE = 0.5
# After the last bisection, an interval whose midpoint still missed by up to this many times
# the tolerance (that is, within the verified agreement) is interpolated; beyond, its designs
# are solved directly. Outputs taken as quantiles over nodes (total activation, the RVI) move
# in small steps as nodes change places, which no bisection smooths away.
ACCEPTED_MISS = 2.0
MAX_REFINEMENTS = 4  # bisections of an interval to reach the tolerance
# Further bisections that only narrow a jump (an output that changes abruptly with the gel's
# conductance, or block that appears), so that few designs are left to solve directly.
NARROWING_REFINEMENTS = 4
# A coverage is solved design by design when its designs are at most this many times the
# starting nodes: the curves would cost as much as the designs.
DIRECT_BELOW = 2.0


@dataclass
class Screened:
    """Outputs of designs and what they cost: monodomain solutions at curve nodes, and designs
    solved directly."""

    values: dict[str, np.ndarray]
    node_solves: int = 0
    direct_solves: int = 0


@dataclass
class _Request:
    """Monodomain beats a coverage's curves need next (full beats or stopped at activation)."""

    coverage: np.ndarray  # per design: index into COVERAGE_PATTERNS
    phi: np.ndarray
    phi_sigma: np.ndarray
    repolarise: np.ndarray  # per design: full beat, or stopped at activation

    @classmethod
    def beats(cls, coverage: int, phi: np.ndarray, phi_sigma: np.ndarray, full: bool):
        return cls(np.full(len(phi), coverage), phi, phi_sigma, np.full(len(phi), full))


# A coverage's screening: yields the beats it needs, receives their outputs, returns its own.
_Task = Generator[_Request, dict[str, np.ndarray], Screened]


def screened_outputs(
    model: HeartModel,
    coverage: np.ndarray,
    phi: np.ndarray,
    phi_sigma: np.ndarray,
    settings,
    always_interpolate: bool = False,
) -> Screened:
    """Outputs of designs with coverage patterns ``coverage`` (indices into
    COVERAGE_PATTERNS), gel volume fractions ``phi`` and ``phi_sigma`` [S/m]
    (``always_interpolate``: build the curves however few the designs, for verification).

    Every coverage's curves are refined in lockstep: each round's beats of every coverage are
    integrated in one call."""
    n = len(phi)
    result = Screened({name: np.full(n, np.nan) for name in OUTPUT_NAMES})
    gone = phi <= 0
    tasks: list[tuple[np.ndarray, _Task]] = []
    if gone.any():  # no gel: the untreated heart, the same under every coverage
        tasks.append((np.flatnonzero(gone), _untreated(model)))
    for c in range(len(COVERAGE_PATTERNS)):
        rows = np.flatnonzero((coverage == c) & ~gone)
        if len(rows):
            task = _coverage_curves(model, c, phi[rows], phi_sigma[rows], always_interpolate)
            tasks.append((rows, task))
    for rows, screened in zip(
        (rows for rows, _ in tasks),
        _in_lockstep(model, [task for _, task in tasks], settings),
        strict=True,
    ):
        for name in OUTPUT_NAMES:
            result.values[name][rows] = screened.values[name]
        result.node_solves += screened.node_solves
        result.direct_solves += screened.direct_solves
    return result


def _in_lockstep(model: HeartModel, tasks: list[_Task], settings) -> list[Screened]:
    """Run the tasks, integrating each round's requests of all of them together."""
    rounds = _together(tasks)
    found = None
    while True:
        try:
            request = rounds.send(found)
        except StopIteration as stop:
            return stop.value
        activation, repolarisation = model.solve(
            request.coverage, request.phi, request.phi_sigma, settings, request.repolarise
        )
        found = model.measures(activation, repolarisation)


def _untreated(model: HeartModel) -> _Task:
    """The heart without gel (solved once per patient and kept)."""
    if "untreated" not in model.cache:
        found = yield _Request.beats(0, np.zeros(1), np.zeros(1), True)
        model.cache["untreated"] = {name: float(found[name][0]) for name in OUTPUT_NAMES}
        solves = 1
    else:
        solves = 0
    values = {name: np.array([value]) for name, value in model.cache["untreated"].items()}
    return Screened(values, solves)


def _coverage_curves(
    model: HeartModel, c: int, phi: np.ndarray, phi_sigma: np.ndarray, always_interpolate: bool
) -> _Task:
    """Outputs of one coverage pattern's designs (all with gel): curves over log10 phi
    sigma_gel at each phi node, each refined where it needs it, linear in phi between."""
    result = Screened({})
    phi_nodes = _phi_nodes(model, COVERAGE_PATTERNS[c], phi)
    log_s = np.log10(phi_sigma)
    n_start = max(2, int(np.ceil((log_s.max() - log_s.min()) * NODES_PER_DECADE)) + 1)
    small = len(phi) <= DIRECT_BELOW * n_start * len(phi_nodes)
    if log_s.max() - log_s.min() < 1e-9 or (small and not always_interpolate):
        result.values = yield _Request.beats(c, phi, phi_sigma, True)
        result.direct_solves = len(phi)
        return result
    start = np.linspace(log_s.min(), log_s.max(), n_start)
    # Every phi node's starting beats in one round; then the largest phi's curves, and the
    # smallest phi's as their difference from those (:class:`_Curves`).
    found = yield from _together([_starting_beats(c, phi_node, start) for phi_node in phi_nodes])
    curves = [(yield from _curves_at(c, phi_nodes[-1], start, found[-1], log_s, None))]
    if len(phi_nodes) == 2:
        beats, fronts, _ = curves[0]
        curves.insert(
            0, (yield from _curves_at(c, phi_nodes[0], start, found[0], log_s, (beats, fronts)))
        )
    result.node_solves = sum(solves for _, _, solves in curves)
    rows = {name: [] for name in OUTPUT_NAMES}
    direct = np.zeros(len(phi), dtype=bool)
    for beats, fronts, _ in curves:
        direct |= beats.needs_direct(log_s) | fronts.needs_direct(log_s)
        for name, values in beats.interpolate(log_s, REPOLARISATION_OUTPUTS).items():
            rows[name].append(values)
        for name, values in fronts.interpolate(log_s, ACTIVATION_OUTPUTS).items():
            rows[name].append(values)
    if len(phi_nodes) == 1:
        result.values = {name: values[0] for name, values in rows.items()}
    else:  # linear in phi between the nodes
        weight = np.clip((phi - phi_nodes[0]) / (phi_nodes[1] - phi_nodes[0]), 0.0, 1.0)
        result.values = {
            name: (1 - weight) * low + weight * high for name, (low, high) in rows.items()
        }
    if direct.any():
        found = yield _Request.beats(c, phi[direct], phi_sigma[direct], True)
        result.direct_solves = int(direct.sum())
        for name in OUTPUT_NAMES:
            result.values[name][direct] = found[name]
    return result


def _starting_beats(
    c: int, phi_node: float, start: np.ndarray
) -> Generator[_Request, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Full beats of one coverage at one phi node at the starting nodes."""
    return (yield _Request.beats(c, np.full(len(start), phi_node), 10.0**start, True))


def _curves_at(
    c: int,
    phi_node: float,
    start: np.ndarray,
    found: dict[str, np.ndarray],
    log_s: np.ndarray,
    base: tuple[_Curves, _Curves] | None,
) -> Generator[_Request, dict[str, np.ndarray], tuple[_Curves, _Curves, int]]:
    """The curves of one coverage at one phi node from its starting full beats ``found``:
    full beats refined for the RVI, then activation beats, seeded by every full beat,
    refined for the activation outputs (as differences from ``base``, another phi node's
    full-beat and activation curves, where given)."""
    beats = _Curves(OUTPUT_NAMES, phi_node, start, found, base[0] if base else None)
    solves = len(start)
    solves += yield from beats.refine(log_s, c, True, REPOLARISATION_OUTPUTS)
    fronts = _Curves(
        ACTIVATION_OUTPUTS,
        phi_node,
        beats.log_s,
        {n: beats.table[n] for n in ACTIVATION_OUTPUTS},
        base[1] if base else None,
    )
    solves += yield from fronts.refine(log_s, c, False, ACTIVATION_OUTPUTS)
    return beats, fronts, solves


def _together(tasks: list[Generator]) -> Generator[_Request, dict[str, np.ndarray], list]:
    """Run generators of requests in lockstep, as one request per round; return their
    results in order."""
    results: list = [None] * len(tasks)
    pending: dict[int, _Request] = {}

    def advance(k: int, found: dict[str, np.ndarray] | None) -> None:
        try:
            pending[k] = tasks[k].send(found)  # type: ignore[arg-type]
        except StopIteration as stop:
            results[k] = stop.value

    for k in range(len(tasks)):
        advance(k, None)
    while pending:
        asked = list(pending.items())
        pending.clear()
        found = yield _Request(
            np.concatenate([r.coverage for _, r in asked]),
            np.concatenate([r.phi for _, r in asked]),
            np.concatenate([r.phi_sigma for _, r in asked]),
            np.concatenate([r.repolarise for _, r in asked]),
        )
        offsets = np.cumsum([0, *(len(r.phi) for _, r in asked)])
        for (k, _), first, last in zip(asked, offsets[:-1], offsets[1:], strict=True):
            advance(k, {name: values[first:last] for name, values in found.items()})
    return results


def _phi_nodes(model: HeartModel, coverage: str, phi: np.ndarray) -> np.ndarray:
    if model.treated_tissue_conducts(coverage) and np.ptp(phi) > 0:
        return np.array([phi.min(), phi.max()])
    return np.array([np.median(phi)])  # phi acts only through phi sigma_gel


class _Curves:
    """Outputs ``names`` at one phi node over log10 phi sigma_gel nodes, refined where they
    bend.

    With a ``base`` (the curves of another phi node, over the same range), what is
    interpolated is the difference from the base: the treated tissue's conductance (1 - phi)
    moves the outputs by a small, slowly varying amount at a given phi sigma_gel, so the
    difference needs far fewer nodes than the output itself, which bends steeply where the
    gel's conductance takes over (docs/physics.md 3.5)."""

    def __init__(
        self,
        names: tuple[str, ...],
        phi_node: float,
        log_s_nodes: np.ndarray,
        table: dict[str, np.ndarray],
        base: _Curves | None = None,
    ) -> None:
        self.names = names
        self.phi_node = phi_node
        self.base = base
        self.log_s = np.array(log_s_nodes, dtype=float)
        self.table = {name: np.array(table[name], dtype=float) for name in names}
        # Intervals whose designs are solved directly.
        self.unresolved: set[tuple[float, float]] = set()
        # Intervals narrowed past MAX_REFINEMENTS: an output jumps inside.
        self.jumps: set[tuple[float, float]] = set()

    def refine(
        self, log_s_designs: np.ndarray, coverage: int, repolarise: bool, check: tuple[str, ...]
    ) -> Generator[_Request, dict[str, np.ndarray], int]:
        """Bisect intervals holding designs until their midpoints agree with interpolation in
        the outputs ``check`` (and narrow those across which block or activation changes);
        return the number of monodomain solutions. Intervals whose last midpoint missed by
        more than :data:`ACCEPTED_MISS` times the tolerance stay unresolved (solved
        directly), as do those holding a single design, which is no dearer solved than a
        midpoint."""
        solves = 0
        nodes = list(zip(self.log_s[:-1], self.log_s[1:], strict=True))
        pending = [(a, b, np.inf) for a, b in _holding(nodes, log_s_designs)]
        for level in range(MAX_REFINEMENTS + NARROWING_REFINEMENTS):
            few = {(a, b) for a, b, _ in pending if _count(a, b, log_s_designs) <= 1}
            self.unresolved.update(few)
            pending = [(a, b, miss) for a, b, miss in pending if (a, b) not in few]
            if not pending:
                break
            # Past MAX_REFINEMENTS, only jumps are narrowed: misses beyond the verified
            # agreement, and changes of block or activation.
            refine_above = 1.0 if level < MAX_REFINEMENTS else ACCEPTED_MISS
            if level >= MAX_REFINEMENTS:
                self.jumps.update((a, b) for a, b, _ in pending)
            middles = np.array([(a + b) / 2 for a, b, _ in pending])
            predicted = self.interpolate(middles)
            phis = np.full(len(middles), self.phi_node)
            solved = yield _Request.beats(coverage, phis, 10.0**middles, repolarise)
            solves += len(middles)
            self._insert(middles, solved)
            again = []
            for k, (a, b, _) in enumerate(pending):
                m = middles[k]
                miss = _miss(predicted, solved, k, check)
                halves = [(a, m), (m, b)]
                if miss <= refine_above:
                    halves = [half for half in halves if self._changes_kind(*half)]
                again += [(*half, miss) for half in _holding(halves, log_s_designs)]
            pending = again
        self.unresolved.update((a, b) for a, b, miss in pending if miss > ACCEPTED_MISS)
        return solves

    def needs_direct(self, log_s_designs: np.ndarray) -> np.ndarray:
        """Designs in an interval still outside the tolerance, or across which block or
        activation changes."""
        direct = np.zeros(len(log_s_designs), dtype=bool)
        for a, b in self.unresolved | self._kind_changes():
            direct |= (log_s_designs >= a) & (log_s_designs <= b)
        return direct

    def interpolate(
        self, log_s: np.ndarray, names: tuple[str, ...] | None = None
    ) -> dict[str, np.ndarray]:
        """Outputs ``names`` (all by default), monotone cubic in log10 phi sigma_gel: the
        base's plus the interpolated difference from it where there is a base and both are
        finite throughout, the output itself otherwise (and always for block, whose sign a
        difference near zero could flip)."""
        names = names or self.names
        values = {name: PchipInterpolator(self.log_s, self.table[name])(log_s) for name in names}
        if self.base is None:
            return values
        # Where the base jumps (block or activation changing, or an interval it narrowed),
        # its jump need not sit where this curve's does: there, this curve's own nodes.
        smooth = ~self._holds_any(log_s, self.base.jump_intervals())
        base_here = self.base.interpolate(log_s[smooth], names)
        base_nodes = self.base.interpolate(self.log_s, names)
        for name in names:
            if name == "conduction_block_pct":
                continue
            difference = self.table[name] - base_nodes[name]
            if np.isfinite(difference).all() and np.isfinite(base_here[name]).all():
                difference_here = PchipInterpolator(self.log_s, difference)(log_s[smooth])
                values[name][smooth] = base_here[name] + difference_here
        return values

    def jump_intervals(self) -> np.ndarray:
        """``[k, 2]``: where an output jumps, inside intervals narrowed past MAX_REFINEMENTS
        and between nodes across which block or activation changes."""
        return np.array(sorted(self.jumps | self._kind_changes())).reshape(-1, 2)

    def _holds_any(self, log_s: np.ndarray, intervals: np.ndarray) -> np.ndarray:
        """Per point of ``log_s``: whether the interval between this curve's nodes that
        holds it overlaps any of ``intervals`` ``[k, 2]``."""
        if not len(intervals):
            return np.zeros(len(log_s), dtype=bool)
        k = np.clip(np.searchsorted(self.log_s, log_s, side="right") - 1, 0, len(self.log_s) - 2)
        low, high = self.log_s[k], self.log_s[k + 1]
        return np.any(
            (intervals[None, :, 0] < high[:, None]) & (intervals[None, :, 1] > low[:, None]), axis=1
        )

    # ---- helpers -------------------------------------------------------------------------------

    def _insert(self, log_s: np.ndarray, solved: dict[str, np.ndarray]) -> None:
        merged = np.concatenate([self.log_s, log_s])
        order = np.argsort(merged, kind="stable")
        self.log_s = merged[order]
        for name in self.names:
            self.table[name] = np.concatenate([self.table[name], solved[name]])[order]

    def _kind_changes(self) -> set[tuple[float, float]]:
        """The intervals between neighbouring nodes across which block or activation
        changes."""
        return {
            (a, b)
            for a, b in zip(self.log_s[:-1], self.log_s[1:], strict=True)
            if self._changes_kind(a, b)
        }

    def _changes_kind(self, a: float, b: float) -> bool:
        """Whether block appears or disappears, or an output becomes (non-)finite, between
        the nodes at log10 phi sigma_gel ``a`` and ``b``."""
        i, j = np.searchsorted(self.log_s, [a, b])
        for name in self.names:
            if np.isfinite(self.table[name][i]) != np.isfinite(self.table[name][j]):
                return True
        block = self.table.get("conduction_block_pct")
        return block is not None and bool((block[i] > 0) != (block[j] > 0))


def _miss(
    predicted: dict[str, np.ndarray], solved: dict[str, np.ndarray], k: int, names: tuple[str, ...]
) -> float:
    """How far interpolation missed the k-th solved midpoint, in units of :data:`TOLERANCE`
    (the worst output; inf when it missed whether an output is finite)."""
    worst = 0.0
    for name, (kind, tolerance) in TOLERANCE.items():
        if name not in names:
            continue
        guess, truth = predicted[name][k], solved[name][k]
        if np.isfinite(guess) != np.isfinite(truth):
            return np.inf
        if not np.isfinite(truth):
            continue
        error = abs(guess - truth)
        if kind == "relative":
            error = error / max(abs(truth), 1e-12)
        elif kind == "ms or relative":
            absolute, relative = tolerance
            tolerance = max(absolute, relative * abs(truth))
        worst = max(worst, float(error) / tolerance)
    return worst


def _count(a: float, b: float, log_s_designs: np.ndarray) -> int:
    return int(np.sum((log_s_designs >= a) & (log_s_designs <= b)))


def _holding(
    intervals: list[tuple[float, float]], log_s_designs: np.ndarray
) -> list[tuple[float, float]]:
    """The intervals that hold at least one design."""
    return [(a, b) for a, b in intervals if _count(a, b, log_s_designs)]


@dataclass
class Agreement:
    """Screening against validation for a sample of designs (rows aligned)."""

    coverage: np.ndarray  # [sample] coverage pattern
    screened: dict[str, np.ndarray]
    monodomain: dict[str, np.ndarray]
    node_solves: int
    direct_solves: int
    designs: int
    screening_s: float  # screening every design
    monodomain_s: float  # solving the sample design by design

    def activation_within(self, ms: float, share: float) -> np.ndarray:
        """Per sampled design: total activation within ``ms`` or ``share`` of the monodomain's."""
        name = "total_activation_time_ms"
        error = np.abs(self.screened[name] - self.monodomain[name])
        return (error <= ms) | (error <= share * np.abs(self.monodomain[name]))

    def velocity_error(self) -> np.ndarray:
        name = "bz_conduction_velocity_m_per_s"
        return np.abs(self.screened[name] / self.monodomain[name] - 1.0)

    def block_agrees(self) -> np.ndarray:
        name = "conduction_block_pct"
        return (self.screened[name] > 0) == (self.monodomain[name] > 0)

    def rvi_rank_correlation(self) -> float:
        from scipy.stats import spearmanr

        name = "reentry_vulnerability_index_ms"
        return float(spearmanr(self.screened[name], self.monodomain[name]).statistic)


def agreement_with_monodomain(
    model: HeartModel,
    coverage_index: np.ndarray,
    phi: np.ndarray,
    phi_sigma: np.ndarray,
    settings,
    per_coverage: int,
) -> Agreement:
    """Screen every design with gel (curves built however few they are), then solve a
    sample of ``per_coverage`` designs per coverage pattern, evenly spread over phi sigma_gel
    from the smallest to the largest, with the monodomain itself."""
    rows = np.flatnonzero(phi > 0)
    coverage, phi, phi_sigma = coverage_index[rows], phi[rows], phi_sigma[rows]
    start = time.perf_counter()
    screened = screened_outputs(model, coverage, phi, phi_sigma, settings, always_interpolate=True)
    screening_s = time.perf_counter() - start
    sample = []
    for c in np.unique(coverage):
        members = np.flatnonzero(coverage == c)
        order = members[np.argsort(phi_sigma[members], kind="stable")]
        spread = np.linspace(0, len(order) - 1, per_coverage).round().astype(int)
        sample.append(order[np.unique(spread)])
    sample = np.concatenate(sample)
    start = time.perf_counter()
    activation, repolarisation = model.solve(
        coverage[sample], phi[sample], phi_sigma[sample], settings
    )
    monodomain = model.measures(activation, repolarisation)
    monodomain_s = time.perf_counter() - start
    return Agreement(
        coverage=np.array(COVERAGE_PATTERNS)[coverage[sample]],
        screened={name: values[sample] for name, values in screened.values.items()},
        monodomain=monodomain,
        node_solves=screened.node_solves,
        direct_solves=screened.direct_solves,
        designs=len(rows),
        screening_s=screening_s,
        monodomain_s=monodomain_s,
    )
