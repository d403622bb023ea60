"""Where work units run: in this process, or in a pool of worker processes.

Stages hand independent tasks (a patient, a batch of designs) to an executor and consume
results as they complete; the stage code does not change with the executor. A task never
raises out of an executor: whatever goes wrong (the task raised, overran its timeout, or its
worker process died) comes back as a :class:`TaskError`, so one bad unit never stops the
others.

The worker pool is hydraopt's own, not :mod:`concurrent.futures`', because it must do three
things that one cannot:

* kill a task that overruns its timeout (a hanging simulator) and carry on with a fresh
  worker;
* when a worker dies (a segfault in compiled code, the kernel's OOM killer), fail that task
  only, retry it once, and carry on;
* stop its workers when the driver is killed, however it is killed: each worker asks the
  kernel for SIGKILL when its parent dies (Linux ``PR_SET_PDEATHSIG``) and also watches its
  parent's pid, so no orphan keeps computing and writing into the run directory.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import signal
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Literal, Protocol

from hydraopt.config import ExecutionConfig

# A worker that died is given its task once more: a transient kill (OOM under a burst of
# memory use elsewhere) should not need a rerun; a task that kills every worker stops there.
RETRIES_AFTER_DEATH = 1
PARENT_POLL_S = 0.5
STOP_GRACE_S = 2.0


@dataclass(frozen=True)
class Task:
    """``function(*args)`` to run, with an optional wall-clock limit."""

    key: str
    function: Callable[..., Any]
    args: tuple[Any, ...]
    timeout_s: float | None = None


@dataclass(frozen=True)
class TaskError:
    """Why a task did not finish.

    :param kind: ``raised`` (an exception), ``timeout`` or ``worker-died``.
    :param reason: one line.
    :param details: the full traceback, or what is known about a death.
    :param plugin: the plugin to blame, when the exception named one.
    """

    kind: Literal["raised", "timeout", "worker-died"]
    reason: str
    details: str
    plugin: str = ""


@dataclass(frozen=True)
class TaskResult:
    key: str
    value: Any = None
    error: TaskError | None = None


class Executor(Protocol):
    workers: int

    def run(self, tasks: Iterable[Task]) -> Iterator[TaskResult]:
        """Run every task; yield each result as it completes."""
        ...


def describe_exception(exc: BaseException) -> TaskError:
    plugin = getattr(exc, "plugin_label", "")
    return TaskError(
        "raised",
        f"{type(exc).__name__}: {exc}".splitlines()[0],
        "".join(traceback.format_exception(exc)),
        plugin,
    )


class InlineExecutor:
    """Runs each task in this process, in order: no start-up cost, easiest to debug. It
    cannot enforce timeouts; :func:`make_executor` picks a pool when a task has one."""

    workers = 1

    def run(self, tasks: Iterable[Task]) -> Iterator[TaskResult]:
        for task in tasks:
            try:
                value = task.function(*task.args)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # a plugin's sys.exit too; Ctrl-C still stops
                yield TaskResult(task.key, error=describe_exception(exc))
            else:
                yield TaskResult(task.key, value)


@dataclass
class _Worker:
    process: Any
    connection: Connection
    task: Task | None = None
    deadline: float | None = None


class WorkerPool:
    """``workers`` processes started with 'spawn' (libraries holding threads in the parent,
    torch or BLAS, never leave a forked child deadlocked). Tasks and results must pickle."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(self, tasks: Iterable[Task]) -> Iterator[TaskResult]:
        context = multiprocessing.get_context("spawn")
        source = iter(tasks)
        retry: deque[Task] = deque()
        deaths: dict[str, int] = {}
        workers = [self._start(context) for _ in range(self.workers)]
        try:
            while True:
                for index in range(len(workers)):
                    while workers[index].task is None:
                        task = retry.popleft() if retry else next(source, None)
                        if task is None:
                            break
                        if not workers[index].process.is_alive():  # died while idle
                            workers[index] = self._replace(context, workers[index])
                        sent = _send(workers[index], task)
                        if sent == "broken":  # it died just now: a new worker takes the task
                            workers[index] = self._replace(context, workers[index])
                            retry.appendleft(task)
                        elif sent != "sent":
                            yield sent  # the task cannot be sent; the worker takes the next
                busy = [w for w in workers if w.task is not None]
                if not busy:  # idle workers found no task left: all done
                    return
                deadlines = [w.deadline for w in busy if w.deadline is not None]
                timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
                ready = wait(
                    [w.connection for w in busy] + [w.process.sentinel for w in busy], timeout
                )
                for index, worker in enumerate(workers):
                    task = worker.task
                    if task is None:
                        continue
                    if worker.connection in ready or worker.process.sentinel in ready:
                        message = _receive(worker)
                        if message is not None:
                            worker.task = worker.deadline = None
                            yield result_from_message(task, message)
                            continue
                        workers[index] = self._replace(context, worker)
                        deaths[task.key] = deaths.get(task.key, 0) + 1
                        if deaths[task.key] <= RETRIES_AFTER_DEATH:
                            retry.append(task)
                        else:
                            yield TaskResult(task.key, error=_death(worker, deaths[task.key]))
                    elif worker.deadline is not None and time.monotonic() >= worker.deadline:
                        workers[index] = self._replace(context, worker)
                        yield TaskResult(
                            task.key,
                            error=TaskError(
                                "timeout",
                                f"did not finish within its timeout of {task.timeout_s:g} s; "
                                "the worker was killed",
                                f"task {task.key} was still running after {task.timeout_s:g} s",
                            ),
                        )
        finally:
            for worker in workers:
                _stop(worker)

    def _start(self, context: Any) -> _Worker:
        parent, child = context.Pipe()
        process = context.Process(
            target=_worker_main, args=(child, os.getpid()), daemon=True, name="hydraopt-worker"
        )
        process.start()
        child.close()
        return _Worker(process, parent)

    def _replace(self, context: Any, worker: _Worker) -> _Worker:
        _kill(worker)
        return self._start(context)


def _send(worker: _Worker, task: Task) -> Literal["sent", "broken"] | TaskResult:
    """Give ``task`` to an idle worker. The pickling happens before a byte is written, so a
    task that cannot pickle leaves the worker idle and usable."""
    try:
        worker.connection.send((task.key, task.function, task.args))
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        return TaskResult(
            task.key,
            error=TaskError(
                "raised",
                f"cannot be sent to a worker process: {exc}",
                "".join(traceback.format_exception(exc)),
            ),
        )
    except OSError:  # the pipe is broken: the worker died while idle
        return "broken"
    worker.task = task
    worker.deadline = time.monotonic() + task.timeout_s if task.timeout_s else None
    return "sent"


def _receive(worker: _Worker) -> tuple[Any, ...] | None:
    """The worker's answer, or None when it died without one."""
    try:
        if worker.connection.poll():
            return worker.connection.recv()
    except (EOFError, OSError):
        pass
    worker.process.join(timeout=1.0)
    return None


def message_from_call(function: Callable[..., Any], args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Run ``function(*args)`` and describe how it went in a message that pickles:
    ``("ok", value)`` or ``("error", reason, details, plugin, kind)``."""
    try:
        return ("ok", function(*args))
    except BaseException as exc:  # a plugin's sys.exit is a failure too, not a shutdown
        error = describe_exception(exc)
        return ("error", error.reason, error.details, error.plugin, error.kind)


def result_from_message(task: Task, message: tuple[Any, ...]) -> TaskResult:
    if message[0] == "ok":
        return TaskResult(task.key, message[1])
    _, reason, details, plugin, kind = message
    return TaskResult(task.key, error=TaskError(kind, reason, details, plugin))


def _death(worker: _Worker, times: int) -> TaskError:
    code = worker.process.exitcode
    if code is None:
        how = "ended"
    elif code < 0:
        how = f"killed by signal {signal.Signals(-code).name}"
    else:
        how = f"exited with status {code}"
    return TaskError(
        "worker-died",
        f"its worker process died ({how}), {times} times",
        f"the worker process (pid {worker.process.pid}) running this task {how}; a segfault "
        "in compiled code or the kernel's out-of-memory killer are the usual causes",
    )


def _kill(worker: _Worker) -> None:
    """Kill the worker and every process it started (its own process group)."""
    if worker.process.is_alive():
        try:
            os.killpg(worker.process.pid, signal.SIGKILL)
        except OSError:  # not yet its own group leader, or gone
            worker.process.kill()
    worker.process.join(timeout=STOP_GRACE_S)
    worker.connection.close()


def _stop(worker: _Worker) -> None:
    if worker.task is None and worker.process.is_alive():
        with contextlib.suppress(OSError):
            worker.connection.send(None)
        worker.process.join(timeout=STOP_GRACE_S)
    _kill(worker)


def _worker_main(connection: Connection, parent_pid: int) -> None:
    # A process group of its own: a timeout kills the worker with every program its plugin
    # started (a mesher, an external solver), and Ctrl-C reaches the driver only, which then
    # stops its workers itself.
    os.setsid()
    _die_with_parent(parent_pid)
    while True:
        try:
            message = connection.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        _key, function, args = message
        answer = message_from_call(function, args)
        try:
            connection.send(answer)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            connection.send(("error", f"its result cannot be sent back: {exc}", "", "", "raised"))


def _die_with_parent(parent_pid: int) -> None:
    """End this worker when the driver ends, even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG; Linux only
    except (OSError, AttributeError):
        pass

    def watch() -> None:
        while True:
            if os.getppid() != parent_pid:
                os._exit(70)
            time.sleep(PARENT_POLL_S)

    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(70)
    threading.Thread(target=watch, daemon=True, name="hydraopt-parent-watch").start()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def make_executor(config: ExecutionConfig, n_tasks: int, needs_timeout: bool = False) -> Executor:
    """The executor for ``n_tasks`` tasks. Inline only when the pipeline asks for one worker
    (``workers = 1``) and no task has a timeout (only a separate process can be stopped when
    it hangs); otherwise a pool, even of one worker, so that a unit that crashes its process
    takes down a worker, not the run."""
    if n_tasks == 0 or (config.workers == 1 and not needs_timeout):
        return InlineExecutor()
    workers = config.workers or available_cores()
    return WorkerPool(max(1, min(workers, n_tasks)))


class ExecutionEngine:
    """Where a run's tasks go, for the whole run: the local pool, or a Dask cluster that is
    started (or connected to) when the first tasks need it and kept until the run ends, so
    a run whose stages are all done never starts one.

    :param announce: told once, in words and as journal fields, where the tasks run.
    """

    def __init__(
        self,
        config: ExecutionConfig,
        announce: Callable[[str, dict[str, Any]], None] = lambda text, fields: None,
    ) -> None:
        self.config = config
        self.announce = announce
        self._stack = contextlib.ExitStack()
        self._client: Any = None

    def executor(self, n_tasks: int, needs_timeout: bool = False) -> Executor:
        if self.config.engine == "local" or n_tasks == 0:
            return make_executor(self.config, n_tasks, needs_timeout)
        from hydraopt.dask_engine import DaskExecutor, dask_client

        if self._client is None:
            workers = self.config.workers or available_cores()
            self._client = self._stack.enter_context(dask_client(self.config.dask, workers))
            fields = {"engine": "dask", "scheduler": self._client.scheduler.address}
            self.announce(f"dask scheduler {fields['scheduler']}", fields)
        return DaskExecutor(self._client)

    def close(self) -> None:
        self._stack.close()
        self._client = None

    def __enter__(self) -> ExecutionEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
