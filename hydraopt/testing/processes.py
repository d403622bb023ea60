"""A plugin's evaluation as the core runs it: in a worker process, under ``timeout_s``.

Each evaluation task runs in a worker process of its own group; at ``timeout_s`` the core
kills that group, programs the plugin started included, and carries on. A plugin honours the
timeout when its evaluation fits in it and when, killed at it, nothing it started survives (a
program started in a session of its own escapes the group and keeps computing). Every process
a checked evaluation starts inherits a marker in its environment, so survivors can be found.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from hydraopt.plugin_types import PluginRegistration, PluginSettings

MARKER_VARIABLE = "HYDRAOPT_CONFORMANCE_MARKER"
# How long a killed evaluation's programs are given to exit before counting as survivors.
SURVIVOR_GRACE_S = 1.0
# The kill lands this far into an evaluation that took t seconds: mid-way, where a solver
# the plugin started is most likely running.
KILL_AT_FRACTION = 0.5
SHORTEST_KILL_S = 0.1


@dataclass(frozen=True)
class WorkerRun:
    """How an evaluation in a worker went: its answer (None if killed), its wall time, and
    the processes it left running (pid and command line)."""

    value: Any
    seconds: float
    survivors: tuple[str, ...]
    error: str = ""


def call_in_worker(
    registration: PluginRegistration,
    settings: PluginSettings,
    method: str,
    args: tuple[Any, ...],
    timeout_s: float,
) -> WorkerRun:
    """``factory(settings).method(*args)`` in a worker process of the core's pool, stopped at
    ``timeout_s``; the registration and settings reach the worker pickled, as in a run."""
    from hydraopt.execution import Task, WorkerPool

    marker = uuid.uuid4().hex
    task = Task(
        "conformance",
        _build_and_call,
        (registration, settings, method, args, marker),
        timeout_s=timeout_s,
    )
    started = time.monotonic()
    (result,) = list(WorkerPool(1).run([task]))
    seconds = time.monotonic() - started
    survivors = _survivors(marker)
    if result.error is not None:
        return WorkerRun(None, seconds, survivors, f"{result.error.kind}: {result.error.reason}")
    value, seconds_inside = result.value
    return WorkerRun(value, seconds_inside, survivors)


def _build_and_call(
    registration: PluginRegistration,
    settings: PluginSettings,
    method: str,
    args: tuple[Any, ...],
    marker: str,
) -> tuple[Any, float]:
    """In the worker: mark this process's environment, build the plugin, call it."""
    os.environ[MARKER_VARIABLE] = marker
    started = time.monotonic()
    plugin = registration.factory(settings)
    value = getattr(plugin, method)(*args)
    return value, time.monotonic() - started


def _survivors(marker: str) -> tuple[str, ...]:
    """Processes still running with ``marker`` in their environment, after a grace period."""
    import psutil

    deadline = time.monotonic() + SURVIVOR_GRACE_S
    while True:
        found, survivors = [], []
        for process in psutil.process_iter(["pid", "cmdline"]):
            try:
                if process.environ().get(MARKER_VARIABLE) == marker:
                    command = " ".join(process.info["cmdline"] or []) or "?"
                    found.append(f"pid {process.info['pid']}: {command}")
                    survivors.append(process)
            except (psutil.Error, OSError):
                continue  # gone, or another user's
        if not found or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    for process in survivors:  # reported, then stopped: a check leaves nothing behind
        with contextlib.suppress(psutil.Error):
            process.kill()
    return tuple(found)


def check_honours_timeout(
    registration: PluginRegistration,
    settings: PluginSettings,
    method: str,
    args: tuple[Any, ...],
    timeout_s: float,
    label: str,
) -> WorkerRun:
    """The evaluation finishes within ``timeout_s`` in a worker process, leaving no process
    running; killed half-way through, as the core kills a unit that overruns, it leaves none
    either. Returns the finished run."""
    finished = call_in_worker(registration, settings, method, args, timeout_s)
    assert not finished.error, f"{label} in a worker process, as a run calls it: {finished.error}"
    assert not finished.survivors, (
        f"{label} returned but left processes running: {'; '.join(finished.survivors)}"
    )
    kill_at = max(SHORTEST_KILL_S, KILL_AT_FRACTION * finished.seconds)
    killed = call_in_worker(registration, settings, method, args, kill_at)
    assert not killed.survivors, (
        f"{label} was stopped at a timeout of {kill_at:.2g} s, as the core stops an "
        f"evaluation that overruns, but these processes it started survived: "
        f"{'; '.join(killed.survivors)}. Start programs in the worker's process group (no "
        "new session), or stop them yourself"
    )
    return finished
