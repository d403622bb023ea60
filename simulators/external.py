"""Running an external simulation program (FEBio, openCARP) as a subprocess, failure as data.

Both adapters write their input files into a folder of their own per evaluation, run the
program there with an argument list (never a shell), a timeout and the output captured to a
log file, and read its output files back. Whatever goes wrong with one evaluation (the program
is missing, it hangs, it ends in error, its output is missing or malformed) becomes an
:class:`EvaluationFailure` of a named kind with an excerpt of the program's log: the adapter
records the design as failed with that reason, and the study goes on.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from hydraopt.domain import Outcomes, OutputSpec
from hydraopt.plugin_types import PluginSettings

FailureKind = Literal[
    "missing-executable",
    "timeout",
    "error-termination",
    "missing-output",
    "malformed-output",
    "unexpected-error",
]
EXCERPT_LINES = 12  # lines of the program's log kept in a failure's reason
TRACEBACK_LINES = 6  # of an unexpected error's traceback, in its reason
TERMINATE_GRACE_S = 5.0  # from SIGTERM to SIGKILL: an MPI launcher passes SIGTERM on to its ranks
LOG_NAME = "program.log"


class ProgramSettings(PluginSettings):
    """How an external program is run; a simulator's settings add ``executable`` (with its
    program's default name) and its own."""

    launcher: list[str] = Field(
        default_factory=list,
        description="Command put before the executable, e.g. ['mpirun', '-np', '4'] to run "
        "it on four processes.",
    )
    extra_arguments: list[str] = Field(
        default_factory=list,
        description="Options appended to the program's command line.",
    )
    run_timeout_s: float = Field(
        1800.0,
        gt=0,
        description="Longest wall-clock time of one run of the program; a run past it is "
        "killed with every process it started and its design failed ('timeout'). (The "
        "table's own timeout_s, read by hydraopt, bounds a whole patient's designs.)",
    )


class EvaluationFailure(Exception):
    """One evaluation that gave no result: ``kind`` says which way it failed, ``message``
    what happened, ``log_excerpt`` the end of the program's output (may be empty)."""

    def __init__(self, kind: FailureKind, message: str, log_excerpt: str = "") -> None:
        super().__init__(kind, message, log_excerpt)
        self.kind, self.message, self.log_excerpt = kind, message, log_excerpt

    def __str__(self) -> str:
        return self.reason()

    def reason(self) -> str:
        """The design's failure reason: the kind, the message and the log's last lines."""
        text = f"{self.kind}: {self.message}"
        if self.log_excerpt:
            text += " | log: " + " / ".join(self.log_excerpt.splitlines())
        return text

    def record(self) -> dict[str, str]:
        return {"kind": self.kind, "message": self.message, "log_excerpt": self.log_excerpt}


@dataclass(frozen=True)
class ProgramRun:
    """A finished run of the program: its exit status, wall time and log."""

    argv: tuple[str, ...]
    returncode: int
    wall_s: float
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def excerpt(self) -> str:
        return log_excerpt(self.log_text())


def log_excerpt(text: str, lines: int = EXCERPT_LINES) -> str:
    """The last ``lines`` non-blank lines of a log, stripped."""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def resolve_executable(executable: str) -> str:
    """The program's path: ``executable`` as given when it names a file, else looked up on
    PATH. A program that cannot be found is a ``missing-executable`` failure."""
    if os.sep in executable or (os.altsep and os.altsep in executable):
        path = Path(executable).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path.resolve())
        raise EvaluationFailure("missing-executable", f"{executable} is not an executable file")
    found = shutil.which(executable)
    if found is None:
        raise EvaluationFailure(
            "missing-executable",
            f"{executable!r} is not on PATH; install it or set the plugin's 'executable' "
            "setting to its full path",
        )
    return found


def missing_program(launcher: Sequence[str], executable: str) -> list[str]:
    """What keeps ``launcher + [executable]`` from starting (the programs not found): what a
    simulator's ``environment_problems()`` reports."""
    problems = []
    for program in (*launcher[:1], executable):
        try:
            resolve_executable(program)
        except EvaluationFailure as failure:
            problems.append(failure.message)
    return problems


def run_program(
    argv: Sequence[str], workdir: Path, timeout_s: float, log_name: str = LOG_NAME
) -> ProgramRun:
    """Run ``argv`` in ``workdir`` with stdout and stderr to ``workdir/log_name``.

    The program stays in the caller's process group, so that when hydraopt stops a task (its
    ``timeout_s``, a lost worker) the program goes with it. At this run's own timeout the
    program and every process it started are sent SIGTERM (an MPI launcher passes it on to
    its ranks), then SIGKILL after :data:`TERMINATE_GRACE_S`; that is an
    :class:`EvaluationFailure` of kind ``timeout``. Any exit status is returned, not judged:
    each program says success its own way.
    """
    executable = resolve_executable(argv[0])
    command = (executable, *argv[1:])
    log_path = Path(workdir) / log_name
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        try:
            process = subprocess.Popen(
                command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        except OSError as exc:  # not executable, wrong format
            raise EvaluationFailure(
                "missing-executable", f"{executable} could not be started: {exc}"
            ) from None
        try:
            returncode = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _terminate_tree(process)
            raise EvaluationFailure(
                "timeout",
                f"{Path(executable).name} ran past its {timeout_s:g} s timeout and was killed",
                log_excerpt(log_path.read_text(errors="replace")),
            ) from None
        except BaseException:  # interrupted: never leave the program running
            _terminate_tree(process)
            raise
    return ProgramRun(command, returncode, time.perf_counter() - started, log_path)


def _terminate_tree(process: subprocess.Popen) -> None:
    """SIGTERM the program and its descendants, then SIGKILL what is left."""
    import psutil

    try:
        tree = [psutil.Process(process.pid)]
        tree += tree[0].children(recursive=True)
    except psutil.NoSuchProcess:
        process.wait()
        return
    for member in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _, alive = psutil.wait_procs(tree, timeout=TERMINATE_GRACE_S)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(alive, timeout=TERMINATE_GRACE_S)
    process.wait()


def write_failures(workdir: Path, failures: Mapping[str, EvaluationFailure]) -> None:
    """``failures.json`` in ``workdir``: every failed evaluation's kind, message and log
    excerpt, by the design's row in the batch (or ``"all"`` for what failed them all)."""
    if not failures:
        return
    records = {key: failure.record() for key, failure in failures.items()}
    (Path(workdir) / "failures.json").write_text(json.dumps(records, indent=2) + "\n")


def evaluate_rows(
    outputs: Sequence[OutputSpec],
    n: int,
    rows: Sequence[int],
    evaluate_row: Callable[[int], Mapping[str, float | np.ndarray]],
    failed: np.ndarray,
    reasons: np.ndarray,
    workdir: Path,
) -> Outcomes:
    """Outcomes of ``n`` designs, evaluating each of ``rows`` with ``evaluate_row(row)`` (its
    outputs by name). ``failed``/``reasons`` come in with the designs already failed (outside
    their polymer's ranges). An evaluation that raises :class:`EvaluationFailure` is failed
    with its reason; one that raises anything else too (``unexpected-error``, with the end of
    its traceback): one design's surprise must not throw away the batch's finished runs. All
    such failures are written to ``workdir/failures.json``."""
    values = {spec.name: np.full((n, *spec.shape), np.nan) for spec in outputs}
    failed, reasons = failed.copy(), reasons.copy()
    failures: dict[str, EvaluationFailure] = {}
    for row in rows:
        try:
            result = evaluate_row(int(row))
        except EvaluationFailure as failure:
            failures[str(row)] = failure
        except Exception as exc:
            failures[str(row)] = EvaluationFailure(
                "unexpected-error",
                f"{type(exc).__name__}: {exc}",
                log_excerpt(traceback.format_exc(), TRACEBACK_LINES),
            )
        else:
            for name, value in result.items():
                values[name][row] = value
            continue
        failed[row], reasons[row] = True, failures[str(row)].reason()
    write_failures(workdir, failures)
    return Outcomes(tuple(outputs), values, failed, reasons)


def all_failed(
    outputs: Sequence[OutputSpec],
    reasons: np.ndarray,
    workdir: Path,
    failure: EvaluationFailure | None = None,
) -> Outcomes:
    """Every design failed, each with its reason (what kept the whole batch from running: a
    patient the model cannot represent, a failed run of the untreated heart); ``failure``,
    when given, is written to ``workdir/failures.json`` as ``"all"``."""
    n = len(reasons)
    values = {spec.name: np.full((n, *spec.shape), np.nan) for spec in outputs}
    if failure is not None:
        write_failures(workdir, {"all": failure})
    return Outcomes(tuple(outputs), values, np.ones(n, dtype=bool), reasons.astype(object))
