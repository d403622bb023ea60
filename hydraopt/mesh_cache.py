"""Patient meshes cached by content beside the evaluation cache, so that a study whose hearts
another study already meshed (a rerun under a new name, a second pipeline over one cohort)
reads the mesh instead of building it.

A mesh is keyed by the mesher (name, package, version, settings and the digest of its code)
and the patient's record (its id included: the mesh carries it). An entry is a folder,
``ROOT/meshes/KEY[:2]/KEY/``, holding the mesh's files and a manifest of their SHA-256; it is
assembled under a temporary name and renamed into place whole, so a reader never sees half of
one, and one whose files do not match their manifest is moved aside and rebuilt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

from hydraopt.atomic import file_sha256
from hydraopt.domain.patient import Patient

MANIFEST = "manifest.json"


def mesh_key(mesher: Mapping[str, str], patient: Patient) -> str:
    text = json.dumps(
        {"mesher": dict(mesher), "patient": patient.physical_record()},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()


class MeshCache:
    """One patient's mesh files under the cache folder ``root``."""

    def __init__(self, root: Path, key: str) -> None:
        self.folder = Path(root) / "meshes" / key[:2] / key

    def restore(self, targets: Mapping[str, Path]) -> bool:
        """Copy the cached files named in ``targets`` to their paths; False (nothing
        copied) when the entry is missing or damaged."""
        try:
            manifest = json.loads((self.folder / MANIFEST).read_text(encoding="utf-8"))
            intact = set(targets) <= set(manifest) and all(
                file_sha256(self.folder / name) == manifest[name] for name in targets
            )
        except (OSError, json.JSONDecodeError):
            intact = False
        if not intact:
            if self.folder.is_dir():  # damaged: set aside, rebuilt by this unit
                with contextlib.suppress(OSError):
                    os.replace(self.folder, self.folder.with_suffix(".corrupt"))
            return False
        for name, target in targets.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.folder / name, target)
        return True

    def keep(self, sources: Mapping[str, Path]) -> None:
        """Store the files ``sources`` (name -> path) as this entry, unless it exists."""
        if self.folder.is_dir():
            return
        staging = self.folder.parent / f".{self.folder.name}.{uuid.uuid4().hex}.tmp"
        staging.mkdir(parents=True)
        try:
            manifest = {}
            for name, source in sources.items():
                shutil.copyfile(source, staging / name)
                manifest[name] = file_sha256(staging / name)
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
            with contextlib.suppress(OSError):  # another study stored it first
                os.rename(staging, self.folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
