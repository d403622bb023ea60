"""What a run tells its user: stage lines and rich progress bars, or nothing with --quiet."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Reporter:
    """Reports stages and long loops; silent when ``quiet``."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)

    def say(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, highlight=False)

    def stage_started(self, name: str, description: str) -> None:
        self.say(f"[bold]stage {name}[/bold]: {description}")

    def stage_skipped(self, name: str, reason: str) -> None:
        self.say(f"[dim]stage {name}: skipped ({reason})[/dim]")

    def stage_finished(self, name: str, seconds: float) -> None:
        self.say(f"[green]stage {name}: done in {seconds:.1f} s[/green]")

    @contextlib.contextmanager
    def task(
        self, description: str, total: int, unit: str = "items", done: int = 0
    ) -> Iterator[Callable[[int], None]]:
        """A progress bar over ``total`` units, ``done`` of them finished by an earlier run;
        yields ``advance(k)``. The rate counts only the work done now."""
        if self.quiet:
            yield lambda k=1: None
            return
        columns = (
            TextColumn("  {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(f"{{task.fields[rate]}} {unit}/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        start = time.perf_counter()
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(description, total=total, completed=done, rate="-")

            def advance(k: int = 1) -> None:
                progress.advance(task_id, k)
                done_now = progress.tasks[0].completed - done
                elapsed = max(time.perf_counter() - start, 1e-9)
                rate = done_now / elapsed
                progress.update(task_id, rate=f"{rate:,.0f}" if rate >= 10 else f"{rate:.2f}")

            yield advance
