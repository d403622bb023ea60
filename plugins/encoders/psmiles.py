"""Reading a polymer repeat unit (PSMILES, ``[*]`` end points) with RDKit, for every encoder:
one that cannot be parsed is an error naming it, whichever encoder meets it first."""

from __future__ import annotations

from typing import Any

from rdkit import Chem, RDLogger


def parse_psmiles(psmiles: str) -> Any:
    """The RDKit molecule of ``psmiles`` (its ``*`` end points as dummy atoms), or a
    ValueError naming it."""
    RDLogger.DisableLog("rdApp.*")  # the error below says what was wrong
    try:
        molecule = Chem.MolFromSmiles(psmiles)
    finally:
        RDLogger.EnableLog("rdApp.*")
    if molecule is None:
        raise ValueError(f"RDKit cannot parse the PSMILES {psmiles!r}")
    return molecule
