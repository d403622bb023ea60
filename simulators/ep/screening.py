"""The screening fidelity of ``reference-ep``: the monodomain, solved where the design space
needs it and interpolated between.

The monodomain problem depends on a design only through its coverage pattern, the gel's
volume fraction phi in the treated elements and phi sigma_gel (:mod:`.activation`): the
treated tissue conducts (1 - phi) sigma_tissue and the gel phi sigma_gel. A patient's thousands
of designs are therefore a few curves: per coverage pattern, the outputs over phi sigma_gel
(log-spaced: the gel's effect grows over decades of conductivity) at the smallest and the
largest phi of its designs, linear in phi between them. Where the treated elements hold no
tissue (a scar-only patch over scar), phi acts only through phi sigma_gel and one curve is
enough. Designs whose gel has gone are the untreated heart, solved once.

The RVI needs full beats (until every node has repolarised); activation (total activation
time, border-zone velocity, block) needs only beats stopped once every node has activated,
about a third of the cost. So full beats are refined for the RVI first, and the activation
curves start from every full beat solved and are refined further with the cheaper beats.
The full beats start at one node per two decades over the designs' range of phi sigma_gel,
and every curve is refined where it needs it: an interval's midpoint is solved, and when it
differs from the monotone cubic (PCHIP) interpolation of the nodes around it by more than the
tolerance (:data:`TOLERANCE`, about half the agreement the fidelity is verified to), both
halves are refined again, up to :data:`MAX_REFINEMENTS` times. An interval across which
conduction block or activation appears or disappears cannot be interpolated: designs in it are
solved directly, as are those of an interval whose last midpoint still missed by more than
twice the tolerance (the verified agreement) after the last refinement. A coverage with fewer
designs than the curves would cost is solved design by design. Nodes and direct solves are the
validation fidelity's own monodomain solutions, so the screening fidelity agrees with it
exactly there and to the tolerance between (checked in
``tests/test_reference_ep.py`` and ``benchmarks/bench_ep_screening.py``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import PchipInterpolator

from hydraopt_simulators.ep.activation import OUTPUT_NAMES, HeartModel

# Largest disagreement between an interval's solved midpoint and its interpolation before the
# interval is refined: half of the screening fidelity's verified agreement with the
# monodomain (2 ms total activation, 5% border-zone velocity). The RVI is verified by rank
# (Spearman >= 0.95) and varies by tens of ms over a patient's designs; 2 ms keeps its ranks
# (assumed, and checked by the verification).
TOLERANCE = {
    "total_activation_time_ms": ("ms", 1.0),
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
    """Outputs of one coverage's designs and what they cost: monodomain solutions at curve
    nodes, and designs solved directly."""

    values: dict[str, np.ndarray]
    node_solves: int = 0
    direct_solves: int = 0


def screened_outputs(
    model: HeartModel,
    coverage: str,
    phi: np.ndarray,
    phi_sigma: np.ndarray,
    settings,
    always_interpolate: bool = False,
) -> Screened:
    """Outputs of designs with gel volume fractions ``phi`` and ``phi_sigma`` [S/m] under
    ``coverage`` (``always_interpolate``: build the curves however few the designs, for
    verification)."""
    n = len(phi)
    result = Screened({name: np.full(n, np.nan) for name in OUTPUT_NAMES})
    parts = model.parts(coverage)

    def solve(phis: np.ndarray, sigmas: np.ndarray) -> dict[str, np.ndarray]:
        activation, repolarisation = model.solve(parts, phis, sigmas, settings)
        return model.measures(activation, repolarisation)

    gone = phi <= 0
    if gone.any():  # no gel: the untreated heart, the same under every coverage
        result.node_solves += "untreated" not in model.cache
        for name, value in model.untreated(settings).items():
            result.values[name][gone] = value
    rows = np.flatnonzero(~gone)
    if not len(rows):
        return result
    phi_nodes = _phi_nodes(model, coverage, phi[rows])
    log_s = np.log10(phi_sigma[rows])
    n_start = max(2, int(np.ceil((log_s.max() - log_s.min()) * NODES_PER_DECADE)) + 1)
    small = len(rows) <= DIRECT_BELOW * n_start * len(phi_nodes)
    if log_s.max() - log_s.min() < 1e-9 or (small and not always_interpolate):
        found = solve(phi[rows], phi_sigma[rows])
        result.direct_solves += len(rows)
        for name in OUTPUT_NAMES:
            result.values[name][rows] = found[name]
        return result
    start = np.linspace(log_s.min(), log_s.max(), n_start)

    def activation_only(phis: np.ndarray, sigmas: np.ndarray) -> dict[str, np.ndarray]:
        activation, repolarisation = model.solve(parts, phis, sigmas, settings, False)
        return model.measures(activation, repolarisation)

    # Full beats for the RVI; every output they give seeds the activation curves too.
    beats = _Curves(OUTPUT_NAMES, phi_nodes, start, solve, check=REPOLARISATION_OUTPUTS)
    result.node_solves += beats.refine(log_s)
    fronts = _Curves(
        ACTIVATION_OUTPUTS,
        phi_nodes,
        beats.log_s,
        activation_only,
        table={name: beats.table[name] for name in ACTIVATION_OUTPUTS},
    )
    result.node_solves += fronts.refine(log_s)
    direct = beats.needs_direct(log_s) | fronts.needs_direct(log_s)
    for curves, names in ((beats, REPOLARISATION_OUTPUTS), (fronts, ACTIVATION_OUTPUTS)):
        for name, values in curves.interpolate(phi[rows], log_s, names).items():
            result.values[name][rows] = values
    if direct.any():
        found = solve(phi[rows[direct]], phi_sigma[rows[direct]])
        result.direct_solves += int(direct.sum())
        for name in OUTPUT_NAMES:
            result.values[name][rows[direct]] = found[name]
    return result


def _phi_nodes(model: HeartModel, coverage: str, phi: np.ndarray) -> np.ndarray:
    if model.treated_tissue_conducts(coverage) and np.ptp(phi) > 0:
        return np.array([phi.min(), phi.max()])
    return np.array([np.median(phi)])  # phi acts only through phi sigma_gel


class _Curves:
    """Outputs ``names`` at nodes (phi node x log10 phi sigma_gel node), refined where the
    outputs ``check`` (all of ``names`` by default) bend."""

    def __init__(
        self,
        names: tuple[str, ...],
        phi_nodes: np.ndarray,
        log_s_nodes: np.ndarray,
        solve,
        table: dict[str, np.ndarray] | None = None,
        check: tuple[str, ...] | None = None,
    ) -> None:
        self.names = names
        self.check = check or names
        self.phi_nodes = phi_nodes
        self.log_s = np.array(log_s_nodes, dtype=float)
        self._solve = solve
        self.solves = 0 if table is not None else len(phi_nodes) * len(self.log_s)
        self.table = table if table is not None else self._solved(self.log_s)
        self.unresolved: set[tuple[float, float]] = set()

    def _solved(self, log_s: np.ndarray) -> dict[str, np.ndarray]:
        phis = np.repeat(self.phi_nodes, len(log_s))
        sigmas = np.tile(10.0**log_s, len(self.phi_nodes))
        found = self._solve(phis, sigmas)
        return {name: found[name].reshape(len(self.phi_nodes), len(log_s)) for name in self.names}

    def refine(self, log_s_designs: np.ndarray) -> int:
        """Bisect intervals holding designs until their midpoints agree with interpolation
        (and narrow those across which block or activation changes); return the number of
        monodomain solutions. Intervals whose last midpoint missed by more than
        :data:`ACCEPTED_MISS` times the tolerance stay unresolved (solved directly)."""
        solves = self.solves
        nodes = list(zip(self.log_s[:-1], self.log_s[1:], strict=True))
        pending = [(a, b, np.inf) for a, b in _holding(nodes, log_s_designs)]
        for level in range(MAX_REFINEMENTS + NARROWING_REFINEMENTS):
            if not pending:
                break
            # Past MAX_REFINEMENTS, only jumps are narrowed: misses beyond the verified
            # agreement, and changes of block or activation.
            refine_above = 1.0 if level < MAX_REFINEMENTS else ACCEPTED_MISS
            middles = np.array([(a + b) / 2 for a, b, _ in pending])
            predicted = self._interpolated_rows(middles)
            solved = self._solved(middles)
            solves += solved[self.names[0]].size
            self._insert(middles, solved)
            again = []
            for k, (a, b, _) in enumerate(pending):
                m = middles[k]
                miss = _miss(predicted, solved, k, self.check)
                halves = [(a, m), (m, b)]
                if miss <= refine_above:
                    halves = [half for half in halves if self._changes_kind(*half)]
                again += [(*half, miss) for half in _holding(halves, log_s_designs)]
            pending = again
        self.unresolved = {(a, b) for a, b, miss in pending if miss > ACCEPTED_MISS}
        return solves

    def needs_direct(self, log_s_designs: np.ndarray) -> np.ndarray:
        """Designs in an interval still outside the tolerance, or across which block or
        activation changes."""
        direct = np.zeros(len(log_s_designs), dtype=bool)
        for a, b in self.unresolved:
            direct |= (log_s_designs >= a) & (log_s_designs <= b)
        for a, b in zip(self.log_s[:-1], self.log_s[1:], strict=True):
            if self._changes_kind(a, b):
                direct |= (log_s_designs >= a) & (log_s_designs <= b)
        return direct

    def interpolate(
        self, phi: np.ndarray, log_s: np.ndarray, names: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        """Outputs ``names`` monotone cubic in log10 phi sigma_gel along each phi node, linear
        in phi between."""
        if len(self.phi_nodes) == 1:
            weight = np.zeros(len(phi))
        else:
            low, high = self.phi_nodes
            weight = np.clip((phi - low) / (high - low), 0.0, 1.0)
        rows = self._interpolated_rows(log_s, names)
        return {
            name: rows[name][0]
            if len(self.phi_nodes) == 1
            else (1 - weight) * rows[name][0] + weight * rows[name][1]
            for name in names
        }

    # ---- helpers -------------------------------------------------------------------------------

    def _interpolated_rows(
        self, log_s: np.ndarray, names: tuple[str, ...] | None = None
    ) -> dict[str, np.ndarray]:
        """Outputs (``names``, all by default) at each phi node: ``[phi nodes, len(log_s)]``."""
        return {
            name: np.stack(
                [
                    PchipInterpolator(self.log_s, self.table[name][j])(log_s)
                    for j in range(len(self.phi_nodes))
                ]
            )
            for name in names or self.names
        }

    def _insert(self, log_s: np.ndarray, solved: dict[str, np.ndarray]) -> None:
        merged = np.concatenate([self.log_s, log_s])
        order = np.argsort(merged, kind="stable")
        self.log_s = merged[order]
        for name in self.names:
            self.table[name] = np.concatenate([self.table[name], solved[name]], axis=1)[:, order]

    def _changes_kind(self, a: float, b: float) -> bool:
        """Whether block appears or disappears, or an output becomes (non-)finite, between
        the nodes at log10 phi sigma_gel ``a`` and ``b``."""
        i, j = np.searchsorted(self.log_s, [a, b])
        for name in self.names:
            first, second = self.table[name][:, i], self.table[name][:, j]
            if not np.array_equal(np.isfinite(first), np.isfinite(second)):
                return True
        block = self.table.get("conduction_block_pct")
        return block is not None and bool(np.any((block[:, i] > 0) != (block[:, j] > 0)))


def _miss(
    predicted: dict[str, np.ndarray], solved: dict[str, np.ndarray], k: int, names: tuple[str, ...]
) -> float:
    """How far interpolation missed the k-th solved midpoint, in units of :data:`TOLERANCE`
    (the worst output and phi node; inf when it missed whether an output is finite)."""
    worst = 0.0
    for name, (kind, tolerance) in TOLERANCE.items():
        if name not in names:
            continue
        guess, truth = predicted[name][:, k], solved[name][:, k]
        finite = np.isfinite(truth)
        if not np.array_equal(np.isfinite(guess), finite):
            return np.inf
        error = np.abs(guess[finite] - truth[finite])
        if kind == "relative":
            error = error / np.maximum(np.abs(truth[finite]), 1e-12)
        if error.size:
            worst = max(worst, float(error.max()) / tolerance)
    return worst


def _holding(
    intervals: list[tuple[float, float]], log_s_designs: np.ndarray
) -> list[tuple[float, float]]:
    """The intervals that hold at least one design."""
    return [(a, b) for a, b in intervals if np.any((log_s_designs >= a) & (log_s_designs <= b))]


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
    """Screen every design (curves built however few they are), then solve a sample of
    ``per_coverage`` designs per coverage pattern, evenly spread over phi sigma_gel from the
    smallest to the largest, with the monodomain itself."""
    from hydraopt.domain import COVERAGE_PATTERNS

    coverages, screened, monodomain = [], [], []
    nodes = direct = 0
    screening_s = monodomain_s = 0.0
    for c, coverage in enumerate(COVERAGE_PATTERNS):
        rows = np.flatnonzero((coverage_index == c) & (phi > 0))
        if not len(rows):
            continue
        start = time.perf_counter()
        result = screened_outputs(
            model, coverage, phi[rows], phi_sigma[rows], settings, always_interpolate=True
        )
        screening_s += time.perf_counter() - start
        nodes, direct = nodes + result.node_solves, direct + result.direct_solves
        order = np.argsort(phi_sigma[rows], kind="stable")
        sample = order[np.unique(np.linspace(0, len(rows) - 1, per_coverage).round().astype(int))]
        start = time.perf_counter()
        activation, repolarisation = model.solve(
            model.parts(coverage), phi[rows][sample], phi_sigma[rows][sample], settings
        )
        monodomain.append(model.measures(activation, repolarisation))
        monodomain_s += time.perf_counter() - start
        screened.append({name: values[sample] for name, values in result.values.items()})
        coverages += [coverage] * len(sample)
    return Agreement(
        coverage=np.array(coverages),
        screened={n: np.concatenate([s[n] for s in screened]) for n in OUTPUT_NAMES},
        monodomain={n: np.concatenate([m[n] for m in monodomain]) for n in OUTPUT_NAMES},
        node_solves=nodes,
        direct_solves=direct,
        designs=int(np.sum(phi > 0)),
        screening_s=screening_s,
        monodomain_s=monodomain_s,
    )
