"""The cost of hydraopt's worker pool against concurrent.futures' process pool.

hydraopt's pool does more per task (a deadline, death detection, a retry, parent-death
watching) than ``concurrent.futures.ProcessPoolExecutor``, which it replaced. This measures
what that costs: the same tasks through both pools in the same run, a short task (1 ms of
work, where per-task overhead dominates) and a unit-sized one (200 ms, a small simulation),
plus the pool's start-up.

    .venv/bin/python benchmarks/bench_execution.py [--workers 2] [--tasks 400]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

from hydraopt.execution import Task, WorkerPool


def work(seconds: float) -> float:
    """Busy work for ``seconds`` (not sleep: a simulation keeps its core busy)."""
    end = time.perf_counter() + seconds
    total = 0.0
    while time.perf_counter() < end:
        total += 1.0
    return total


def futures_pool(workers: int, seconds: float, n: int) -> float:
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending = {pool.submit(work, seconds) for _ in range(min(n, 2 * workers))}
        submitted = len(pending)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                future.result()
                if submitted < n:
                    pending.add(pool.submit(work, seconds))
                    submitted += 1
    return time.perf_counter() - start


def hydraopt_pool(workers: int, seconds: float, n: int) -> float:
    start = time.perf_counter()
    tasks = (Task(str(i), work, (seconds,), timeout_s=60.0) for i in range(n))
    for result in WorkerPool(workers).run(tasks):
        assert result.error is None, result.error
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=400)
    args = parser.parse_args()
    print(f"{args.workers} workers; times include starting the pool")
    print(f"{'task':>10} {'tasks':>6} {'futures s':>10} {'hydraopt s':>11} {'ratio':>6}")
    for seconds, n in ((0.0, 1), (0.001, args.tasks), (0.2, 20)):
        baseline = futures_pool(args.workers, seconds, n)
        ours = hydraopt_pool(args.workers, seconds, n)
        label = "start-up" if n == 1 else f"{seconds * 1000:g} ms"
        print(f"{label:>10} {n:>6} {baseline:>10.2f} {ours:>11.2f} {ours / baseline:>6.2f}")


if __name__ == "__main__":
    main()
