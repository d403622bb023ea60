"""RDKit count-based Morgan fingerprints of polymer repeat units.

A PSMILES marks the repeat unit's two end points with ``[*]``; RDKit reads them as dummy
atoms. Environments are rooted only at real atoms, so the fingerprint counts the unit's own
chemistry, while an environment that reaches an end point records that the chain continues
there (the dummy atom is part of the environment, as atomic number 0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
from rdkit import Chem
from rdkit.Chem import rdFingerprintGenerator

from hydraopt_plugins.encoders import MorganSettings
from hydraopt_plugins.encoders.psmiles import parse_psmiles


class MorganEncoder:
    def __init__(self, settings: MorganSettings) -> None:
        self.settings = settings
        self.embedding_dim = settings.fp_size
        self.fingerprint = hashlib.sha256(
            f"morgan-count radius={settings.radius} size={settings.fp_size} "
            f"rdkit={Chem.rdBase.rdkitVersion}".encode()
        ).hexdigest()
        self._generator = rdFingerprintGenerator.GetMorganGenerator(
            radius=settings.radius, fpSize=settings.fp_size
        )
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, psmiles: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(psmiles), self.embedding_dim), dtype=np.float32)
        for row, smiles in enumerate(psmiles):
            if smiles not in self._cache:
                self._cache[smiles] = self._counts(smiles)
            out[row] = self._cache[smiles]
        return out

    def trainable_module(self) -> None:
        return None

    def _counts(self, smiles: str) -> np.ndarray:
        molecule = parse_psmiles(smiles)
        roots = [atom.GetIdx() for atom in molecule.GetAtoms() if atom.GetAtomicNum() != 0]
        counts = self._generator.GetCountFingerprintAsNumPy(molecule, fromAtoms=roots)
        return counts.astype(np.float32)
