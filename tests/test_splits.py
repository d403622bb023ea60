"""Patient-aware splits: exact patient counts per split, origins spread proportionally, and
optimal designs spread over the splits."""

import numpy as np
import pytest

from hydraopt.splits import assign_splits, largest_remainder, split_quotas

SEEDS = {"train": 0.7, "validation": 0.2, "test": 0.1}


def test_the_seeds_split_of_ten_real_and_fifty_synthetic_patients():
    quotas = split_quotas({"real": 10, "synthetic": 50}, SEEDS)
    assert quotas == {
        "real": {"train": 7, "validation": 2, "test": 1},
        "synthetic": {"train": 35, "validation": 10, "test": 5},
    }


def test_largest_remainder_shares_whole_patients():
    assert largest_remainder(6, SEEDS) == {"train": 4, "validation": 1, "test": 1}
    assert sum(largest_remainder(13, SEEDS).values()) == 13


def test_a_split_the_remainders_leave_empty_gets_a_patient():
    # 5 patients: 3.5 / 1 / 0.5 -> train 4, test 0 by remainders; test takes one from train.
    quotas = split_quotas({"": 5}, SEEDS)
    assert quotas[""] == {"train": 3, "validation": 1, "test": 1}


def test_too_few_patients_for_the_splits_is_an_error():
    with pytest.raises(ValueError, match="2 patient"):
        split_quotas({"": 2}, SEEDS)
    assert split_quotas({"": 2}, {"train": 0.5, "validation": 0.5, "test": 0.0})[""] == {
        "train": 1,
        "validation": 1,
        "test": 0,
    }


def test_patients_are_split_by_origin_and_spread_over_positive_rates():
    rng = np.random.default_rng(0)
    ids = [f"P{i:02d}" for i in range(60)]
    origins = ["real"] * 10 + ["synthetic"] * 50
    rates = rng.beta(1, 3, 60)
    split_of = assign_splits(ids, origins, rates, SEEDS, seed=1)
    assert set(split_of) == set(ids)  # every patient in exactly one split
    for origin, expected in (("real", (7, 2, 1)), ("synthetic", (35, 10, 5))):
        members = [pid for pid, o in zip(ids, origins, strict=True) if o == origin]
        counts = [sum(split_of[p] == s for p in members) for s in SEEDS]
        assert tuple(counts) == expected
    mean = rates.mean()
    for split in SEEDS:
        in_split = [r for pid, r in zip(ids, rates, strict=True) if split_of[pid] == split]
        assert abs(np.mean(in_split) - mean) < 0.25 * mean
    # Stratification does better than chance: a random split spreads positives worse.
    random_gaps = []
    for trial in range(200):
        order = np.random.default_rng(trial).permutation(60)
        parts = np.split(rates[order], [42, 54])
        random_gaps.append(max(abs(p.mean() - mean) for p in parts))
    ours = max(
        abs(np.mean([r for pid, r in zip(ids, rates, strict=True) if split_of[pid] == s]) - mean)
        for s in SEEDS
    )
    assert ours < np.percentile(random_gaps, 10)


def test_splits_are_seeded():
    ids = [f"P{i}" for i in range(20)]
    rates = np.zeros(20)
    first = assign_splits(ids, [""] * 20, rates, SEEDS, seed=3)
    assert assign_splits(ids, [""] * 20, rates, SEEDS, seed=3) == first
    assert assign_splits(ids, [""] * 20, rates, SEEDS, seed=4) != first
