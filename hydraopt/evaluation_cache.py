"""Simulator evaluations cached by content, shared by every study that points at one folder.

An evaluation is keyed by what decides it: the simulator (name, package, version, settings
and the digest of its code), the patient (every field describing the heart, not its id or
origin), the patient's mesh (its content digest), and the design's values (its polymer's whole
record, its coverage pattern and its four parameters). A study that asks for an evaluation
another study paid for reads it instead.

Layout: ``ROOT/CONTEXT/ENTRY.h5``, where CONTEXT hashes the simulator, patient and mesh, and
each ENTRY holds a batch of designs' keys and outcomes. An entry is written once, under a
temporary name then renamed, and named by the digest of its content: writers never share a
file, so concurrent studies cannot corrupt each other. Reading checks each entry against its
name; an unreadable or altered entry is moved aside (``*.corrupt``) and its designs are
simulated again, never returned.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.domain import CONTINUOUS_FIELDS, COVERAGE_PATTERNS, DesignBatch, Outcomes, OutputSpec
from hydraopt.domain.patient import Patient

ENTRY_SUFFIX = ".h5"


def context_key(simulator: Mapping[str, str], patient: Patient, mesh_digest: str) -> str:
    """The digest of everything but the design that decides an evaluation."""
    record = patient.physical_record()
    record.pop("patient_id", None)  # a renamed patient is the same heart
    text = json.dumps(
        {"simulator": dict(simulator), "patient": record, "mesh": mesh_digest},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


def design_keys(designs: DesignBatch) -> np.ndarray:
    """One digest per design: its polymer's whole record, coverage and four values."""
    polymers = [
        hashlib.sha256(json.dumps(_polymer_record(p), sort_keys=True).encode()).digest()
        for p in designs.space.polymers
    ]
    values = np.stack([getattr(designs, name) for name in CONTINUOUS_FIELDS], axis=1)
    keys = np.empty(len(designs), dtype=object)
    for i in range(len(designs)):
        packed = (
            polymers[designs.polymer_index[i]]
            + COVERAGE_PATTERNS[designs.coverage_index[i]].encode()
            + struct.pack("<4d", *values[i])
        )
        keys[i] = hashlib.sha256(packed).hexdigest()
    return keys


def _polymer_record(polymer: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(polymer)


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    corrupt: int = 0


class EvaluationCache:
    """The evaluations of one simulator on one patient's mesh, in folder ``root``."""

    def __init__(self, root: Path, context: str) -> None:
        self.folder = Path(root) / context[:2] / context
        self.stats = CacheStats()

    def lookup(
        self, keys: np.ndarray, specs: Sequence[OutputSpec]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Which designs are cached (a mask) and their stored columns, in ``keys``' order."""
        wanted = {str(k): i for i, k in enumerate(keys)}
        found = np.zeros(len(keys), dtype=bool)
        columns: dict[str, Any] = {
            spec.name: np.full((len(keys), *spec.shape), np.nan) for spec in specs
        }
        columns["failed"] = np.zeros(len(keys), dtype=bool)
        columns["failure_reason"] = np.full(len(keys), "", dtype=object)
        for entry in sorted(self.folder.glob(f"*{ENTRY_SUFFIX}")) if self.folder.is_dir() else []:
            table = self._read(entry, specs)
            if table is None:
                continue
            for row, key in enumerate(table["key"]):
                i = wanted.get(str(key))
                if i is None or found[i]:
                    continue
                found[i] = True
                for name in columns:
                    columns[name][i] = table[name][row]
        self.stats.hits += int(found.sum())
        self.stats.misses += int((~found).sum())
        return found, columns

    def store(self, keys: np.ndarray, outcomes: Outcomes) -> None:
        """Keep ``outcomes`` of the designs ``keys`` as one new entry."""
        if not len(keys):
            return
        from hydraopt.store import write_h5

        columns = {
            "key": np.asarray(keys, dtype=object),
            **{name: np.asarray(v) for name, v in outcomes.values.items()},
            "failed": np.asarray(outcomes.failed, dtype=bool),
            "failure_reason": np.asarray(outcomes.failure_reason, dtype=object),
        }
        digest = _digest(columns)
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{digest}{ENTRY_SUFFIX}"
        if not target.exists():  # written atomically by write_h5: never seen half-written
            write_h5(target, {"entry": columns}, provenance={}, meta={"digest": digest})

    def _read(self, entry: Path, specs: Sequence[OutputSpec]) -> dict[str, Any] | None:
        from hydraopt.store import read_h5_table

        try:
            table = read_h5_table(entry, "entry")
            intact = _digest(table) == entry.name.removesuffix(ENTRY_SUFFIX)
            shapes = all(
                np.shape(table[s.name])[1:] == tuple(s.shape) for s in specs if s.name in table
            )
            complete = all(s.name in table for s in specs)
        except Exception:  # unreadable: a torn or foreign file
            intact = shapes = complete = False
        if intact and shapes and complete:
            return table
        if not intact:
            self.stats.corrupt += 1
            with contextlib.suppress(OSError):  # another reader moved it first
                os.replace(entry, entry.with_suffix(".corrupt"))
        return None


def _digest(columns: Mapping[str, Any]) -> str:
    """SHA-256 over the columns' names, types, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(columns):
        values = np.asarray(columns[name])
        if values.dtype.kind in "OUS":
            payload = "\x1f".join(str(v) for v in values.ravel()).encode()
            kind = "text"
        else:
            payload = np.ascontiguousarray(values).tobytes()
            kind = values.dtype.str
        digest.update(f"{name}|{kind}|{values.shape}|".encode())
        digest.update(payload)
    return digest.hexdigest()


def merged_outcomes(
    specs: Sequence[OutputSpec], cached: Mapping[str, Any], todo: np.ndarray, simulated: Any
) -> Outcomes:
    """The cached columns (from :meth:`EvaluationCache.lookup`) with the newly simulated
    rows ``todo`` filled in from ``simulated``."""
    values = {spec.name: np.array(cached[spec.name], dtype=np.float64) for spec in specs}
    failed = np.array(cached["failed"], dtype=bool)
    reason = np.array(cached["failure_reason"], dtype=object)
    if simulated is not None:
        for spec in specs:
            values[spec.name][todo] = simulated[spec.name]
        failed[todo] = simulated.failed
        reason[todo] = simulated.failure_reason
    return Outcomes(tuple(specs), values, failed, reason)
