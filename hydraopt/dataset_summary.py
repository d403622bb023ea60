"""``hydraopt dataset summary RUN_DIR``: what a run's training dataset holds, at a glance."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.errors import StoreError
from hydraopt.splits import SPLIT_NAMES
from hydraopt.store import RunStore


@dataclass(frozen=True)
class DatasetSummary:
    """Counts, the positive rate, per-split sizes and per-output ranges of a dataset."""

    path: Path
    meta: dict[str, Any]
    rows: int
    positive_rate: float
    # name, patients, rows, positive rate, patients per origin
    splits: list[tuple[str, int, int, float, Counter[str]]]
    outputs: list[tuple[str, str, str, float, float, float]]  # name, unit, shape, min, median, max

    def header_lines(self) -> list[str]:
        meta = self.meta
        left = meta["left_out"]
        thresholds = ", ".join(f"{k} >= {v:g}" for k, v in meta["is_optimal"]["thresholds"].items())
        lines = [
            f"dataset: {self.path}",
            f"rows: {self.rows:,} of {meta['designs_simulated']:,} designs simulated, "
            f"{len(meta['patients'])} patients",
            f"is_optimal: {100 * self.positive_rate:.2f}% ({thresholds})",
        ]
        if meta["patients_without_rows"]:
            lines.append(f"patients without rows: {', '.join(meta['patients_without_rows'])}")
        if left:
            lines.append(f"left out: {sum(left.values()):,}")
            lines += [f"  {count:>9,}  {reason}" for reason, count in left.items()]
        return lines


def summarise_dataset(run_dir: Path) -> DatasetSummary:
    """Read the ``dataset`` artifact of ``run_dir`` and summarise it."""
    store = RunStore(run_dir)
    if store.stage_record("dataset") is None:
        raise StoreError(
            f"{run_dir}: no finished dataset stage (run a pipeline with a [dataset] section "
            "and simulators first)"
        )
    artifact = store.tables("dataset")
    rows = artifact.table("rows")
    outputs = artifact.table("outputs")
    meta = artifact.meta
    optimal = np.asarray(rows["is_optimal"], dtype=bool)
    splits = []
    for name in SPLIT_NAMES:
        mask = rows["split"] == name
        patients = dict(zip(rows["patient_id"][mask], rows["origin"][mask], strict=True))
        origins = Counter(origin or "not stated" for origin in patients.values())
        rate = float(optimal[mask].mean()) if mask.any() else float("nan")
        splits.append((name, len(patients), int(mask.sum()), rate, origins))
    ranges = []
    for name, spec in meta["outputs"].items():
        values = np.asarray(outputs[name], dtype=float)
        finite = values[np.isfinite(values)]
        low, mid, high = (
            (float(finite.min()), float(np.median(finite)), float(finite.max()))
            if finite.size
            else (np.nan, np.nan, np.nan)
        )
        shape = "x".join(str(k) for k in spec["shape"]) or "scalar"
        ranges.append((name, spec["unit"], shape, low, mid, high))
    return DatasetSummary(artifact.path, meta, len(optimal), float(optimal.mean()), splits, ranges)
