"""Where work units run: in this process, or in a local process pool.

Stages hand independent work units (a patient, a batch of designs) to an executor and consume
results as they complete; the stage code does not change with the executor.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Protocol, TypeVar

from hydraopt.config import ExecutionConfig

Item = TypeVar("Item")
Result = TypeVar("Result")


class Executor(Protocol):
    workers: int

    def map_unordered(
        self, function: Callable[[Item], Result], items: Iterable[Item]
    ) -> Iterator[tuple[Item, Result]]:
        """Apply ``function`` to each item; yield ``(item, result)`` as each completes."""
        ...


class InlineExecutor:
    """Runs each unit in this process, in order: no start-up cost, easiest to debug."""

    workers = 1

    def map_unordered(
        self, function: Callable[[Item], Result], items: Iterable[Item]
    ) -> Iterator[tuple[Item, Result]]:
        for item in items:
            yield item, function(item)


class ProcessPoolRunner:
    """A pool of worker processes; ``function`` and items must be picklable.

    Workers are started with 'spawn' so that libraries holding threads (torch, BLAS) in the
    parent never leave a forked child deadlocked. At most ``2 * workers`` units are in flight,
    so a generator of millions of units is consumed lazily.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def map_unordered(
        self, function: Callable[[Item], Result], items: Iterable[Item]
    ) -> Iterator[tuple[Item, Result]]:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.workers, mp_context=context) as pool:
            pending: dict[Future, Item] = {}
            source = iter(items)
            exhausted = False
            while pending or not exhausted:
                while not exhausted and len(pending) < 2 * self.workers:
                    try:
                        item = next(source)
                    except StopIteration:
                        exhausted = True
                        break
                    pending[pool.submit(function, item)] = item
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield pending.pop(future), future.result()


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def make_executor(config: ExecutionConfig, n_units: int) -> Executor:
    """The executor for ``n_units`` units: inline when one worker would do."""
    workers = config.workers or available_cores()
    workers = max(1, min(workers, n_units))
    return InlineExecutor() if workers == 1 else ProcessPoolRunner(workers)
