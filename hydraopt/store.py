"""The run directory: resolved config, HDF5 artifacts with provenance, stage records, journal.

Layout of ``OUTPUT_DIR/STUDY``::

    pipeline.resolved.toml   the config with every default filled in
    artifacts/NAME.h5        stage outputs; root attribute ``provenance`` (JSON)
    stages/STAGE.json        completion record: fingerprint of inputs, outputs and digests
    work/STAGE/...           partial results of an unfinished stage, kept for resume
    journal.jsonl            one JSON line per event (stage started, skipped, finished)

A stage is skipped when its record's fingerprint equals the fingerprint of its current inputs
and every output it recorded is still on disk with the recorded size.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.atomic import atomic_path, write_json, write_text
from hydraopt.errors import StoreError

# Arrays larger than this many elements are stored chunked and compressed.
COMPRESS_ABOVE = 4096
Table = Mapping[str, np.ndarray]


class RunStore:
    """One run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.artifacts_dir = run_dir / "artifacts"
        self.stages_dir = run_dir / "stages"
        self.work_root = run_dir / "work"
        self.journal_path = run_dir / "journal.jsonl"

    def create(self) -> None:
        try:
            for folder in (self.artifacts_dir, self.stages_dir, self.work_root):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the run directory {self.run_dir} ({exc.strerror}); "
                "check study.output_dir"
            ) from None

    def artifact_path(self, name: str) -> Path:
        return self.artifacts_dir / f"{name}.h5"

    def work_dir(self, stage: str) -> Path:
        folder = self.work_root / stage
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def clear_work(self, stage: str) -> None:
        shutil.rmtree(self.work_root / stage, ignore_errors=True)

    def write_resolved_config(self, text: str) -> None:
        write_text(self.run_dir / "pipeline.resolved.toml", text)

    # ---- artifacts -------------------------------------------------------------------------

    def write_artifact(
        self,
        name: str,
        tables: Mapping[str, Table],
        provenance: Mapping[str, Any],
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write ``tables`` (group name -> columns) atomically; return its digest record.

        The digest covers the content (tables and meta), not the provenance: a stage redone
        with the same result leaves the stages after it valid.
        """
        path = self.artifact_path(name)
        meta = dict(meta or {})
        write_h5(path, tables, provenance, meta)
        return {
            "file": str(path.relative_to(self.run_dir)),
            "sha256": content_digest(tables, meta),
            "size": path.stat().st_size,
        }

    def read_table(self, name: str, group: str) -> dict[str, np.ndarray]:
        return read_h5_table(self.artifact_path(name), group)

    def read_meta(self, name: str) -> dict[str, Any]:
        return read_h5_attrs(self.artifact_path(name))["meta"]

    def read_provenance(self, name: str) -> dict[str, Any]:
        return read_h5_attrs(self.artifact_path(name))["provenance"]

    # ---- stage records ---------------------------------------------------------------------

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        path = self.stages_dir / f"{stage}.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a damaged record only means the stage runs again

    def is_complete(self, stage: str, fingerprint: str) -> bool:
        record = self.stage_record(stage)
        if record is None or record.get("fingerprint") != fingerprint:
            return False
        for output in record.get("outputs", {}).values():
            path = self.run_dir / output["file"]
            if not path.is_file() or path.stat().st_size != output["size"]:
                return False
        return True

    def record_stage(
        self,
        stage: str,
        fingerprint: str,
        outputs: Mapping[str, Mapping[str, Any]],
        duration_s: float,
    ) -> None:
        write_json(
            self.stages_dir / f"{stage}.json",
            {
                "stage": stage,
                "fingerprint": fingerprint,
                "outputs": dict(outputs),
                "duration_s": round(duration_s, 3),
                "finished_utc": _now(),
            },
        )

    def forget_stage(self, stage: str) -> None:
        (self.stages_dir / f"{stage}.json").unlink(missing_ok=True)

    def output_digests(self, stage: str) -> dict[str, str]:
        record = self.stage_record(stage)
        if record is None:
            raise StoreError(f"{self.run_dir}: stage {stage!r} has not finished; run it first")
        return {name: out["sha256"] for name, out in record["outputs"].items()}

    def journal(self, event: str, **fields: Any) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.journal_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time_utc": _now(), "event": event, **fields}) + "\n")


def content_digest(tables: Mapping[str, Table], meta: Mapping[str, Any]) -> str:
    """SHA-256 over group and column names, dtypes, shapes, values and meta."""
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
    for group_name in sorted(tables):
        for column in sorted(tables[group_name]):
            values = np.asarray(tables[group_name][column])
            if values.dtype.kind in "OUS":
                values = np.array([str(v) for v in values.ravel()], dtype=str)
            digest.update(f"{group_name}/{column}:{values.dtype.str}:{values.shape}".encode())
            digest.update(np.ascontiguousarray(values).tobytes())
    return digest.hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_h5(
    path: Path,
    tables: Mapping[str, Table],
    provenance: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> None:
    """Write groups of named columns to an HDF5 file atomically, with JSON attributes."""
    import h5py

    with atomic_path(path) as temporary, h5py.File(temporary, "w") as handle:
        handle.attrs["provenance"] = json.dumps(provenance, sort_keys=True, default=str)
        handle.attrs["meta"] = json.dumps(meta, sort_keys=True, default=str)
        for group_name, columns in tables.items():
            group = handle.require_group(group_name)
            for column, values in columns.items():
                _write_column(group, column, np.asarray(values))
        handle.flush()


def _write_column(group: Any, name: str, values: np.ndarray) -> None:
    import h5py

    if values.dtype.kind in "OUS":
        group.create_dataset(
            name, data=values.astype(str).astype(object), dtype=h5py.string_dtype()
        )
    elif values.size > COMPRESS_ABOVE:
        group.create_dataset(
            name, data=values, compression="gzip", compression_opts=4, shuffle=True, chunks=True
        )
    else:
        group.create_dataset(name, data=values)


def read_h5_table(path: Path, group: str) -> dict[str, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if group not in handle:
                raise StoreError(f"{path}: no group {group!r} (has: {', '.join(handle)})")
            columns = {}
            for name, dataset in handle[group].items():
                data = dataset[()]
                if dataset.dtype.kind == "O":
                    data = np.array(
                        [x.decode() if isinstance(x, bytes) else x for x in data], dtype=object
                    )
                columns[name] = data
            return columns
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the artifact ({exc})") from None


def read_h5_attrs(path: Path) -> dict[str, Any]:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return {key: json.loads(handle.attrs[key]) for key in ("provenance", "meta")}
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the artifact ({exc})") from None


__all__ = ["RunStore", "content_digest", "read_h5_attrs", "read_h5_table", "write_h5"]
