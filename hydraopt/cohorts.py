"""Reading a cohort from CSV, with errors that name the file, row and column.

The CSV has a header with ``patient_id`` and the 11 feature columns of
:data:`hydraopt.domain.PATIENT_FEATURES` (any order, extra columns ignored).
``stress_concentration`` may be left out: it is then computed as bz/healthy stress.
``infarct_age_days`` (days from the infarct to the treatment) is optional: without it every
patient gets :data:`hydraopt.domain.DEFAULT_INFARCT_AGE_DAYS`, a healed infarct.
``origin`` (``real`` or ``synthetic``) is optional: the dataset spreads each origin
proportionally over its splits.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from hydraopt.csv_table import read_csv_rows
from hydraopt.domain import DEFAULT_INFARCT_AGE_DAYS, FEATURE_NAMES, Cohort, Patient
from hydraopt.errors import DataError

INFARCT_AGE_COLUMN = "infarct_age_days"
# "real" or "synthetic" (Patient.origin); the dataset spreads each proportionally over splits.
ORIGIN_COLUMN = "origin"
OPTIONAL_COLUMNS = frozenset({"stress_concentration", INFARCT_AGE_COLUMN})
MAX_REPORTED_PROBLEMS = 25


def read_cohort_csv(path: Path) -> Cohort:
    """Load and validate a cohort; every bad cell is reported at once."""
    header, rows = read_csv_rows(path, "cohort file")
    required = ["patient_id", *(n for n in FEATURE_NAMES if n not in OPTIONAL_COLUMNS)]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; a cohort CSV needs "
            f"{', '.join(['patient_id', *FEATURE_NAMES])}"
        )
    problems: list[str] = []
    patients: list[Patient] = []
    first_row_of: dict[str, int] = {}
    for line, row in rows:
        patient = _parse_row(path, line, row, problems)
        if patient is None:
            continue
        if patient.patient_id in first_row_of:
            problems.append(
                f"{path}:{line}: column patient_id: duplicate id {patient.patient_id!r} "
                f"(first on line {first_row_of[patient.patient_id]})"
            )
            continue
        first_row_of[patient.patient_id] = line
        problems.extend(
            f"{path}:{line}: patient {patient.patient_id!r}: column {p}" for p in patient.problems()
        )
        patients.append(patient)
    if problems:
        shown = problems[:MAX_REPORTED_PROBLEMS]
        more = len(problems) - len(shown)
        raise DataError("\n".join(shown + ([f"... and {more} more problems"] if more else [])))
    if not patients:
        raise DataError(f"{path}: the cohort has no patients")
    return Cohort(tuple(patients))


def _parse_row(path: Path, line: int, row: dict[str, str], problems: list[str]) -> Patient | None:
    where = f"{path}:{line}"
    patient_id = row.get("patient_id", "")
    if not patient_id:
        problems.append(f"{where}: column patient_id: missing value")
        return None
    values: dict[str, float] = {}
    ok = True
    for name in (*FEATURE_NAMES, INFARCT_AGE_COLUMN):
        text = row.get(name, "")
        if not text and name in OPTIONAL_COLUMNS:
            continue
        if not text:
            problems.append(f"{where}: patient {patient_id!r}: column {name}: missing value")
            ok = False
            continue
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            problems.append(
                f"{where}: patient {patient_id!r}: column {name}: expected a number, got {text!r}"
            )
            ok = False
            continue
        values[name] = value
    if not ok:
        return None
    if "stress_concentration" not in values:
        healthy = values["healthy_stress_kpa"]
        values["stress_concentration"] = values["bz_stress_kpa"] / healthy if healthy > 0 else 0.0
    values.setdefault(INFARCT_AGE_COLUMN, DEFAULT_INFARCT_AGE_DAYS)
    return Patient(patient_id, **values, origin=row.get(ORIGIN_COLUMN, "").strip())


def write_cohort_csv(cohort: Cohort, path: Path) -> None:
    """Write a cohort in the format :func:`read_cohort_csv` reads."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["patient_id", *FEATURE_NAMES, INFARCT_AGE_COLUMN, ORIGIN_COLUMN])
        for patient in cohort:
            values = (*patient.features(), patient.infarct_age_days)
            writer.writerow([patient.patient_id, *(f"{v:.6g}" for v in values), patient.origin])
