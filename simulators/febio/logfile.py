"""Reading what FEBio writes: logfile data files and the termination banner.

A logfile data file (``<logfile><node_data file=...>``) holds one record per converged time
step, as FEBio's ``DataRecord::Write`` prints it::

    *Step  = 3
    *Time  = 0.3
    *Data  = ux;uy;uz
    1 0.0012 -0.0004 0.0101
    2 ...

one row per item (node or element id, 1-based) with the values separated by the record's
delimiter (a space unless ``delim`` says otherwise). FEBio's log ends with ``N O R M A L
T E R M I N A T I O N`` or ``E R R O R   T E R M I N A T I O N``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NORMAL_TERMINATION = "N O R M A L   T E R M I N A T I O N"
ERROR_TERMINATION = "E R R O R   T E R M I N A T I O N"
_HEADER = re.compile(r"^\*(Step|Time|Data)\s*=\s*(.*?)\s*$")


class LogfileError(ValueError):
    """A data file that is not what FEBio writes: says the file, line and what was wrong."""


@dataclass(frozen=True)
class DataRecord:
    """One time step's record: item ids (1-based, as FEBio numbers them) and values
    ``[items, variables]``."""

    step: int
    time: float
    variables: tuple[str, ...]
    ids: np.ndarray
    values: np.ndarray


def termination(log_text: str) -> str | None:
    """'normal', 'error', or None when the log has no banner (killed, or not FEBio)."""
    if ERROR_TERMINATION in log_text:
        return "error"
    if NORMAL_TERMINATION in log_text:
        return "normal"
    return None


def read_data_file(path: Path, delimiter: str | None = None) -> list[DataRecord]:
    """Every record of a logfile data file, in file order (FileNotFoundError when FEBio
    wrote none)."""
    path = Path(path)
    records: list[DataRecord] = []
    header: dict[str, str] = {}
    rows: list[list[str]] = []
    start_line = 0

    def close() -> None:
        if header:
            records.append(_record(path, header, rows, start_line))

    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        match = _HEADER.match(line)
        if match:
            key, value = match.groups()
            if key == "Step":
                close()
                header, rows, start_line = {}, [], number
            elif not header:
                raise LogfileError(f"{path.name} line {number}: '*{key}' before '*Step'")
            header[key] = value
            continue
        if not header:
            raise LogfileError(f"{path.name} line {number}: data before the first '*Step'")
        rows.append(line.split(delimiter))
    close()
    if not records:
        raise LogfileError(f"{path.name}: no data records")
    return records


def _record(path: Path, header: dict[str, str], rows: list[list[str]], line: int) -> DataRecord:
    where = f"{path.name} record at line {line}"
    missing = [key for key in ("Step", "Time", "Data") if key not in header]
    if missing:
        raise LogfileError(f"{where}: header lacks {', '.join('*' + k for k in missing)}")
    variables = tuple(v.strip() for v in header["Data"].split(";"))
    try:
        step, time = int(header["Step"]), float(header["Time"])
    except ValueError:
        raise LogfileError(f"{where}: step or time is not a number") from None
    widths = {len(row) for row in rows}
    if not rows or widths != {len(variables) + 1}:
        raise LogfileError(
            f"{where}: expected rows of an id and {len(variables)} values "
            f"({';'.join(variables)}), found rows of {sorted(widths) or 'none'} fields"
        )
    try:
        table = np.array(rows, dtype=float)
    except ValueError:
        raise LogfileError(f"{where}: a value is not a number") from None
    if not np.all(np.isfinite(table)):
        raise LogfileError(f"{where}: non-finite values")
    return DataRecord(step, time, variables, table[:, 0].astype(np.int64), table[:, 1:])


def record_at(records: list[DataRecord], time: float, n_items: int, source: str) -> np.ndarray:
    """The values ``[n_items, variables]`` at ``time`` (a must point), ordered by item id
    1..n_items. The last record at that time wins (FEBio writes a record per converged
    step; a retried step is written once)."""
    found = [r for r in records if abs(r.time - time) <= 1e-6 * max(1.0, abs(time))]
    if not found:
        times = ", ".join(f"{r.time:g}" for r in records[-3:])
        raise LogfileError(f"{source}: no record at time {time:g} (last records at {times})")
    record = found[-1]
    expected = np.arange(1, n_items + 1)
    if len(record.ids) != n_items or not np.array_equal(np.sort(record.ids), expected):
        raise LogfileError(
            f"{source}: the record at time {time:g} has {len(record.ids)} items, "
            f"expected ids 1..{n_items}"
        )
    return record.values[np.argsort(record.ids)]
