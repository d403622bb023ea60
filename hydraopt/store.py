"""The run directory: resolved config, typed artifacts with digests, stage records, journal.

Layout of ``OUTPUT_DIR/STUDY``::

    pipeline.resolved.toml   the config with every default filled in
    run.json                 which pipeline file owns this directory
    SUMMARY.md               what the last run did, produced and failed, in a few lines
    artifacts/NAME.h5        a ``tables`` artifact: groups of columns; root attributes
                             ``provenance`` and ``meta`` (JSON)
    artifacts/NAME.EXT       a ``file`` artifact (a checkpoint, a figure, a report), with
    artifacts/NAME.EXT.json  its provenance and meta beside it
    artifacts/NAME/          a ``shards`` artifact: one file per unit (a patient, a batch)
        manifest.json        and a manifest of them with their digests, provenance and meta
    stages/STAGE.json        completion record: fingerprint, outputs and every file's digest
    work/STAGE/...           units of a stage, kept for resume (see :mod:`hydraopt.ledger`)
    failures/STAGE/KEY.txt   the traceback of each unit that failed
    journal.jsonl            one JSON line per event (stage started, skipped, finished)

Each artifact has two digests: a *content* digest (of its values and meta, not its
provenance), which the stages after it fingerprint, so a stage redone with the same result
leaves them valid; and the SHA-256 of every file, which a skipped stage re-checks, so a
corrupted or truncated artifact is redone instead of trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.atomic import atomic_path, file_sha256, write_json, write_text
from hydraopt.errors import StoreError

# Arrays larger than this many elements are stored chunked and compressed.
COMPRESS_ABOVE = 4096
MANIFEST = "manifest.json"
Table = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class ArtifactRecord:
    """What a stage record keeps of one artifact.

    :param kind: ``tables``, ``file``, ``folder`` or ``shards``.
    :param path: relative to the run directory.
    :param digest: content digest (values and meta, not provenance).
    :param files: SHA-256 and size of every file the artifact consists of, by relative path.
    """

    name: str
    kind: str
    path: str
    digest: str
    files: Mapping[str, Mapping[str, Any]]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": self.path,
            "digest": self.digest,
            "files": {k: dict(v) for k, v in self.files.items()},
        }

    @classmethod
    def from_json(cls, name: str, data: Mapping[str, Any]) -> ArtifactRecord:
        return cls(name, data["kind"], data["path"], data["digest"], data["files"])


@dataclass(frozen=True)
class Shard:
    """One unit's file of a ``shards`` artifact, with its content digest."""

    path: Path
    content_digest: str


class TablesArtifact:
    """A ``tables`` artifact read back: groups of named columns, meta and provenance."""

    def __init__(self, path: Path) -> None:
        self.path = path
        attrs = read_h5_attrs(path)
        self.meta: dict[str, Any] = attrs["meta"]
        self.provenance: dict[str, Any] = attrs["provenance"]

    def table(self, group: str) -> dict[str, np.ndarray]:
        return read_h5_table(self.path, group)


class FileArtifact:
    """A ``file`` artifact read back: the file's path, its meta and provenance."""

    def __init__(self, path: Path) -> None:
        self.path = path
        sidecar = _read_json(path.with_name(path.name + ".json"))
        self.meta: dict[str, Any] = sidecar["meta"]
        self.provenance: dict[str, Any] = sidecar["provenance"]


class FolderArtifact:
    """A ``folder`` artifact read back: the folder (a saved model, a report), its meta and
    provenance."""

    def __init__(self, path: Path) -> None:
        self.path = path
        manifest = _read_json(path / MANIFEST)
        self.meta: dict[str, Any] = manifest["meta"]
        self.provenance: dict[str, Any] = manifest["provenance"]


class ShardedArtifact:
    """A ``shards`` artifact read back: one HDF5 file per key, read one at a time."""

    def __init__(self, root: Path) -> None:
        self.root = root
        manifest = _read_json(root / MANIFEST)
        self.meta: dict[str, Any] = manifest["meta"]
        self.provenance: dict[str, Any] = manifest["provenance"]
        self._shards: dict[str, dict[str, Any]] = manifest["shards"]

    def keys(self) -> list[str]:
        return list(self._shards)

    def path(self, key: str) -> Path:
        if key not in self._shards:
            raise StoreError(f"{self.root}: no shard {key!r}")
        return self.root / self._shards[key]["file"]

    def content_digest(self, key: str) -> str:
        return self._shards[key]["content_digest"]

    def table(self, key: str, group: str) -> dict[str, np.ndarray]:
        return read_h5_table(self.path(key), group)

    def n_rows(self, key: str, group: str) -> int:
        """The number of rows of table ``group`` in shard ``key``, without reading it."""
        import h5py

        with h5py.File(self.path(key), "r") as handle:
            return len(next(iter(handle[group].values())))

    def shard_meta(self, key: str) -> dict[str, Any]:
        return read_h5_attrs(self.path(key))["meta"]

    def __iter__(self) -> Iterator[str]:
        return iter(self._shards)

    def __len__(self) -> int:
        return len(self._shards)


class RunStore:
    """One run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.artifacts_dir = run_dir / "artifacts"
        self.stages_dir = run_dir / "stages"
        self.work_root = run_dir / "work"
        self.failures_root = run_dir / "failures"
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

    def work_dir(self, stage: str) -> Path:
        folder = self.work_root / stage
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def clear_work(self, stage: str) -> None:
        """Forget every unit of the stage, done or failed (``--force``, ``--from``)."""
        shutil.rmtree(self.work_root / stage, ignore_errors=True)
        shutil.rmtree(self.failures_root / stage, ignore_errors=True)

    def clear_failures(self, stage: str) -> None:
        shutil.rmtree(self.failures_root / stage, ignore_errors=True)

    def clear_scratch(self, stage: str) -> None:
        shutil.rmtree(self.work_root / stage / "scratch", ignore_errors=True)

    def write_resolved_config(self, text: str) -> None:
        write_text(self.run_dir / "pipeline.resolved.toml", text)

    def remove_temporaries(self) -> list[Path]:
        """Delete what interrupted atomic writes left (``.NAME.*.tmp`` files and folders);
        call it only while holding the run lock, when no write can be in progress."""
        removed = []
        for path in sorted(self.run_dir.rglob(".*.tmp"), key=lambda p: -len(p.parts)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
        return removed

    # ---- writing artifacts -------------------------------------------------------------------

    def write_tables(
        self,
        name: str,
        tables: Mapping[str, Table],
        provenance: Mapping[str, Any],
        meta: Mapping[str, Any] | None = None,
    ) -> ArtifactRecord:
        """Write ``tables`` (group name -> columns) to ``artifacts/NAME.h5`` atomically."""
        path = self.artifacts_dir / f"{name}.h5"
        meta = dict(meta or {})
        write_h5(path, tables, provenance, meta)
        return ArtifactRecord(
            name, "tables", self._relative(path), content_digest(tables, meta), self._files(path)
        )

    def write_file(
        self,
        name: str,
        source: Path,
        provenance: Mapping[str, Any],
        meta: Mapping[str, Any] | None = None,
    ) -> ArtifactRecord:
        """Copy ``source`` to ``artifacts/NAME.EXT`` (EXT from ``source``) atomically, with its
        provenance and meta in ``NAME.EXT.json``."""
        path = self.artifacts_dir / f"{name}{''.join(source.suffixes)}"
        meta = dict(meta or {})
        with atomic_path(path) as temporary:
            shutil.copyfile(source, temporary)
        sidecar = path.with_name(path.name + ".json")
        write_json(sidecar, {"meta": meta, "provenance": dict(provenance)})
        digest = hashlib.sha256(file_sha256(path).encode())
        digest.update(json.dumps(meta, sort_keys=True, default=str).encode())
        return ArtifactRecord(
            name, "file", self._relative(path), digest.hexdigest(), self._files(path)
        )

    def write_shards(
        self,
        name: str,
        shards: Mapping[str, Shard],
        provenance: Mapping[str, Any],
        meta: Mapping[str, Any] | None = None,
    ) -> ArtifactRecord:
        """Gather unit files into ``artifacts/NAME/`` (hard links where the filesystem allows,
        so no byte is copied) with a manifest; nothing is loaded into memory."""
        root = self.artifacts_dir / name
        meta = dict(meta or {})
        staging = self.artifacts_dir / f".{name}.staging.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        entries = {}
        for key, shard in shards.items():
            file = f"{key}{shard.path.suffix}"
            _link_or_copy(shard.path, staging / file)
            entries[key] = {"file": file, "content_digest": shard.content_digest}
        write_json(
            staging / MANIFEST,
            {"meta": meta, "provenance": dict(provenance), "shards": entries},
        )
        self._swap_in(staging, root)
        digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
        for key in sorted(entries):
            digest.update(f"{key}:{entries[key]['content_digest']}".encode())
        files = {}
        for path in sorted(root.iterdir()):
            files.update(self._files(path))
        return ArtifactRecord(name, "shards", self._relative(root), digest.hexdigest(), files)

    def write_folder(
        self,
        name: str,
        source: Path,
        provenance: Mapping[str, Any],
        meta: Mapping[str, Any] | None = None,
    ) -> ArtifactRecord:
        """Copy the files of folder ``source`` to ``artifacts/NAME/`` with a manifest; the
        folder appears whole or not at all."""
        root = self.artifacts_dir / name
        meta = dict(meta or {})
        staging = self.artifacts_dir / f".{name}.staging.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        if (staging / MANIFEST).exists():
            raise StoreError(f"{source}: a folder artifact may not hold its own {MANIFEST}")
        write_json(staging / MANIFEST, {"meta": meta, "provenance": dict(provenance)})
        self._swap_in(staging, root)
        files = {}
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            files.update(self._files(path))
        digest = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode())
        for relative, entry in files.items():
            if not relative.endswith(MANIFEST):
                digest.update(f"{relative}:{entry['sha256']}".encode())
        return ArtifactRecord(name, "folder", self._relative(root), digest.hexdigest(), files)

    def _swap_in(self, staging: Path, root: Path) -> None:
        # A crash between the two renames leaves the stage record pointing at a missing
        # folder, which only means the stage is redone.
        previous = self.artifacts_dir / f".{root.name}.previous.tmp"
        shutil.rmtree(previous, ignore_errors=True)
        if root.exists():
            os.replace(root, previous)
        os.replace(staging, root)
        shutil.rmtree(previous, ignore_errors=True)

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.run_dir))

    def _files(self, path: Path) -> dict[str, dict[str, Any]]:
        return {self._relative(path): {"sha256": file_sha256(path), "size": path.stat().st_size}}

    # ---- reading artifacts -------------------------------------------------------------------

    def artifact_record(self, name: str) -> ArtifactRecord:
        """The record of artifact ``name`` from the stage that finished writing it."""
        for path in sorted(self.stages_dir.glob("*.json")):
            record = self.stage_record(path.stem)
            if record and name in record.get("outputs", {}):
                return ArtifactRecord.from_json(name, record["outputs"][name])
        raise StoreError(f"{self.run_dir}: no finished stage has written artifact {name!r}")

    def tables(self, name: str) -> TablesArtifact:
        return TablesArtifact(self._located(name, "tables"))

    def file(self, name: str) -> FileArtifact:
        return FileArtifact(self._located(name, "file"))

    def shards(self, name: str) -> ShardedArtifact:
        return ShardedArtifact(self._located(name, "shards"))

    def folder(self, name: str) -> FolderArtifact:
        return FolderArtifact(self._located(name, "folder"))

    def _located(self, name: str, kind: str) -> Path:
        record = self.artifact_record(name)
        if record.kind != kind:
            raise StoreError(f"artifact {name!r} is a {record.kind} artifact, not {kind}")
        return self.run_dir / record.path

    # ---- stage records -----------------------------------------------------------------------

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        path = self.stages_dir / f"{stage}.json"
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a damaged record only means the stage runs again

    def damaged_outputs(self, stage: str) -> list[str]:
        """Files of the stage's recorded outputs that are missing or whose SHA-256 no longer
        matches the record (an edited, truncated or corrupted artifact)."""
        record = self.stage_record(stage) or {}
        problems = []
        for name, output in record.get("outputs", {}).items():
            if not output.get("files"):
                problems.append(f"{name} was recorded without file digests (an older hydraopt)")
            for relative, expected in output.get("files", {}).items():
                path = self.run_dir / relative
                if not path.is_file():
                    problems.append(f"{relative} is missing")
                elif path.stat().st_size != expected["size"]:
                    problems.append(f"{relative} has changed size")
                elif file_sha256(path) != expected["sha256"]:
                    problems.append(f"{relative} has changed content")
        return problems

    def record_stage(
        self,
        stage: str,
        fingerprint: str,
        outputs: Mapping[str, ArtifactRecord],
        duration_s: float,
        failed_units: Sequence[str] = (),
    ) -> None:
        """The stage finished with these outputs; ``failed_units`` are units it went on
        without (their failures are recorded in its outputs), which the next run retries."""
        write_json(
            self.stages_dir / f"{stage}.json",
            {
                "stage": stage,
                "fingerprint": fingerprint,
                "outputs": {name: record.to_json() for name, record in outputs.items()},
                "duration_s": round(duration_s, 3),
                "finished_utc": now_utc(),
                "failed_units": list(failed_units),
            },
        )

    def forget_stage(self, stage: str) -> None:
        (self.stages_dir / f"{stage}.json").unlink(missing_ok=True)

    def output_digests(self, stage: str) -> dict[str, str]:
        record = self.stage_record(stage)
        if record is None:
            raise StoreError(f"{self.run_dir}: stage {stage!r} has not finished; run it first")
        return {name: out["digest"] for name, out in record["outputs"].items()}

    def journal(self, event: str, **fields: Any) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.journal_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"time_utc": now_utc(), "event": event, **fields}) + "\n")


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


def h5_content_digest(path: Path) -> str:
    """:func:`content_digest` of an HDF5 file written by :func:`write_h5`, read back."""
    import h5py

    tables: dict[str, dict[str, np.ndarray]] = {}
    try:
        with h5py.File(path, "r") as handle:
            meta = json.loads(handle.attrs["meta"])

            def visit(name: str, item: Any) -> None:
                if isinstance(item, h5py.Dataset):
                    group, _, column = name.rpartition("/")
                    tables.setdefault(group, {})[column] = _dataset_values(item)

            handle.visititems(visit)
    except (OSError, KeyError) as exc:
        raise StoreError(f"{path}: cannot read the file ({exc})") from None
    return content_digest(tables, meta)


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(source, target)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: cannot read the artifact's description ({exc})") from None


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


def _dataset_values(dataset: Any) -> np.ndarray:
    data = dataset[()]
    if dataset.dtype.kind == "O":
        data = np.array([x.decode() if isinstance(x, bytes) else x for x in data], dtype=object)
    return data


def read_h5_table(path: Path, group: str) -> dict[str, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if group not in handle:
                raise StoreError(f"{path}: no group {group!r} (has: {', '.join(handle)})")
            return {name: _dataset_values(dataset) for name, dataset in handle[group].items()}
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the artifact ({exc})") from None


def read_h5_attrs(path: Path) -> dict[str, Any]:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return {key: json.loads(handle.attrs[key]) for key in ("provenance", "meta")}
    except OSError as exc:
        raise StoreError(f"{path}: cannot read the artifact ({exc})") from None


__all__ = [
    "ArtifactRecord",
    "FileArtifact",
    "RunStore",
    "Shard",
    "ShardedArtifact",
    "TablesArtifact",
    "content_digest",
    "h5_content_digest",
    "read_h5_attrs",
    "read_h5_table",
    "write_h5",
]
