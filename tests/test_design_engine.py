"""Stage 3's design engine for one patient: candidates stream chunk by chunk through the
chain's streaming prefix (row-wise links, then one ranking link) with the same result as the
filters applied to every candidate at once, never holding more than the ranking link could
keep; the later links run on the survivors; the funnel, the finalists and the chosen design
are recorded, and a link that keeps nothing stops the chain and says so."""

import math

import numpy as np
import pytest

from hydraopt import design_engine
from hydraopt.design_engine import FINALIST_LIMIT, Link, screen_patient, streaming_prefix
from hydraopt.plugin_types import Candidates, Selection
from hydraopt.testing import example_patient, example_space
from hydraopt_plugins.filters import DiversitySettings, ThresholdSettings, TopPercentSettings
from hydraopt_plugins.filters.diversity import DiversityFilter
from hydraopt_plugins.filters.ranking import TopPercentFilter
from hydraopt_plugins.filters.threshold import ThresholdFilter

N = 3000
SPACE = example_space()
PATIENT = example_patient()


def candidate_data(n: int = N, seed: int = 0, reward=None):
    """``n`` designs and their columns: ``id`` (the row), ``a`` (bounded by thresholds),
    ``reward`` (distinct unless given)."""
    rng = np.random.default_rng(seed)
    designs = SPACE.designs_from_unit(
        rng.integers(0, 2, n), rng.integers(0, 4, n), rng.random((n, 4))
    )
    columns = {
        "id": np.arange(n, dtype=np.float64),
        "a": rng.normal(size=n),
        "reward": rng.normal(size=n) if reward is None else np.asarray(reward, dtype=float),
    }
    return designs, columns


class Scorer:
    """The surrogate's stand-in: each chunk's slice of precomputed columns, in order; records
    the size of every chunk it scores."""

    def __init__(self, columns):
        self.columns, self.start, self.calls = columns, 0, []

    def __call__(self, designs):
        n = len(designs)
        part = {k: v[self.start : self.start + n] for k, v in self.columns.items()}
        self.start += n
        self.calls.append(n)
        return part


def chunked(designs, size):
    for start in range(0, len(designs), size):
        yield designs.take(np.arange(start, min(len(designs), start + size)))


def threshold(position=1, **bounds):
    settings = ThresholdSettings(**bounds)
    return Link(position, "threshold", settings.model_dump(), ThresholdFilter(settings))


def top_percent(position=2, percent=10.0, by="reward"):
    settings = TopPercentSettings(percent=percent, by=by)
    return Link(position, "top-percent", settings.model_dump(), TopPercentFilter(settings))


class Recorder:
    """Keeps the first ``keep`` candidates (all by default) in ``order``: 'as-is' or
    'reversed'; remembers what entered it. Neither row-wise nor ranking."""

    reads = ()

    def __init__(self, keep=None, order="as-is"):
        self.keep, self.order, self.seen = keep, order, []

    def select(self, candidates, context):
        self.seen.append(candidates)
        rows = np.arange(len(candidates) if self.keep is None else min(self.keep, len(candidates)))
        return Selection(rows[::-1] if self.order == "reversed" else rows)


class FakeSimulate:
    """Adds ``simulated_x`` (the id halved), a 2-D ``simulated_traj``, a boolean
    ``simulated_ok`` and an integer ``sim_rank``, and keeps the ``keep`` best by
    ``simulated_x``."""

    reads = ()

    def __init__(self, keep, follow_up=(0.25, 0.5, 1.0)):
        self.keep, self.follow_up = keep, follow_up

    def select(self, candidates, context):
        n = len(candidates)
        x = candidates["id"] * 0.5
        columns = {
            "simulated_x": x,
            "simulated_traj": np.outer(x, self.follow_up),
            "simulated_ok": np.ones(n, dtype=bool),
            "sim_rank": np.arange(n, dtype=np.int64),
        }
        return Selection(np.argsort(-x, kind="stable")[: self.keep], columns, {"simulated": n})


def link(position, name, instance, **settings):
    return Link(position, name, settings, instance)


def run(links, columns, designs, chunk=100, refine=None, contexts=None):
    scorer = Scorer(columns)
    refined = []

    def refine_fn(candidates):
        refined.append(len(candidates))
        extra = {"refined": np.ones(len(candidates), dtype=bool)}
        return candidates.with_columns(extra) if refine is None else refine(candidates)

    def context_for(link):
        if contexts is not None:
            contexts.append(link.position)
        return None

    result = screen_patient(
        PATIENT, chunked(designs, chunk), len(designs), scorer, links, refine_fn, context_for
    )
    return result, scorer, refined


def all_at_once(designs, columns, links):
    """The chain's filters applied to every candidate at once; the kept counts per link."""
    candidates, kept = Candidates(PATIENT, designs, columns), []
    for item in links:
        selection = item.filter.select(candidates, None)
        candidates = candidates.take(np.asarray(selection.keep, dtype=np.int64))
        kept.append(len(candidates))
    return candidates, kept


# --- the streaming prefix ------------------------------------------------------------------------


def test_the_streaming_prefix_is_row_wise_links_then_one_ranking_link():
    diversity = Link(9, "diversity", {}, DiversityFilter(DiversitySettings(keep=5)))
    assert streaming_prefix([threshold(1), threshold(2), top_percent(3), top_percent(4)]) == 3
    assert streaming_prefix([top_percent(1), threshold(2)]) == 1
    assert streaming_prefix([threshold(1), diversity, top_percent(3)]) == 1
    assert streaming_prefix([diversity, threshold(2)]) == 0


@pytest.mark.parametrize("chunk", [7, 128, 1000, N])
@pytest.mark.parametrize("percent", [1.0, 10.0, 33.3])
def test_streaming_keeps_exactly_what_the_filters_keep_at_once(chunk, percent):
    designs, columns = candidate_data()
    links = [threshold(1, min={"a": -0.5}), top_percent(2, percent)]
    expected, kept = all_at_once(designs, columns, links)

    result, scorer, _ = run(links, columns, designs, chunk)

    assert sum(scorer.calls) == N and max(scorer.calls) <= chunk
    # With the whole chain streamed, the finalists are the prefix's survivors, best first.
    np.testing.assert_array_equal(result.finalists["id"], expected["id"])
    np.testing.assert_array_equal(
        result.finalists.designs.stiffness_kpa, expected.designs.stiffness_kpa
    )
    rows = [(r.position, r.filter, r.entered, r.kept) for r in result.funnel]
    assert rows == [
        (0, "generated", N, N),
        (1, "threshold", N, kept[0]),
        (2, "top-percent", kept[0], kept[1]),
    ]
    assert kept[1] == math.ceil(round(percent * kept[0] / 100, 9))
    assert result.candidates == N and result.emptied_by is None


def test_a_later_link_gets_the_same_candidates_in_the_same_order_as_at_once():
    designs, columns = candidate_data(seed=4)
    links = [threshold(1, min={"a": -1.0}, max={"a": 1.5}), top_percent(2, 5.0)]
    expected, _ = all_at_once(designs, columns, links)
    recorder = Recorder()
    result, _, _ = run([*links, link(3, "recorder", recorder)], columns, designs, chunk=333)
    (entered,) = recorder.seen
    np.testing.assert_array_equal(entered["id"], expected["id"])
    np.testing.assert_array_equal(result.finalists["id"], expected["id"])


def test_ties_in_the_ranking_go_to_the_earlier_candidate_as_at_once():
    rewards = np.random.default_rng(0).integers(0, 3, N).astype(float)  # many ties
    designs, columns = candidate_data(reward=rewards)
    links = [threshold(1, min={"a": -0.5}), top_percent(2, 10.0)]
    expected, _ = all_at_once(designs, columns, links)
    result, _, _ = run(links, columns, designs, chunk=97)
    np.testing.assert_array_equal(result.finalists["id"], expected["id"])


def test_a_candidate_without_a_score_is_never_kept_while_streaming():
    rewards = np.full(N, np.nan)
    rewards[:40] = np.arange(40.0)
    designs, columns = candidate_data(reward=rewards)
    links = [threshold(1, min={"a": -0.5}), top_percent(2, 50.0)]
    expected, _ = all_at_once(designs, columns, links)
    result, _, _ = run(links, columns, designs, chunk=100)
    assert np.isfinite(result.finalists["reward"]).all()
    np.testing.assert_array_equal(result.finalists["id"], expected["id"])


# --- bounded memory, refine on the survivors only ------------------------------------------------


def test_the_engine_never_holds_more_than_the_ranking_link_can_keep(monkeypatch):
    n, chunk, percent = 20_000, 256, 1.0
    designs, columns = candidate_data(n)
    ranking = top_percent(2, percent)
    capacity = ranking.filter.kept_count(n)
    sizes = []
    original = Candidates.__post_init__

    def watched(self):
        original(self)
        sizes.append(len(self.designs))

    monkeypatch.setattr(Candidates, "__post_init__", watched)
    contexts = []
    later = Recorder(keep=50)
    result, scorer, refined = run(
        [threshold(1, min={"a": -3.0}), ranking, link(3, "keep-50", later)],
        columns,
        designs,
        chunk,
        contexts=contexts,
    )
    monkeypatch.undo()

    # Chunk by chunk: at most twice the ranking link's running best set plus one chunk at a time.
    assert len(scorer.calls) == math.ceil(n / chunk) and max(scorer.calls) <= chunk
    assert max(sizes) <= 2 * capacity + chunk, (max(sizes), capacity)
    # The surrogate's full predictions are asked for the prefix's survivors alone, once.
    survivors = result.funnel[2].kept
    assert refined == [survivors]
    assert survivors <= capacity
    assert survivors == ranking.filter.kept_count(result.funnel[2].entered)
    # What refine added reaches the later links; only they get a context.
    (entered,) = later.seen
    assert len(entered) == survivors and entered["refined"].all()
    assert contexts == [3]
    assert result.funnel[3].entered == survivors and result.funnel[3].kept == 50


# --- a link that keeps nothing -------------------------------------------------------------------


def test_a_streaming_link_that_keeps_nothing_stops_the_chain_and_says_so():
    designs, columns = candidate_data()
    contexts = []
    later = Recorder()
    result, _, refined = run(
        [threshold(1, min={"a": 1000.0}), top_percent(2), link(3, "recorder", later)],
        columns,
        designs,
        contexts=contexts,
    )
    assert result.emptied_by is not None and result.emptied_by.position == 1
    assert result.emptied_by.name == "threshold"
    message = result.emptied_message()
    assert "threshold" in message and "'a': 1000.0" in message
    assert f"kept none of {N} candidates" in message
    assert [(r.filter, r.entered, r.kept) for r in result.funnel[:2]] == [
        ("generated", N, N),
        ("threshold", N, 0),
    ]
    assert result.chosen is None and refined == [] and later.seen == [] and contexts == []


def test_a_later_link_that_keeps_nothing_keeps_the_finalists_that_entered_it():
    designs, columns = candidate_data()
    dropper = Recorder(keep=0)
    result, _, _ = run(
        [
            threshold(1, min={"a": -0.5}),
            top_percent(2),
            link(3, "fake-simulate", FakeSimulate(keep=6), keep=6),
            link(4, "drop-all", dropper),
        ],
        columns,
        designs,
    )
    entered_simulate = result.funnel[2].kept
    assert result.emptied_by is not None and result.emptied_by.position == 4
    assert result.emptied_message() == "filter 4 (drop-all) kept none of 6 candidates"
    assert [(r.position, r.entered, r.kept) for r in result.funnel[3:]] == [
        (3, entered_simulate, 6),
        (4, 6, 0),
    ]
    finalists = result.finalists
    assert len(finalists) == entered_simulate
    assert np.count_nonzero(result.last_link == 4) == 6
    assert np.isfinite(finalists["simulated_x"]).all()
    assert not result.survivor.any() and result.chosen is None


def test_the_message_of_an_emptied_link_names_every_setting():
    designs, columns = candidate_data(300)
    links = [threshold(1, min={"a": 50.0}, max={"reward": 2.0})]
    result, _, _ = run(links, columns, designs)
    message = result.emptied_message()
    assert message.startswith("filter 1 (threshold: ")
    assert "min = {'a': 50.0}" in message and "max = {'reward': 2.0}" in message
    assert message.endswith("kept none of 300 candidates")


# --- finalists, the last link reached, the chosen design -----------------------------------------


def test_finalists_record_how_far_each_got_and_the_columns_later_links_added():
    designs, columns = candidate_data()
    last = Recorder(order="reversed")
    result, _, _ = run(
        [
            threshold(1, min={"a": -0.5}),
            top_percent(2, 10.0),
            link(3, "keep-20", Recorder(keep=20)),
            link(4, "fake-simulate", FakeSimulate(keep=5)),
            link(5, "reverse", last),
        ],
        columns,
        designs,
    )
    entered = result.funnel[2].kept
    finalists = result.finalists
    assert len(finalists) == entered <= FINALIST_LIMIT
    assert [r.kept for r in result.funnel[3:]] == [20, 5, 5]
    # The first 20 went on; of those, the five with the largest id reached the last link.
    reached_simulate = np.arange(entered) < 20
    best_five = np.sort(finalists["id"][:20])[-5:]
    reached_last = np.isin(finalists["id"], best_five)
    expected_last = np.where(reached_last, 5, np.where(reached_simulate, 4, 3))
    np.testing.assert_array_equal(result.last_link, expected_last)
    np.testing.assert_array_equal(result.survivor, reached_last)
    # Columns a later link added: its values where a row reached it, else NaN / False / -1.
    x = finalists["simulated_x"]
    np.testing.assert_array_equal(x[reached_simulate], finalists["id"][reached_simulate] * 0.5)
    assert np.isnan(x[~reached_simulate]).all()
    assert finalists["simulated_traj"].shape == (entered, 3)
    assert np.isnan(finalists["simulated_traj"][~reached_simulate]).all()
    np.testing.assert_array_equal(finalists["simulated_ok"], reached_simulate)
    assert (finalists["sim_rank"][~reached_simulate] == -1).all()
    np.testing.assert_array_equal(finalists["sim_rank"][reached_simulate], np.arange(20))
    # The chosen design is the first survivor of the last link: 'reverse' put the fifth best
    # by simulated_x first.
    assert result.chosen is not None and result.survivor[result.chosen]
    assert finalists["id"][result.chosen] == best_five[0]
    assert last.seen[0]["id"][-1] == best_five[0]
    assert result.metrics == {"simulated": 20}


def test_a_later_link_with_another_trajectory_shape_replaces_the_column_whole():
    """FEBio validating with one follow-up time after the reference mechanics' four: the
    finalists' column is the later link's, never the earlier one with the new values
    broadcast into it."""
    designs, columns = candidate_data()
    result, _, _ = run(
        [
            threshold(1, min={"a": -0.5}),
            top_percent(2, 10.0),
            link(3, "reference", FakeSimulate(keep=10, follow_up=(0.25, 0.5, 1.0, 2.0))),
            link(4, "febio", FakeSimulate(keep=3, follow_up=(1.0,))),
        ],
        columns,
        designs,
    )
    finalists = result.finalists
    trajectory = finalists["simulated_traj"]
    assert trajectory.shape == (len(finalists), 1)
    reached = result.last_link == 4
    np.testing.assert_array_equal(trajectory[reached, 0], finalists["id"][reached] * 0.5)
    assert np.isnan(trajectory[~reached]).all()


def test_finalists_start_at_the_first_link_with_few_enough_entrants(monkeypatch):
    monkeypatch.setattr(design_engine, "FINALIST_LIMIT", 15)
    designs, columns = candidate_data()
    result, _, _ = run(
        [
            threshold(1, min={"a": -0.5}),
            top_percent(2, 10.0),
            link(3, "keep-20", Recorder(keep=20)),  # 200-odd entrants: too many
            link(4, "keep-12", Recorder(keep=12)),  # 20: too many
            link(5, "keep-3", Recorder(keep=3)),  # 12 entrants: recorded from here
        ],
        columns,
        designs,
    )
    assert len(result.finalists) == 12
    assert (result.last_link == 5).all()
    np.testing.assert_array_equal(result.survivor, np.arange(12) < 3)
    assert result.chosen == 0


def test_a_fully_streamed_chain_chooses_its_best_survivor():
    designs, columns = candidate_data()
    result, _, _ = run([threshold(1, min={"a": -0.5}), top_percent(2, 1.0)], columns, designs)
    kept = result.funnel[2].kept
    assert len(result.finalists) == kept and result.survivor.all()
    assert (result.last_link == 2).all()
    assert result.chosen == 0
    assert result.finalists["reward"][0] == result.finalists["reward"].max()


def test_the_cascade_learns_the_reward_it_is_taught_and_keeps_the_best():
    """The distilled model ranks designs as the reward it learnt from, whatever the sample
    size (down to fewer rows than a batch), and its running best set is the best by it."""
    from hydraopt.cascade import best_by_distilled, distil, in_chunks

    for n in (300, 5000):
        designs, _ = candidate_data(n, seed=n)
        reward = 2.0 * designs.unit_coordinates()[:, 0] + 0.5 * (designs.coverage_index == 2)
        model = distil(designs, reward, 4, seed=0)
        predicted = model.predict(designs)
        assert np.corrcoef(predicted, reward)[0, 1] > 0.95, n
    pool, positions, seen = best_by_distilled(in_chunks(designs, 700), model, 50)
    assert seen == n and len(pool) == 50
    np.testing.assert_array_equal(positions, np.sort(np.argsort(-predicted, kind="stable")[:50]))
