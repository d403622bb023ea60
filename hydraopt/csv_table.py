"""Reading a CSV data file with a header, with errors that name the file and line."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from hydraopt.errors import DataError

Row = tuple[int, dict[str, str]]


def read_csv_rows(path: Path, what: str) -> tuple[list[str], list[Row]]:
    """The header and the rows of ``path`` as ``(line number, {column: stripped text})``.

    Blank lines are skipped; a byte-order mark is ignored. An unreadable or non-UTF-8 file,
    a column named twice, or a row with more cells than the header is a :class:`DataError`.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: the {what} is not UTF-8 text ({exc.reason})") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [cell.strip() for cell in next(reader, [])]
    repeated = sorted({c for c in header if header.count(c) > 1 and c})
    if repeated:
        raise DataError(f"{path}:1: column(s) {', '.join(repeated)} appear more than once")
    rows: list[Row] = []
    for cells in reader:
        if not any(cell.strip() for cell in cells):
            continue
        if len(cells) > len(header):
            raise DataError(
                f"{path}:{reader.line_num}: the row has {len(cells)} cells but the header has "
                f"{len(header)}"
            )
        padded = [*cells, *([""] * (len(header) - len(cells)))]
        rows.append((reader.line_num, dict(zip(header, (c.strip() for c in padded), strict=True))))
    return header, rows
