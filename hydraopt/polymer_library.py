"""Reading the polymer library (the bundled 24 cardiac hydrogels, or a user's CSV).

Columns are documented in ``hydraopt/data/README.md``. Every PSMILES is parsed with RDKit on
load and must carry exactly two ``[*]`` end points, so a typo is caught before a model sees it.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

from hydraopt.csv_table import read_csv_rows
from hydraopt.domain import DEGRADATION_MODES, POLYMER_CATEGORIES, Polymer, PolymerLibrary
from hydraopt.domain.polymer import PropertyRange
from hydraopt.errors import DataError

RANGE_COLUMNS = {
    "stiffness_kpa": ("stiffness_min_kpa", "stiffness_max_kpa"),
    "t50_days": ("t50_min_days", "t50_max_days"),
    "conductivity_s_per_m": ("conductivity_min_s_per_m", "conductivity_max_s_per_m"),
}
REQUIRED_COLUMNS = (
    "name",
    "display_name",
    "category",
    "psmiles",
    *(c for pair in RANGE_COLUMNS.values() for c in pair),
    "swelling_ratio",
    "degradation_mode",
    "sources",
)


def bundled_library_path() -> Path:
    return Path(str(resources.files("hydraopt.data").joinpath("polymers.csv")))


def read_polymer_library(path: Path | None = None) -> PolymerLibrary:
    """Load a polymer library CSV (the bundled one when ``path`` is None)."""
    path = path or bundled_library_path()
    header, rows = read_csv_rows(path, "polymer library")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    problems: list[str] = []
    polymers = [_parse_row(f"{path}:{line}", row, problems) for line, row in rows]
    if problems:
        raise DataError("\n".join(problems))
    return PolymerLibrary(tuple(p for p in polymers if p is not None), source=str(path))


def _parse_row(where: str, row: dict[str, str], problems: list[str]) -> Polymer | None:
    name = row["name"]
    where = f"{where}: polymer {name!r}" if name else where
    before = len(problems)
    if not name:
        problems.append(f"{where}: column name: missing value")
    if row["category"] not in POLYMER_CATEGORIES:
        problems.append(
            f"{where}: column category: {row['category']!r} is not one of "
            f"{', '.join(POLYMER_CATEGORIES)}"
        )
    if row["degradation_mode"] not in DEGRADATION_MODES:
        problems.append(
            f"{where}: column degradation_mode: expected one of {', '.join(DEGRADATION_MODES)}, "
            f"got {row['degradation_mode']!r}"
        )
    smiles_problem = psmiles_problem(row["psmiles"])
    if smiles_problem:
        problems.append(f"{where}: column psmiles: {smiles_problem}")
    numbers = {}
    for column in (*(c for pair in RANGE_COLUMNS.values() for c in pair), "swelling_ratio"):
        try:
            numbers[column] = float(row[column])
        except ValueError:
            numbers[column] = math.nan
        if not (math.isfinite(numbers[column]) and numbers[column] > 0):
            problems.append(
                f"{where}: column {column}: expected a positive number, got {row[column]!r}"
            )
    ranges = {}
    for field, (low_column, high_column) in RANGE_COLUMNS.items():
        low, high = numbers[low_column], numbers[high_column]
        if low > high:
            problems.append(f"{where}: columns {low_column} > {high_column} ({low:g} > {high:g})")
        else:
            ranges[field] = PropertyRange(low, high)
    if len(problems) > before:
        return None
    return Polymer(
        name=name,
        display_name=row["display_name"],
        category=row["category"],
        psmiles=row["psmiles"],
        swelling_ratio=numbers["swelling_ratio"],
        degradation_mode=row["degradation_mode"],  # type: ignore[arg-type]
        sources=tuple(s.strip() for s in row["sources"].split(";") if s.strip()),
        **ranges,
    )


def psmiles_problem(psmiles: str) -> str | None:
    """Why ``psmiles`` is not a valid polymer SMILES with two end points, or None."""
    from rdkit import Chem, RDLogger  # heavy: imported only when a library is read

    RDLogger.DisableLog("rdApp.*")
    if not psmiles:
        return "missing value"
    molecule = Chem.MolFromSmiles(psmiles)
    if molecule is None:
        return f"RDKit cannot parse {psmiles!r}"
    end_points = sum(1 for atom in molecule.GetAtoms() if atom.GetAtomicNum() == 0)
    if end_points != 2:
        return f"{psmiles!r} has {end_points} [*] end points; a repeat unit needs exactly 2"
    return None


def library_columns(library: PolymerLibrary) -> dict[str, list]:
    """The library as columns (for the run store), in the CSV's column names."""
    columns: dict[str, list] = {c: [] for c in REQUIRED_COLUMNS}
    for polymer in library:
        columns["name"].append(polymer.name)
        columns["display_name"].append(polymer.display_name)
        columns["category"].append(polymer.category)
        columns["psmiles"].append(polymer.psmiles)
        for field, (low_column, high_column) in RANGE_COLUMNS.items():
            columns[low_column].append(getattr(polymer, field).low)
            columns[high_column].append(getattr(polymer, field).high)
        columns["swelling_ratio"].append(polymer.swelling_ratio)
        columns["degradation_mode"].append(polymer.degradation_mode)
        columns["sources"].append(";".join(polymer.sources))
    return columns


def library_from_columns(columns: dict, source: str) -> PolymerLibrary:
    """Inverse of :func:`library_columns` (no RDKit check: the columns were checked on load)."""
    polymers = []
    for i in range(len(columns["name"])):
        polymers.append(
            Polymer(
                name=str(columns["name"][i]),
                display_name=str(columns["display_name"][i]),
                category=str(columns["category"][i]),
                psmiles=str(columns["psmiles"][i]),
                swelling_ratio=float(columns["swelling_ratio"][i]),
                degradation_mode=str(columns["degradation_mode"][i]),  # type: ignore[arg-type]
                sources=tuple(s for s in str(columns["sources"][i]).split(";") if s),
                **{
                    field: PropertyRange(float(columns[lo][i]), float(columns[hi][i]))
                    for field, (lo, hi) in RANGE_COLUMNS.items()
                },
            )
        )
    return PolymerLibrary(tuple(polymers), source=source)
