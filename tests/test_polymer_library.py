import csv
import re
from pathlib import Path

import pytest

from hydraopt.domain import POLYMER_CATEGORIES
from hydraopt.errors import DataError
from hydraopt.polymer_library import (
    bundled_library_path,
    library_columns,
    library_from_columns,
    read_polymer_library,
)


def test_bundled_library_has_24_checked_hydrogels():
    library = read_polymer_library()
    assert len(library) == 24
    assert {p.category for p in library} <= set(POLYMER_CATEGORIES) - {"Unknown"}
    assert len({p.psmiles for p in library}) >= 21
    for polymer in library:
        assert polymer.psmiles.count("[*]") == 2
        assert polymer.sources


def test_every_bundled_source_is_cited_in_the_data_readme():
    readme = (bundled_library_path().parent / "README.md").read_text(encoding="utf-8")
    for polymer in read_polymer_library():
        for key in polymer.sources:
            assert re.search(rf"\b{re.escape(key)}\b", readme), f"{polymer.name}: {key} not cited"


def test_columns_round_trip():
    library = read_polymer_library()
    assert library_from_columns(library_columns(library), library.source) == library


def _rewrite(tmp_path: Path, row_index: int, **changes) -> Path:
    with bundled_library_path().open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows[row_index].update(changes)
    path = tmp_path / "library.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_unparseable_psmiles_names_row_and_column(tmp_path):
    path = _rewrite(tmp_path, 2, psmiles="[*]C(C[*]")
    with pytest.raises(
        DataError,
        match=r"library.csv:4: polymer '.*': column psmiles: RDKit "
        r"cannot parse",
    ):
        read_polymer_library(path)


def test_psmiles_needs_two_end_points(tmp_path):
    path = _rewrite(tmp_path, 0, psmiles="[*]CCO")
    with pytest.raises(DataError, match=r"column psmiles: '\[\*\]CCO' has 1 \[\*\] end points"):
        read_polymer_library(path)


def test_inverted_range_and_bad_category(tmp_path):
    path = _rewrite(tmp_path, 5, t50_min_days="90", t50_max_days="10", category="Hydrogel")
    with pytest.raises(DataError) as caught:
        read_polymer_library(path)
    message = str(caught.value)
    assert "library.csv:7" in message
    assert "columns t50_min_days > t50_max_days (90 > 10)" in message
    assert "column category: 'Hydrogel' is not one of GelMA" in message


def test_subset_and_unknown_names():
    library = read_polymer_library()
    names = list(library.names[:2])
    assert library.subset(names).names == tuple(names)
    with pytest.raises(DataError, match="polymer 'unobtainium' is not in the library"):
        library.subset(["unobtainium"])
