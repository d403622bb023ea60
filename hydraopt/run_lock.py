"""One run at a time per run directory, and one pipeline file per run directory.

The lock is an advisory ``flock`` on ``RUN_DIR/.lock``, held for the whole run: the kernel
releases it when the holding process ends, however it ends (a SIGKILL included), so a stale
lock never blocks the next run. The file names its holder (process, host, command, start
time) so that a refused run can say who holds it.

``run.json`` records the pipeline file that made the directory: another file with the same
study name and output folder would silently mix two studies' results, so it is refused
unless the user asks for it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from hydraopt.atomic import write_json
from hydraopt.errors import StoreError
from hydraopt.store import now_utc

LOCK_FILE = ".lock"
OWNER_FILE = "run.json"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock; refuse with the holder's name when it is taken."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    handle = (run_dir / LOCK_FILE).open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise StoreError(
                f"{run_dir} is in use by another run ({holder}); wait for it to finish, or "
                "give this study another name"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            f"pid {os.getpid()} on {socket.gethostname()}, started {now_utc()}: "
            f"{' '.join(sys.argv)}\n"
        )
        handle.flush()
        yield
    finally:
        handle.close()  # closing the descriptor releases the lock


def check_owner(run_dir: Path, pipeline_file: Path, adopt: bool) -> None:
    """Refuse ``pipeline_file`` if another pipeline file made ``run_dir``; with ``adopt``,
    record it as the new owner."""
    owner_path = run_dir / OWNER_FILE
    owner = _owner(owner_path)
    if owner is not None and owner != str(pipeline_file) and not adopt:
        raise StoreError(
            f"{run_dir} holds the results of another pipeline file, {owner}; give this study "
            "another study.name or study.output_dir, or pass --adopt-run-dir to let "
            f"{pipeline_file} take the directory over (its finished stages are reused only "
            "where their inputs are unchanged)"
        )
    if owner != str(pipeline_file):
        write_json(owner_path, {"pipeline_file": str(pipeline_file), "since_utc": now_utc()})


def _owner(path: Path) -> str | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))["pipeline_file"]
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError, KeyError):
        return None  # a damaged owner file is rewritten


def owner_problem(run_dir: Path, pipeline_file: Path) -> str | None:
    """For ``hydraopt validate``: why ``run`` would refuse this directory, if it would."""
    owner = _owner(run_dir / OWNER_FILE)
    if owner is not None and owner != str(pipeline_file):
        return (
            f"{run_dir} holds the results of another pipeline file, {owner}; "
            "`hydraopt run` refuses it without --adopt-run-dir"
        )
    return None
