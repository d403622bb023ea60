"""Patient-aware splits of a training dataset: no patient in two splits.

A surrogate must generalise to the next patient, and one patient's designs are correlated, so
patients, never rows, are split (seeds/001, section 3.5). Within each origin (real or
synthetic patients) the splits get shares of its patients by the largest-remainder method, so
both origins are spread proportionally, as in the seeds (7/2/1 real and 35/10/5 synthetic of
10 and 50). Within an origin, patients are ordered by their share of optimal designs (ties in
a seeded random order) and dealt out to the split furthest below its quota: every split gets
patients from the whole range of positive rates, which stratifies on ``is_optimal`` as
scikit-learn's ``StratifiedGroupKFold`` does, while keeping the patient counts exact (that
class balances folds on class counts, not group counts, and can leave a 10% split with more or
fewer patients than asked).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

SPLIT_NAMES = ("train", "validation", "test")


def largest_remainder(n: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """``n`` items shared by ``fractions`` (summing to 1) in whole numbers; remainders break
    ties in the order the fractions are given."""
    exact = {name: n * share for name, share in fractions.items()}
    counts = {name: int(np.floor(value + 1e-9)) for name, value in exact.items()}
    left = n - sum(counts.values())
    order = sorted(fractions, key=lambda name: -(exact[name] - counts[name]))  # stable
    for name in order[:left]:
        counts[name] += 1
    return counts


def split_quotas(
    n_by_origin: Mapping[str, int], fractions: Mapping[str, float]
) -> dict[str, dict[str, int]]:
    """Patients per origin and split. A split with a positive share that the remainders leave
    empty takes one patient from the split furthest over its exact share (in the largest
    origin that has one to give). Raises ``ValueError`` when there are fewer patients than
    splits with a positive share."""
    wanted = [name for name, share in fractions.items() if share > 0]
    total = sum(n_by_origin.values())
    if total < len(wanted):
        raise ValueError(
            f"{total} patient(s) cannot fill the {len(wanted)} splits with a positive share "
            f"({', '.join(wanted)}): no patient may be in two splits"
        )
    quotas = {origin: largest_remainder(n, fractions) for origin, n in n_by_origin.items()}
    for name in wanted:
        if sum(q[name] for q in quotas.values()):
            continue
        surplus = {
            other: sum(q[other] for q in quotas.values()) - total * fractions[other]
            for other in fractions
            if sum(q[other] for q in quotas.values()) > 1
        }
        donor = max(surplus, key=surplus.get)
        origin = max((o for o in quotas if quotas[o][donor]), key=lambda o: n_by_origin[o])
        quotas[origin][donor] -= 1
        quotas[origin][name] += 1
    return quotas


def assign_splits(
    patient_ids: Sequence[str],
    origins: Sequence[str],
    positive_rates: Sequence[float],
    fractions: Mapping[str, float],
    seed: int,
) -> dict[str, str]:
    """Each patient's split, stratified by origin and spread over positive rates."""
    ids = list(patient_ids)
    by_origin: dict[str, list[int]] = {}
    for i, origin in enumerate(origins):
        by_origin.setdefault(origin, []).append(i)
    quotas = split_quotas({o: len(rows) for o, rows in by_origin.items()}, fractions)
    rng = np.random.default_rng(seed)
    rates = np.asarray(positive_rates, dtype=float)
    assigned: dict[str, str] = {}
    for origin in sorted(by_origin):
        members = np.array(by_origin[origin])
        members = members[rng.permutation(len(members))]
        members = members[np.argsort(rates[members], kind="stable")]
        quota = quotas[origin]
        filled = dict.fromkeys(fractions, 0)
        for i in members:
            open_splits = [name for name in fractions if filled[name] < quota[name]]
            name = min(open_splits, key=lambda s: (filled[s] + 0.5) / quota[s])
            filled[name] += 1
            assigned[ids[i]] = name
    return assigned
