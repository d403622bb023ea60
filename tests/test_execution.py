"""hydraopt's worker pool: results as they come, failures as results, workers replaced."""

import os
import sys
import threading

import pytest

from hydraopt.config import ExecutionConfig
from hydraopt.execution import InlineExecutor, Task, WorkerPool, make_executor


def square(x):
    return x * x


def exit_soon_after_answering(x):
    """Answers, then its process ends while idle (as an OOM kill of an idle worker would)."""
    threading.Timer(0.05, os._exit, (3,)).start()
    return x


def calls_sys_exit(x):
    sys.exit(0)


def test_results_come_back_for_every_task():
    tasks = [Task(str(i), square, (i,)) for i in range(7)]
    results = {r.key: r.value for r in WorkerPool(2).run(tasks)}
    assert results == {str(i): i * i for i in range(7)}


def test_a_worker_that_dies_while_idle_is_replaced_not_fatal():
    tasks = [Task("a", exit_soon_after_answering, (1,))]
    tasks += [Task(f"b{i}", square, (i,)) for i in range(3)]
    results = {r.key: r for r in WorkerPool(1).run(tasks)}
    assert results["a"].value == 1
    assert [results[f"b{i}"].value for i in range(3)] == [0, 1, 4]


def test_a_task_that_cannot_be_sent_fails_alone():
    lock = threading.Lock()  # cannot be pickled
    tasks = [Task("bad", square, (lock,)), Task("ok1", square, (2,)), Task("ok2", square, (3,))]
    results = {r.key: r for r in WorkerPool(1).run(tasks)}
    assert "cannot be sent to a worker process" in results["bad"].error.reason
    assert (results["ok1"].value, results["ok2"].value) == (4, 9)


def test_a_plugins_sys_exit_is_a_failure_in_either_executor():
    for executor in (InlineExecutor(), WorkerPool(1)):
        [result] = list(executor.run([Task("x", calls_sys_exit, (1,))]))
        assert result.error is not None and "SystemExit" in result.error.reason


def test_only_an_explicit_single_worker_runs_in_the_driver():
    assert isinstance(make_executor(ExecutionConfig(workers=1), 5), InlineExecutor)
    # With workers chosen automatically, even one unit runs in a worker, so that a unit that
    # crashes its process (a segfault, the OOM killer) cannot take the run down with it.
    assert isinstance(make_executor(ExecutionConfig(workers=0), 1), WorkerPool)
    assert isinstance(make_executor(ExecutionConfig(workers=1), 5, needs_timeout=True), WorkerPool)
    assert make_executor(ExecutionConfig(workers=4), 2).workers == 2


@pytest.mark.parametrize("workers", [1, 2])
def test_a_timeout_kills_only_that_task(workers):
    import time

    tasks = [Task("slow", time.sleep, (60,), timeout_s=1.0)]
    tasks += [Task(f"q{i}", square, (i,), timeout_s=30.0) for i in range(4)]
    start = time.monotonic()
    results = {r.key: r for r in WorkerPool(workers).run(tasks)}
    assert time.monotonic() - start < 30
    assert results["slow"].error.kind == "timeout"
    assert [results[f"q{i}"].value for i in range(4)] == [0, 1, 4, 9]
