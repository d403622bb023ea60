"""Stage tasks on a dask.distributed cluster: a LocalCluster, a running scheduler, or a
dask-jobqueue cluster (Slurm, PBS, SGE, LSF, HTCondor) whose jobs the batch system starts.

The stages hand the same :class:`~hydraopt.execution.Task`\\ s to this executor as to the
local pool, and get the same :class:`~hydraopt.execution.TaskResult`\\ s back, as they
complete. What the local pool does by itself, Dask does here:

* a worker that is lost (its node preempted, its process killed) has its task rescheduled by
  the scheduler on another worker, up to ``distributed.scheduler.allowed-failures`` times
  (set to hydraopt's one retry for the clusters it starts); after that the task comes back as
  ``worker-died``;
* a task with a timeout runs in a fresh child process of the Dask worker (which builds the
  task's plugin anew), killed with every program it started when the timeout passes, so a
  hanging simulator frees its worker;
* when the driver is killed, a LocalCluster's workers end with it (each watches its parent),
  and a remote scheduler forgets the run's tasks once its client is gone.

Workers read their inputs from and write their unit files to the run directory, so on a
cluster the run directory (and the evaluation cache) must be on a filesystem every node sees.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

from hydraopt.config import DaskConfig
from hydraopt.errors import ConfigError
from hydraopt.execution import (
    RETRIES_AFTER_DEATH,
    Task,
    TaskError,
    TaskResult,
    WorkerPool,
    describe_exception,
    message_from_call,
    result_from_message,
)

JOBQUEUE_CLASSES = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
}
# Settings for the clusters hydraopt starts. A worker runs one task at a time (simulators and
# the surrogate use their own threads), and a task with a timeout starts a child process,
# which Python forbids in a daemonic process. The scheduler hands a worker its next task only
# when it is free (saturation 1.0, not Dask's 1.1, which queues a second task on a busy worker
# while another may go idle): tasks here run seconds to minutes, so the wait costs nothing.
CLUSTER_CONFIG = {
    "distributed.scheduler.allowed-failures": RETRIES_AFTER_DEATH,
    "distributed.scheduler.worker-saturation": 1.0,
    "distributed.worker.daemon": False,
}


# The environment variable that lets a Dask worker start child processes.
DAEMON_VARIABLE = "DASK_DISTRIBUTED__WORKER__DAEMON"


def run_on_worker(task: Task) -> tuple[Any, ...]:
    """What a Dask worker runs for one task: the answer as a message, never an exception, so
    that only a lost worker reaches the scheduler as a failure."""
    import multiprocessing

    if task.timeout_s is None:
        return message_from_call(task.function, task.args)
    if multiprocessing.current_process().daemon:
        reason = (
            f"has a timeout, which needs a child process, and this Dask worker may not start "
            f"one: start the workers with {DAEMON_VARIABLE}=False"
        )
        return ("error", reason, reason, "", "raised")
    [result] = list(WorkerPool(1).run([task]))
    if result.error is None:
        return ("ok", result.value)
    error = result.error
    return ("error", error.reason, error.details, error.plugin, error.kind)


class DaskExecutor:
    """Runs tasks on the workers of a connected ``distributed.Client``."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))

    def run(self, tasks: Iterable[Task]) -> Iterator[TaskResult]:
        from distributed import as_completed

        run_id = uuid.uuid4().hex[:8]
        by_future = {}
        for task in tasks:
            future = self.client.submit(
                run_on_worker, task, key=f"hydraopt-{task.key}-{run_id}", pure=False
            )
            by_future[future] = task
        try:
            for future in as_completed(by_future):
                task = by_future[future]
                yield _task_result(task, future)
                future.release()
        finally:
            self.client.cancel([f for f in by_future if not f.done()])


def _task_result(task: Task, future: Any) -> TaskResult:
    from distributed import KilledWorker

    try:
        message = future.result()
    except KilledWorker as exc:
        return TaskResult(
            task.key,
            error=TaskError(
                "worker-died",
                f"its Dask worker was lost {RETRIES_AFTER_DEATH + 1} times",
                f"the scheduler gave up on task {task.key}: {exc}; a node taken back by the "
                "batch system, the out-of-memory killer or a crash in compiled code are the "
                "usual causes",
            ),
        )
    except Exception as exc:  # cancelled, or the task could not be sent to a worker
        return TaskResult(task.key, error=describe_exception(exc))
    return result_from_message(task, message)


@contextlib.contextmanager
def dask_client(settings: DaskConfig, workers: int) -> Iterator[Any]:
    """A client to the configured cluster, closed (and a cluster it started, stopped) on
    exit."""
    from distributed import Client

    _quiet_dask_logs()
    if settings.scheduler_address:
        with Client(settings.scheduler_address) as client:
            yield client
        return
    with make_cluster(settings, workers) as cluster:
        if settings.cluster != "local":
            cluster.scale(n=workers)  # the batch system starts the workers' jobs
        with Client(cluster) as client:
            yield client


def make_cluster(settings: DaskConfig, workers: int) -> Any:
    """The cluster ``settings`` describe, its scheduler started in this process: a
    LocalCluster of ``workers`` processes, or a dask-jobqueue cluster with no job yet."""
    import dask
    from distributed import LocalCluster

    with dask.config.set(CLUSTER_CONFIG):
        if settings.cluster == "local":
            options = {
                "n_workers": workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
                **settings.cluster_options,
            }
            return _cluster(LocalCluster, options)
        options = dict(settings.cluster_options)
        options["job_script_prologue"] = [
            *options.get("job_script_prologue", []),
            f"export {DAEMON_VARIABLE}=False",
        ]
        return _cluster(_jobqueue_class(settings.cluster), options)


def _quiet_dask_logs() -> None:
    """Dask's INFO lines (each worker started, each client connected) would bury the run's
    own report; warnings and errors still show. DASK_LOGGING__DISTRIBUTED sets it back."""
    import logging
    import os

    if "DASK_LOGGING__DISTRIBUTED" not in os.environ:
        logging.getLogger("distributed").setLevel(logging.WARNING)


def _cluster(cls: Any, options: dict[str, Any]) -> Any:
    try:
        return cls(**options)
    except (TypeError, RuntimeError) as exc:
        # An option the class does not take fails at once, or (passed on to the workers)
        # as a worker that cannot start.
        cause = _type_error_in(exc)
        if cause is None:
            raise
        raise ConfigError(
            [f"execution.dask.cluster_options: {cls.__name__} does not accept them: {cause}"]
        ) from None


def _type_error_in(exc: BaseException | None) -> TypeError | None:
    while exc is not None:
        if isinstance(exc, TypeError) and "argument" in str(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _jobqueue_class(name: str) -> Any:
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError(
            [
                f"execution.dask.cluster = {name!r} needs dask-jobqueue: "
                "pip install 'hydraopt[cluster]'"
            ]
        ) from None
    return getattr(dask_jobqueue, JOBQUEUE_CLASSES[name])
