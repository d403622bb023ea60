"""What made an artifact: config hash, stage, plugins and versions, seeds, packages."""

from __future__ import annotations

import importlib.metadata
import platform
import sys
from datetime import UTC, datetime
from typing import Any

# Packages whose version can change results; reported when installed.
TRACKED_PACKAGES = (
    "hydraopt",
    "numpy",
    "scipy",
    "h5py",
    "pydantic",
    "pluggy",
    "rdkit",
    "torch",
    "transformers",
    "peft",
    "pymoo",
    "meshio",
    "gmsh",
    "cardiac-geometries-core",
    "numba",
    "llvmlite",
    "matplotlib",
)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def provenance_record(
    *,
    stage: str,
    config_hash: str,
    fingerprint: str,
    seed: int,
    plugins: list[dict[str, str]],
    inputs: dict[str, str],
) -> dict[str, Any]:
    """The provenance written into every artifact of a stage."""
    return {
        "stage": stage,
        "config_hash": config_hash,
        "stage_fingerprint": fingerprint,
        "seed": seed,
        "plugins": plugins,
        "inputs": inputs,
        "packages": package_versions(),
        "platform": f"{platform.system()} {platform.machine()}",
        "command": " ".join(sys.argv),
        "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
    }
