"""What a run did, produced and failed: ``SUMMARY.md`` in the run directory, and the lines
``hydraopt run`` ends with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hydraopt.atomic import write_text
from hydraopt.ledger import UnitFailure
from hydraopt.store import now_utc

SUMMARY_FILE = "SUMMARY.md"
# Failures listed one by one; more are counted (every traceback is in failures/).
LISTED_FAILURES = 20


@dataclass
class RunSummary:
    run_dir: Path
    pipeline_file: Path
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, list[UnitFailure]] = field(default_factory=dict)
    # Units that failed in stages that went on without them, their failure recorded.
    recorded: dict[str, list[UnitFailure]] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)
    not_run: list[str] = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def n_failures(self) -> int:
        return sum(len(f) for f in self.failed.values())

    @property
    def summary_file(self) -> Path:
        return self.run_dir / SUMMARY_FILE

    def accounted(self) -> set[str]:
        return {*self.ran, *self.skipped, *self.failed, *self.blocked, *self.not_run}

    def lines(self) -> list[str]:
        """The run's outcome in plain lines (the CLI's closing report)."""
        out = [
            f"ran: {', '.join(self.ran) or 'nothing'}; "
            f"skipped (unchanged): {', '.join(self.skipped) or 'nothing'}"
        ]
        if self.failed:
            out.append(
                f"FAILED: {self.n_failures} units in stage {', '.join(self.failed)}; "
                "every other unit is kept, and rerunning retries only the failed ones"
            )
            out += _failure_lines(
                [f for failures in self.failed.values() for f in failures], self.run_dir
            )
        n_recorded = sum(len(f) for f in self.recorded.values())
        if n_recorded:
            out.append(
                f"recorded as failed, the study went on: {n_recorded} units in stage "
                f"{', '.join(self.recorded)}; rerunning retries them"
            )
            shown = [f for failures in self.recorded.values() for f in failures]
            out += _failure_lines(shown, self.run_dir)
        if self.blocked or self.not_run:
            out.append(f"not run: {', '.join(self.blocked + self.not_run)}")
        for name, path in self.artifacts.items():
            out.append(f"artifact {name}: {path}")
        out.append(f"summary: {self.summary_file}")
        return out


def _failure_lines(failures: list[UnitFailure], run_dir: Path) -> list[str]:
    out = []
    for failure in failures[:LISTED_FAILURES]:
        blame = f" [{failure.plugin}]" if failure.plugin else ""
        out.append(f"  {failure.stage} / {failure.key}{blame}: {failure.reason}")
    if len(failures) > LISTED_FAILURES:
        out.append(f"  ... and {len(failures) - LISTED_FAILURES} more")
    out.append(f"  tracebacks: {run_dir / 'failures'}")
    return out


def _failure_item(failure: UnitFailure, run_dir: Path) -> str:
    blame = f" ({failure.plugin})" if failure.plugin else ""
    where = failure.traceback_file.relative_to(run_dir)
    return f"- {failure.stage} / `{failure.key}`{blame}: {failure.reason} (traceback: `{where}`)"


def write_summary(summary: RunSummary) -> None:
    """``SUMMARY.md``: a short, human-readable account of the last run."""
    n_recorded = sum(len(f) for f in summary.recorded.values())
    status = (
        f"complete, {n_recorded} units recorded as failed"
        if summary.ok and not summary.not_run and not summary.blocked and n_recorded
        else "complete"
        if summary.ok and not summary.not_run and not summary.blocked
        else f"{summary.n_failures} units failed"
        if summary.failed
        else "incomplete"
    )
    text = [
        f"# {summary.run_dir.name}",
        "",
        f"- pipeline file: `{summary.pipeline_file}`",
        f"- last run ended: {now_utc()}, **{status}**",
        "",
        "## Stages",
        "",
    ]
    for name in summary.order:
        if name in summary.ran:
            text.append(f"- {name}: ran")
        elif name in summary.skipped:
            text.append(f"- {name}: skipped, inputs unchanged")
        elif name in summary.failed:
            text.append(f"- {name}: **{len(summary.failed[name])} units failed**")
        elif name in summary.blocked:
            text.append(f"- {name}: not run, it needs a stage that failed")
        else:
            text.append(f"- {name}: not run, the run stopped")
    text += ["", "## Artifacts", ""]
    text += [
        f"- `{name}`: `{path.relative_to(summary.run_dir)}`"
        for name, path in summary.artifacts.items()
    ] or ["- none yet"]
    sections = (
        (
            summary.failed,
            "Failures",
            "Run the pipeline again to retry the failed units; finished ones are kept.",
        ),
        (
            summary.recorded,
            "Failed and recorded (the study went on)",
            "Their designs are marked failed with this reason in the stage's outputs; the "
            "next run retries them.",
        ),
    )
    for by_stage, heading, advice in sections:
        if by_stage:
            text += ["", f"## {heading}", ""]
            text += [_failure_item(f, summary.run_dir) for fs in by_stage.values() for f in fs]
            text += ["", advice]
    write_text(summary.summary_file, "\n".join(text) + "\n")
