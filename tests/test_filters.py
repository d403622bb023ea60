"""The built-in filters of Stage 3's chain: what each keeps, in which order, and what it adds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from hydraopt.domain import DesignBatch, DesignSpace, Outcomes, OutputSpec
from hydraopt.plugin_types import Candidates, Filter, FilterContext
from hydraopt.polymer_library import read_polymer_library
from hydraopt.registry import PluginRegistry
from hydraopt.testing import example_mesh, example_patient
from hydraopt_plugins.filters import (
    DiversitySettings,
    ParetoSettings,
    SimulateSettings,
    ThresholdSettings,
    TopPercentSettings,
)
from hydraopt_plugins.filters.diversity import DiversityFilter
from hydraopt_plugins.filters.pareto import ParetoFilter
from hydraopt_plugins.filters.ranking import TopPercentFilter
from hydraopt_plugins.filters.simulate import SimulateFilter
from hydraopt_plugins.filters.threshold import ThresholdFilter

POLYMERS = ["gelma-lowdom", "alginate-ik5001", "chitosan-gp"]
FILTER_NAMES = {"threshold", "top-percent", "diversity", "simulate", "pareto"}


@pytest.fixture(scope="module")
def space() -> DesignSpace:
    return DesignSpace(read_polymer_library(None).subset(POLYMERS))


@pytest.fixture(scope="module")
def mesh():
    return example_mesh()


def place(space: DesignSpace, unit, polymer=None, coverage=None) -> DesignBatch:
    """Designs at unit coordinates ``unit [n, 4]``, polymer and coverage choice 0 unless given."""
    unit = np.asarray(unit, dtype=np.float64)
    n = len(unit)
    polymer = np.zeros(n, dtype=np.int64) if polymer is None else np.asarray(polymer)
    coverage = np.zeros(n, dtype=np.int64) if coverage is None else np.asarray(coverage)
    return space.designs_from_unit(polymer, coverage, unit)


def candidates_with(space: DesignSpace, designs: DesignBatch | None = None, **columns):
    n = len(next(iter(columns.values()))) if columns else len(designs)
    if designs is None:
        designs = place(space, np.random.default_rng(0).random((n, 4)))
    arrays = {name: np.asarray(values, dtype=np.float64) for name, values in columns.items()}
    return Candidates(example_patient(), designs, arrays)


def context_for(mesh, workdir: Path, simulators=None, calls=None) -> FilterContext:
    simulators = simulators or {}

    def build(name: str, fidelity: str | None):
        if calls is not None:
            calls.append((name, fidelity))
        return simulators[name]

    return FilterContext(mesh, build, tuple(simulators), np.random.default_rng(0), workdir)


# --- threshold ---------------------------------------------------------------------------------


def test_threshold_keeps_rows_within_bounds_including_the_bounds(space, mesh, tmp_path):
    candidates = candidates_with(
        space,
        a=[3.0, 2.999, np.nan, 5.0, 10.0, 4.0],
        b=[1.0, 0.0, 0.0, 1.001, -3.0, np.nan],
    )
    before = {name: values.copy() for name, values in candidates.columns.items()}
    threshold = ThresholdFilter(ThresholdSettings(min={"a": 3.0}, max={"b": 1.0}))
    kept = threshold.select(candidates, context_for(mesh, tmp_path)).keep
    assert kept.tolist() == [0, 4]  # NaN in either column fails; incoming order kept
    assert kept.dtype == np.int64
    assert threshold.reads == ("a", "b") and threshold.rowwise is True
    for name, values in candidates.columns.items():
        np.testing.assert_array_equal(values, before[name])


def test_threshold_defaults_are_the_seeds_therapeutic_threshold(space, mesh, tmp_path):
    threshold = ThresholdFilter(ThresholdSettings())
    assert set(threshold.reads) == {"predicted_delta_ef_pct", "predicted_bz_stress_reduction_pct"}
    candidates = candidates_with(
        space,
        predicted_delta_ef_pct=[3.0, 2.9, 8.0],
        predicted_bz_stress_reduction_pct=[10.0, 50.0, 9.9],
    )
    assert threshold.select(candidates, context_for(mesh, tmp_path)).keep.tolist() == [0]


def test_threshold_settings_need_a_possible_bound():
    with pytest.raises(ValidationError, match="at least one bound"):
        ThresholdSettings(min={}, max={})
    with pytest.raises(ValidationError, match="min is above max for a"):
        ThresholdSettings(min={"a": 2.0}, max={"a": 1.0})


# --- top-percent -------------------------------------------------------------------------------


def test_top_percent_keeps_the_ceiling_of_its_share_best_first(space, mesh, tmp_path):
    values = np.random.default_rng(3).permutation(31).astype(np.float64)
    top = TopPercentFilter(TopPercentSettings(percent=10.0, by="reward"))
    kept = top.select(candidates_with(space, reward=values), context_for(mesh, tmp_path)).keep
    assert len(kept) == math.ceil(0.1 * 31) == 4
    assert values[kept].tolist() == [30.0, 29.0, 28.0, 27.0]
    assert top.reads == ("reward",)


def test_top_percent_kept_count():
    ten = TopPercentFilter(TopPercentSettings(percent=10.0))
    assert [ten.kept_count(n) for n in (0, 1, 10, 30, 31)] == [0, 1, 1, 3, 4]
    everything = TopPercentFilter(TopPercentSettings(percent=100.0))
    assert everything.kept_count(7) == 7


def test_top_percent_breaks_ties_by_index_and_never_keeps_nan(space, mesh, tmp_path):
    reward = [1.0, np.nan, 1.0, 1.0, np.nan, 2.0]
    candidates = candidates_with(space, reward=reward)
    context = context_for(mesh, tmp_path)
    top = TopPercentFilter(TopPercentSettings(percent=50.0))
    assert top.select(candidates, context).keep.tolist() == [5, 0, 2]
    everything = TopPercentFilter(TopPercentSettings(percent=100.0))
    assert everything.select(candidates, context).keep.tolist() == [5, 0, 2, 3]
    assert np.isneginf(top.score(candidates)[[1, 4]]).all()


def test_top_percent_matches_a_full_sort_on_many_tied_rows(space, mesh, tmp_path):
    n = 20_000
    reward = np.random.default_rng(5).integers(0, 50, n).astype(np.float64)
    designs = place(space, np.full((n, 4), 0.5))
    candidates = candidates_with(space, designs, reward=reward)
    kept = TopPercentFilter(TopPercentSettings(percent=7.5)).select(
        candidates, context_for(mesh, tmp_path)
    )
    expected = np.lexsort((np.arange(n), -reward))[: math.ceil(0.075 * n)]
    np.testing.assert_array_equal(kept.keep, expected)


@pytest.mark.parametrize("percent", [0.0, -5.0, 100.5])
def test_top_percent_rejects_a_share_outside_0_to_100(percent):
    with pytest.raises(ValidationError, match="percent"):
        TopPercentSettings(percent=percent)


# --- diversity ---------------------------------------------------------------------------------


def clustered(space: DesignSpace):
    """Three clusters of four designs (one polymer each, far apart); the four best designs are
    all in cluster 0."""
    rng = np.random.default_rng(11)
    centres = np.array([[0.1] * 4, [0.9] * 4, [0.1, 0.9, 0.1, 0.9]])
    cluster = np.repeat(np.arange(3), 4)
    unit = centres[cluster] + rng.uniform(-0.02, 0.02, (12, 4))
    reward = np.concatenate([[10.0, 9.0, 8.0, 7.0], np.arange(8, dtype=np.float64)])
    return candidates_with(space, place(space, unit, polymer=cluster), reward=reward), cluster


def test_diversity_without_quality_picks_every_cluster_first(space, mesh, tmp_path):
    candidates, cluster = clustered(space)
    spread = DiversityFilter(DiversitySettings(keep=3, quality_weight=0.0))
    kept = spread.select(candidates, context_for(mesh, tmp_path)).keep
    assert kept[0] == 0  # seeded with the best
    assert sorted(cluster[kept].tolist()) == [0, 1, 2]


def test_diversity_with_full_quality_weight_keeps_the_best(space, mesh, tmp_path):
    candidates, _ = clustered(space)
    greedy = DiversityFilter(DiversitySettings(keep=3, quality_weight=1.0))
    assert greedy.select(candidates, context_for(mesh, tmp_path)).keep.tolist() == [0, 1, 2]


def test_diversity_measures_a_different_polymer_as_distance_one(space, mesh, tmp_path):
    # From the best design, a twin with another polymer is 1 away; a design of the same polymer
    # is 0.9 away when one coordinate differs by 0.9, 1.27 when two do.
    unit = np.array([[0.05] * 4, [0.05] * 4, [0.95, 0.05, 0.05, 0.05]])
    designs = place(space, unit, polymer=[0, 1, 0])
    candidates = candidates_with(space, designs, reward=[3.0, 1.0, 1.0])
    spread = DiversityFilter(DiversitySettings(keep=2, quality_weight=0.0))
    assert spread.select(candidates, context_for(mesh, tmp_path)).keep.tolist() == [0, 1]
    unit[2, 1] = 0.95
    candidates = candidates_with(space, place(space, unit, polymer=[0, 1, 0]), reward=[3, 1, 1])
    assert spread.select(candidates, context_for(mesh, tmp_path)).keep.tolist() == [0, 2]


def test_diversity_keeps_all_rated_when_few_enter_and_is_deterministic(space, mesh, tmp_path):
    candidates = candidates_with(space, reward=[1.0, np.nan, 4.0, 2.0])
    spread = DiversityFilter(DiversitySettings(keep=10))
    first = spread.select(candidates, context_for(mesh, tmp_path)).keep
    assert first[0] == 2 and sorted(first.tolist()) == [0, 2, 3]
    again = spread.select(candidates, context_for(mesh, tmp_path)).keep
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.int64


def test_diversity_settings_bound_the_quality_weight():
    with pytest.raises(ValidationError, match="quality_weight"):
        DiversitySettings(quality_weight=1.5)
    with pytest.raises(ValidationError, match="keep"):
        DiversitySettings(keep=0)


# --- simulate ----------------------------------------------------------------------------------


class FakeSimulator:
    """ΔEF = 10 x the stiffness unit coordinate, a 3-point trajectory, and a failure wherever
    the thickness unit coordinate exceeds 0.5."""

    def __init__(self, names=("delta_ef_pct", "delta_ef_trajectory_pct")) -> None:
        shapes = {"delta_ef_trajectory_pct": (3,)}
        self.outputs = tuple(OutputSpec(n, "%", n, shapes.get(n, ())) for n in names)
        self.workdirs: list[Path] = []

    def simulate(self, patient, mesh, designs, workdir) -> Outcomes:
        self.workdirs.append(workdir)
        unit = designs.unit_coordinates()
        failed = unit[:, 3] > 0.5
        delta_ef = np.where(failed, np.nan, 10.0 * unit[:, 0])
        values = {
            "delta_ef_pct": delta_ef,
            "delta_ef_trajectory_pct": delta_ef[:, None] * np.array([0.5, 0.8, 1.0]),
            "bz_stress_reduction_pct": np.where(failed, np.nan, 20.0 * unit[:, 1]),
        }
        reasons = np.where(failed, "too thick", "").astype(object)
        return Outcomes(
            self.outputs, {s.name: values[s.name] for s in self.outputs}, failed, reasons
        )


def simulated_candidates(space: DesignSpace) -> Candidates:
    # Stiffness unit coordinate (first column) sets the simulated ΔEF; rows 1 and 4 fail.
    unit = np.array(
        [
            [0.2, 0.5, 0.5, 0.1],
            [0.9, 0.5, 0.5, 0.9],
            [0.6, 0.5, 0.5, 0.1],
            [0.4, 0.5, 0.5, 0.1],
            [0.8, 0.5, 0.5, 0.7],
        ]
    )
    return candidates_with(space, place(space, unit), reward=np.zeros(5))


def test_simulate_keeps_the_best_by_simulated_score_and_drops_failures(space, mesh, tmp_path):
    fake = FakeSimulator()
    simulate = SimulateFilter(SimulateSettings(keep=2))
    selection = simulate.select(
        simulated_candidates(space), context_for(mesh, tmp_path, {"mechanics": fake})
    )
    assert selection.keep.tolist() == [2, 3]
    delta_ef = selection.columns["simulated_delta_ef_pct"]
    np.testing.assert_allclose(delta_ef[[0, 2, 3]], [2.0, 6.0, 4.0])
    assert np.isnan(delta_ef[[1, 4]]).all()
    assert selection.columns["simulated_delta_ef_trajectory_pct"].shape == (5, 3)
    assert selection.columns["simulated_ok"].tolist() == [True, False, True, True, False]
    reasons = selection.columns["simulation_failure_reason"]
    assert reasons[0] == "" and reasons[1].startswith("mechanics: ")
    assert selection.metrics == {"simulated": 5.0, "simulation_failures": 2.0}
    assert fake.workdirs == [tmp_path / "mechanics"] and fake.workdirs[0].is_dir()


def test_simulate_passes_its_fidelity_and_runs_only_its_simulators(space, mesh, tmp_path):
    calls: list = []
    simulators = {"mechanics": FakeSimulator(), "ep": FakeSimulator(("bz_stress_reduction_pct",))}
    settings = SimulateSettings(keep=5, simulators=["ep"], fidelity="coarse", score={"reward": 1})
    selection = SimulateFilter(settings).select(
        simulated_candidates(space), context_for(mesh, tmp_path, simulators, calls)
    )
    assert calls == [("ep", "coarse")]
    assert set(selection.columns) == {
        "simulated_bz_stress_reduction_pct",
        "simulated_ok",
        "simulation_failure_reason",
    }
    assert selection.keep.tolist() == [0, 2, 3]  # equal scores: ties by index, failures dropped


def test_simulate_refuses_two_simulators_with_one_output(space, mesh, tmp_path):
    simulators = {"mechanics": FakeSimulator(), "febio": FakeSimulator(("delta_ef_pct",))}
    simulate = SimulateFilter(SimulateSettings(keep=1))
    with pytest.raises(ValueError, match="'mechanics' and 'febio' both produce"):
        simulate.select(simulated_candidates(space), context_for(mesh, tmp_path, simulators))
    with pytest.raises(ValueError, match="'mechanics' and 'febio' both produce"):
        simulate.produces({"mechanics": ("delta_ef_pct",), "febio": ("delta_ef_pct",)})


def test_simulate_declares_what_it_reads_and_produces():
    simulate = SimulateFilter(
        SimulateSettings(keep=3, score={"simulated_delta_ef_pct": 1.0, "reward": 0.5})
    )
    assert simulate.reads == ("reward",)
    produced = simulate.produces({"mechanics": ("delta_ef_pct",), "ep": ("rvi_ms",)})
    assert produced == (
        "simulated_delta_ef_pct",
        "simulated_rvi_ms",
        "simulated_ok",
        "simulation_failure_reason",
    )
    only_ep = SimulateFilter(SimulateSettings(keep=3, simulators=["ep"]))
    assert only_ep.produces({"mechanics": ("delta_ef_pct",), "ep": ("rvi_ms",)}) == (
        "simulated_rvi_ms",
        "simulated_ok",
        "simulation_failure_reason",
    )
    with pytest.raises(ValueError, match=r"\['febio'\] that the pipeline does not configure"):
        SimulateFilter(SimulateSettings(keep=3, simulators=["febio"])).produces({"ep": ()})


def test_simulate_settings_need_a_weighted_score_and_a_count():
    with pytest.raises(ValidationError, match="non-zero weight"):
        SimulateSettings(keep=1, score={"simulated_delta_ef_pct": 0.0})
    with pytest.raises(ValidationError, match="keep"):
        SimulateSettings()


# --- pareto ------------------------------------------------------------------------------------


def pareto_candidates(space: DesignSpace) -> Candidates:
    # Front: rows 0, 1, 2; row 3 is dominated by row 2, row 4 by row 3; row 5 is unrated.
    return candidates_with(
        space, a=[1.0, 0.0, 0.6, 0.5, 0.2, np.nan], b=[0.0, 1.0, 0.6, 0.5, 0.1, 2.0]
    )


def test_pareto_puts_the_first_front_first_then_later_fronts(space, mesh, tmp_path):
    pareto = ParetoFilter(ParetoSettings(objectives={"a": "max", "b": "max"}, keep=10))
    selection = pareto.select(pareto_candidates(space), context_for(mesh, tmp_path))
    assert sorted(selection.keep[:3].tolist()) == [0, 1, 2]
    assert selection.keep[3:].tolist() == [3, 4]
    assert selection.keep[0] == 2  # equal weights: the balanced point
    assert selection.columns["pareto_rank"].tolist() == [0, 0, 0, 1, 2, -1]
    crowding = selection.columns["crowding_distance"]
    assert np.isinf(crowding[[0, 1]]).all() and np.isnan(crowding[5])
    assert selection.metrics["pareto_front_size"] == 3.0
    assert pareto.reads == ("a", "b")


def test_pareto_honours_minimised_objectives(space, mesh, tmp_path):
    pareto = ParetoFilter(ParetoSettings(objectives={"a": "max", "b": "min"}, keep=10))
    selection = pareto.select(pareto_candidates(space), context_for(mesh, tmp_path))
    # Highest a with lowest b (row 0) dominates every other rated row.
    assert selection.keep[0] == 0
    assert selection.columns["pareto_rank"][0] == 0
    assert (selection.columns["pareto_rank"][1:5] > 0).all()
    assert selection.metrics["pareto_front_size"] == 1.0


@pytest.mark.parametrize(("weights", "first"), [({"a": 1, "b": 0}, 0), ({"a": 0, "b": 1}, 1)])
def test_pareto_weights_pick_the_preferred_front_point(space, mesh, tmp_path, weights, first):
    settings = ParetoSettings(objectives={"a": "max", "b": "max"}, weights=weights)
    kept = ParetoFilter(settings).select(pareto_candidates(space), context_for(mesh, tmp_path))
    assert kept.keep.tolist() == [first]


def test_pareto_hypervolume_grows_with_a_dominating_front(space, mesh, tmp_path):
    pareto = ParetoFilter(ParetoSettings(objectives={"a": "max", "b": "max"}))
    corners = ([0.0, 1.0, 0.2], [0.0, 0.2, 1.0])  # the same range of entering values
    weaker = candidates_with(space, a=[*corners[0], 0.5], b=[*corners[1], 0.5])
    stronger = candidates_with(space, a=[*corners[0], 0.8], b=[*corners[1], 0.8])
    low = pareto.select(weaker, context_for(mesh, tmp_path)).metrics["pareto_hypervolume"]
    high = pareto.select(stronger, context_for(mesh, tmp_path)).metrics["pareto_hypervolume"]
    assert 0 < low < high


def test_pareto_handles_one_candidate_and_one_objective(space, mesh, tmp_path):
    context = context_for(mesh, tmp_path)
    one = ParetoFilter(ParetoSettings(objectives={"a": "max", "b": "min"}, keep=3))
    selection = one.select(candidates_with(space, a=[2.0], b=[1.0]), context)
    assert selection.keep.tolist() == [0]
    assert selection.metrics["pareto_hypervolume"] > 0
    single = ParetoFilter(ParetoSettings(objectives={"a": "min"}, keep=2))
    selection = single.select(candidates_with(space, a=[3.0, 1.0, 1.0, np.nan]), context)
    assert selection.keep.tolist() == [1, 2]
    assert selection.columns["pareto_rank"].tolist() == [1, 0, 0, -1]


def test_pareto_defaults_are_the_seeds_objectives():
    pareto = ParetoFilter(ParetoSettings())
    assert pareto.settings.objectives == {
        "simulated_delta_ef_pct": "max",
        "simulated_bz_stress_reduction_pct": "max",
        "simulated_reentry_vulnerability_index_ms": "max",
    }
    assert pareto.settings.keep == 1


def test_pareto_settings_validation():
    with pytest.raises(ValidationError, match="objectives"):
        ParetoSettings(objectives={})
    with pytest.raises(ValidationError, match="weights name c, which are not objectives"):
        ParetoSettings(objectives={"a": "max", "b": "min"}, weights={"a": 1.0, "c": 1.0})
    with pytest.raises(ValidationError, match="weights lack objectives b"):
        ParetoSettings(objectives={"a": "max", "b": "min"}, weights={"a": 1.0})
    with pytest.raises(ValidationError, match="objectives"):
        ParetoSettings(objectives={"a": "biggest"})


# --- registration ------------------------------------------------------------------------------


def test_the_five_filters_are_registered_and_build():
    registry = PluginRegistry.discover()
    assert set(registry.names("filter")) >= FILTER_NAMES
    for name in FILTER_NAMES:
        assert registry.get("filter", name).package == "hydraopt"
        raw = {"keep": 5} if name == "simulate" else {}
        instance = registry.create("filter", name, registry.validate_settings("filter", name, raw))
        assert isinstance(instance, Filter)
