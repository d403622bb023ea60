"""Stage ``dataset``: the training table, one row per (patient, design) simulated successfully.

Rows join the cohort, each patient's designs and every simulator's outcomes for them. A row is
left out when any simulator marked its design failed (an infeasible gel, a patient beyond the
model) or unstable (an output ``stable`` of 0); left-out rows are counted by reason. Each row
is labelled ``is_optimal`` when every configured threshold is reached (the seeds' delta-EF >=
3 %-points and border-zone stress reduction >= 15%) and each patient goes to one split
(:mod:`hydraopt.splits`).

The artifact ``dataset`` is one HDF5 file with three groups, aligned row for row:

* ``features``: the 19 numerical input features (:data:`DATASET_FEATURES`), float64;
* ``outputs``: every simulator output, scalar ``[rows]`` or trajectory ``[rows, times]``;
* ``rows``: ``patient_id``, ``origin``, ``design_index`` (the row in the patient's designs),
  ``polymer_index``, ``polymer``, ``psmiles``, ``category``, ``is_optimal`` and ``split``.

Its metadata holds the feature and output units, the thresholds, the split shares, seed and
patients, the left-out counts and the simulators' settings. ``hydraopt dataset summary`` prints
it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from hydraopt.config import Pipeline, PipelineConfig
from hydraopt.domain import Cohort, DesignBatch, DesignSpace, Patient
from hydraopt.domain.training import DATASET_FEATURES, feature_columns
from hydraopt.errors import DataError
from hydraopt.plugin_calls import PluginFailure
from hydraopt.registry import PluginRegistry
from hydraopt.seeding import derive_seed
from hydraopt.splits import assign_splits, split_quotas
from hydraopt.stages.base import Stage, StageContext
from hydraopt.stages.designs import load_space
from hydraopt.stages.simulate import unit_key
from hydraopt.store import ShardedArtifact

# A simulator output of this name and unit "1" says whether the design's simulation settled.
STABLE_OUTPUT = "stable"
REASON_LENGTH = 100  # characters of a failure reason kept for the counts


def _run(context: StageContext) -> None:
    config = context.config
    store = context.store
    cohort = Cohort.from_columns(store.tables("cohort").table("patients"))
    space = load_space(context)
    designs = store.shards("designs")
    outcomes = store.shards("outcomes")
    simulators = config.dataset_simulators()
    specs = _output_specs(outcomes, simulators)
    parts: list[dict[str, dict[str, np.ndarray]]] = []
    left_out: Counter[str] = Counter()
    n_designs = 0
    for patient in cohort:
        batch = DesignBatch.from_columns(space, designs.table(patient.patient_id, "designs"))
        n_designs += len(batch)
        part = _patient_rows(patient, batch, space, outcomes, simulators, specs, left_out)
        if part is not None:
            parts.append(part)
    tables = _concatenate(parts, specs)
    thresholds = dict(config.dataset.is_optimal)
    rows = tables["rows"]
    rows["is_optimal"] = _is_optimal(tables["outputs"], thresholds, len(rows["patient_id"]))
    seed = derive_seed(config.study.seed, "dataset", "splits")
    fractions = config.dataset.splits.named()
    rows["split"] = _splits(rows, fractions, seed)
    patients = list(dict.fromkeys(rows["patient_id"]))
    meta = {
        "features": {f.name: {"unit": f.unit, "group": f.group} for f in DATASET_FEATURES},
        "outputs": specs,
        "is_optimal": {"thresholds": thresholds, "rule": "every output >= its threshold"},
        "splits": {"fractions": fractions, "seed": seed, "by": "patient, within origin"},
        "patients": patients,
        "patients_without_rows": [p for p in cohort.ids if p not in set(patients)],
        "designs_simulated": n_designs,
        "rows": len(rows["patient_id"]),
        "left_out": dict(left_out.most_common()),
        "simulators": {
            name: context.pipeline.plugin_settings[("simulators", name)].model_dump(mode="json")
            for name in simulators
        },
    }
    context.write_tables("dataset", tables, meta=meta)
    context.reporter.say("  " + summary_line(meta, rows))


def _output_specs(outcomes: ShardedArtifact, simulators: list[str]) -> dict[str, dict[str, Any]]:
    """Output name -> unit, shape, description and simulator, from the outcomes' metadata."""
    declared = outcomes.meta["simulators"]
    specs: dict[str, dict[str, Any]] = {}
    for simulator in simulators:
        for name, spec in declared[simulator]["outputs"].items():
            specs[name] = {**spec, "simulator": simulator}
    return specs


def _patient_rows(
    patient: Patient,
    designs: DesignBatch,
    space: DesignSpace,
    outcomes: ShardedArtifact,
    simulators: list[str],
    specs: dict[str, dict[str, Any]],
    left_out: Counter[str],
) -> dict[str, dict[str, np.ndarray]] | None:
    """One patient's successful rows, counting those left out by their first reason."""
    n = len(designs)
    keep = np.ones(n, dtype=bool)
    values: dict[str, np.ndarray] = {}
    for simulator in simulators:
        table = outcomes.table(unit_key(patient.patient_id, simulator), "outcomes")
        failed = np.asarray(table["failed"], dtype=bool)
        for row in np.flatnonzero(failed & keep):
            left_out[f"{simulator}: {str(table['failure_reason'][row])[:REASON_LENGTH]}"] += 1
        keep &= ~failed
        stable = specs.get(STABLE_OUTPUT, {})
        if stable.get("simulator") == simulator and stable["unit"] == "1":
            unstable = keep & (np.asarray(table[STABLE_OUTPUT]) == 0)
            if unstable.any():
                left_out[f"{simulator}: unstable (no settled beat)"] += int(unstable.sum())
            keep &= ~unstable
        for name, spec in specs.items():
            if spec["simulator"] == simulator:
                values[name] = np.asarray(table[name], dtype=np.float64)
    rows = np.flatnonzero(keep)
    if not len(rows):
        return None
    kept = designs.take(rows)
    polymers = space.polymers.polymers
    index = kept.polymer_index
    return {
        "features": feature_columns(patient, kept),
        "outputs": {name: column[rows] for name, column in values.items()},
        "rows": {
            "patient_id": np.full(len(rows), patient.patient_id, dtype=object),
            "origin": np.full(len(rows), patient.origin, dtype=object),
            "design_index": rows.astype(np.int64),
            "polymer_index": index.astype(np.int64),
            "polymer": np.array([polymers[i].name for i in index], dtype=object),
            "psmiles": np.array([polymers[i].psmiles for i in index], dtype=object),
            "category": np.array([polymers[i].category for i in index], dtype=object),
        },
    }


def _concatenate(
    parts: list[dict[str, dict[str, np.ndarray]]], specs: dict[str, dict[str, Any]]
) -> dict[str, dict[str, np.ndarray]]:
    if not parts:
        raise DataError(
            "dataset: no design of any patient simulated successfully with every simulator "
            "(see the outcomes' failure reasons: hydraopt's run summary lists them)"
        )
    return {
        group: {
            column: np.concatenate([part[group][column] for part in parts])
            for column in parts[0][group]
        }
        for group in ("features", "outputs", "rows")
    }


def _is_optimal(
    outputs: dict[str, np.ndarray], thresholds: dict[str, float], n_rows: int
) -> np.ndarray:
    """Rows reaching every threshold; a dataset of one class is an error naming the
    thresholds and how many rows reach each."""
    reached = {name: outputs[name] >= value for name, value in thresholds.items()}
    optimal = np.logical_and.reduce(list(reached.values()))
    if optimal.all() or not optimal.any():
        each = "; ".join(
            f"{name} >= {thresholds[name]:g}: {int(mask.sum())} rows "
            f"(max {np.nanmax(outputs[name]):.3g})"
            for name, mask in reached.items()
        )
        which = f"all {n_rows} rows are" if optimal.all() else f"none of the {n_rows} rows is"
        raise DataError(
            f"dataset.is_optimal: {which} optimal, so a classifier "
            f"has one class to learn; thresholds: {each}. Choose thresholds the simulated "
            "outcomes separate (the simulations are kept: only this stage reruns)"
        )
    return optimal


def _splits(rows: dict[str, np.ndarray], fractions: dict[str, float], seed: int) -> np.ndarray:
    """Each row's split, from its patient's."""
    ids = list(dict.fromkeys(rows["patient_id"]))
    position = {pid: i for i, pid in enumerate(ids)}
    patient_of_row = np.array([position[p] for p in rows["patient_id"]])
    origins = [""] * len(ids)
    for pid, origin in zip(rows["patient_id"], rows["origin"], strict=True):
        origins[position[pid]] = origin
    positives = np.bincount(patient_of_row, weights=rows["is_optimal"], minlength=len(ids))
    counts = np.bincount(patient_of_row, minlength=len(ids))
    try:
        split_of = assign_splits(ids, origins, positives / counts, fractions, seed)
    except ValueError as exc:
        raise DataError(f"dataset.splits: of the patients with rows, {exc}") from None
    return np.array([split_of[pid] for pid in ids], dtype=object)[patient_of_row]


def summary_line(meta: dict[str, Any], rows: dict[str, np.ndarray]) -> str:
    """Rows, patients, left-out rows with the commonest reason, positive rate and splits."""
    n = meta["rows"]
    left = sum(meta["left_out"].values())
    common = next(iter(meta["left_out"]), "")
    rows_in = Counter(rows["split"])
    patients_in = Counter(s for _, s in set(zip(rows["patient_id"], rows["split"], strict=True)))
    per_split = ", ".join(
        f"{name} {patients_in[name]} patients/{rows_in[name]} rows"
        for name in meta["splits"]["fractions"]
    )
    return (
        f"{n} rows of {len(meta['patients'])} patients; {left} of {meta['designs_simulated']} "
        f"left out" + (f" (commonest: {common})" if left else "") + f"; is_optimal "
        f"{100 * np.mean(rows['is_optimal']):.1f}%; {per_split}"
    )


# ---- checks before any stage runs ---------------------------------------------------------------


def _preflight(pipeline: Pipeline, registry: PluginRegistry) -> list[str]:
    """Thresholds that name no scalar output, two simulators producing one output name, and a
    cohort too small for the splits: each found before the expensive work starts."""
    from hydraopt.inputs import load_cohort

    config = pipeline.config
    where = f"{pipeline.path}"
    problems: list[str] = []
    producers: dict[str, list[str]] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for name in config.dataset_simulators():
        loc = ("simulators", name)
        choice = next(c for c in config.plugin_choices() if c[0] == loc)
        handle = registry.handle(choice[1], choice[2], pipeline.plugin_settings[loc])
        try:
            outputs = handle.build().outputs
        except PluginFailure:  # reported by validation, or by the simulate stage
            return problems
        for spec in outputs:
            producers.setdefault(spec.name, []).append(name)
            shapes[spec.name] = tuple(spec.shape)
    for output, names in producers.items():
        if len(names) > 1:
            problems.append(
                f"{where}: simulators: {' and '.join(names)} both produce {output!r}; a "
                "dataset column needs one source (configure one of them)"
            )
    for output in config.dataset.is_optimal:
        if output not in producers:
            problems.append(
                f"{where}: dataset.is_optimal.{output}: no configured simulator produces "
                f"{output!r} (outputs: {', '.join(sorted(producers)) or 'none'})"
            )
        elif shapes[output]:
            problems.append(
                f"{where}: dataset.is_optimal.{output}: {output!r} is a trajectory of "
                f"shape {shapes[output]}; a threshold needs a scalar output"
            )
    try:
        cohort = load_cohort(pipeline)
    except DataError:  # reported by validation, or by the cohort stage
        return problems
    by_origin = Counter(p.origin for p in cohort)
    try:
        split_quotas(dict(by_origin), config.dataset.splits.named())
    except ValueError as exc:
        problems.append(f"{where}: dataset.splits: the cohort's {exc}")
    return problems


def _depends_on(config: PipelineConfig) -> Any:
    return {
        "is_optimal": dict(config.dataset.is_optimal),
        "splits": config.dataset.splits.named(),
        "simulators": config.dataset_simulators(),
    }


STAGE = Stage(
    name="dataset",
    version="1",
    sections=("dataset",),
    description="join designs and outcomes into the training table, label and split it",
    inputs=("cohort", "polymers", "designs", "outcomes"),
    outputs={"dataset": "tables"},
    enabled=lambda config: bool(config.simulators) and config.dataset is not None,
    depends_on=_depends_on,
    plugins=lambda config: [],
    run=_run,
    preflight=_preflight,
)
