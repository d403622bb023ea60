"""Which units of a stage are done, and which failed and why.

A stage splits its work into units (a patient, a patient and simulator pair). Each unit writes
one HDF5 file, ``work/STAGE/units/KEY.FINGERPRINT.h5``, whose name carries the unit's own
fingerprint: everything the unit's result depends on. A unit counts as done only when the
ledger (``work/STAGE/ledger.jsonl``, appended by the driver after the file was written) lists
that key and fingerprint with the file's SHA-256, and the file on disk still has it: a
truncated or corrupted unit file is redone, never trusted.

Because unit files are named by their fingerprint and kept until the stage next finishes, a
stage that reruns because one of its plugins changed redoes only the units that plugin
computed.

A unit that fails leaves its traceback in ``failures/STAGE/KEY.txt``; it is not done, so the
next run retries it, and the file is removed when it succeeds.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from hydraopt.atomic import file_sha256, write_text
from hydraopt.store import now_utc

UNIT_KEY_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")


@dataclass(frozen=True)
class DoneUnit:
    key: str
    fingerprint: str
    file: Path
    sha256: str
    content_digest: str


@dataclass(frozen=True)
class UnitFailure:
    """A unit that did not finish: whose fault (the plugin, when one is to blame), what
    happened in one line, and where the full traceback is."""

    stage: str
    key: str
    plugin: str
    reason: str
    traceback_file: Path


class StageLedger:
    """The units of one stage: done ones by key and fingerprint, failures by key."""

    def __init__(self, work: Path, failures: Path) -> None:
        self.units_dir = work / "units"
        self.path = work / "ledger.jsonl"
        self.failures_dir = failures
        self._done: dict[tuple[str, str], DoneUnit] = {}
        self._load()

    def unit_file(self, key: str, fingerprint: str) -> Path:
        if not UNIT_KEY_PATTERN.match(key):
            raise ValueError(f"unit key {key!r} is not a safe file name")
        self.units_dir.mkdir(parents=True, exist_ok=True)
        return self.units_dir / f"{key}.{fingerprint[:20]}.h5"

    def done(self, key: str, fingerprint: str) -> DoneUnit | None:
        """The finished unit, if its file is still intact."""
        unit = self._done.get((key, fingerprint))
        if unit is None or not unit.file.is_file():
            return None
        if file_sha256(unit.file) != unit.sha256:
            unit.file.unlink(missing_ok=True)  # corrupted: redo it
            del self._done[(key, fingerprint)]
            return None
        return unit

    def record_done(self, unit: DoneUnit) -> None:
        self._done[(unit.key, unit.fingerprint)] = unit
        line = {
            "key": unit.key,
            "fingerprint": unit.fingerprint,
            "file": unit.file.name,
            "sha256": unit.sha256,
            "content_digest": unit.content_digest,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")
        (self.failures_dir / f"{unit.key}.txt").unlink(missing_ok=True)

    def record_failure(
        self, stage: str, key: str, plugin: str, reason: str, details: str
    ) -> UnitFailure:
        path = self.failures_dir / f"{key}.txt"
        write_text(
            path,
            f"stage {stage}, unit {key}, {now_utc()}\nplugin: {plugin or '-'}\n"
            f"reason: {reason}\n\n{details.rstrip()}\n",
        )
        return UnitFailure(stage, key, plugin, reason, path)

    def keep_only(self, kept: list[DoneUnit]) -> None:
        """After the stage finished: forget (and delete) every unit not in ``kept``, so the
        work folder holds one generation of units."""
        names = {unit.file.name for unit in kept}
        if self.units_dir.is_dir():
            for path in self.units_dir.iterdir():
                if path.name in names:
                    continue
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink(missing_ok=True)
        self._done = {(u.key, u.fingerprint): u for u in kept}
        lines = "".join(
            json.dumps(
                {
                    "key": u.key,
                    "fingerprint": u.fingerprint,
                    "file": u.file.name,
                    "sha256": u.sha256,
                    "content_digest": u.content_digest,
                }
            )
            + "\n"
            for u in kept
        )
        write_text(self.path, lines)

    def _load(self) -> None:
        if not self.path.is_file():
            return
        for text in self.path.read_text(encoding="utf-8").splitlines():
            try:
                line = json.loads(text)
                unit = DoneUnit(
                    line["key"],
                    line["fingerprint"],
                    self.units_dir / line["file"],
                    line["sha256"],
                    line["content_digest"],
                )
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line torn by a kill: that unit is simply redone
            self._done[(unit.key, unit.fingerprint)] = unit
