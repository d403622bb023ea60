"""Independent, reproducible random streams derived from the study seed.

Each consumer names itself (stage, patient, ...) and gets its own generator, so adding a
patient or a stage never shifts another's random numbers, and a resumed run draws exactly
what an uninterrupted one would.
"""

from __future__ import annotations

import hashlib

import numpy as np


def derive_seed(seed: int, *names: str) -> int:
    """A 63-bit integer seed for the stream ``names`` under the master ``seed``."""
    digest = hashlib.sha256("\x1f".join([str(seed), *names]).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def rng_for(seed: int, *names: str) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *names))
