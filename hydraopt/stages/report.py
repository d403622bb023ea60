"""Stage ``report``: Stage 3's results as one self-contained HTML page.

It reads the cohort, the ``screen`` shards (per patient: the filter chain's funnel, the
finalists with their predicted and simulated outcomes, the pareto objectives) and
``final_designs`` (each patient's chosen design, the patients whose chain emptied), and writes
the folder artifact ``report``: ``index.html`` (title, a cohort summary table with one row per
chosen design, the patients without a design and why, and per patient a section with its
design, predicted and simulated outcomes and figures, all embedded so the file stands alone)
and the same figures as PNG files under ``figures/`` (``PATIENT-funnel.png``,
``PATIENT-pareto.png``, ``PATIENT-predicted_vs_simulated.png``, ``PATIENT-trajectory.png``;
a figure whose data is absent is left out).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydraopt.domain import Cohort
from hydraopt.report_figures import patient_figures
from hydraopt.report_html import design_rows, patient_section_html, report_document
from hydraopt.stages.base import Stage, StageContext
from hydraopt.store import RunStore, ShardedArtifact

INDEX = "index.html"
FIGURES = "figures"


def _run(context: StageContext) -> None:
    folder = context.scratch_dir() / "report"
    shutil.rmtree(folder, ignore_errors=True)  # what a killed run left
    folder.mkdir()
    meta = write_report(context.store, context.config.study.name, folder)
    context.write_folder("report", folder, meta=meta)
    # The stage record, through which store.folder() finds the artifact, is written only
    # when the stage finishes: the path comes from the record of what was just written.
    index = context.store.run_dir / context.outputs["report"].path / INDEX
    context.reporter.say(
        f"  report of {len(meta['patients'])} chosen designs, "
        f"{len(meta['emptied'])} emptied chains: {index}"
    )


def write_report(store: RunStore, study: str, folder: Path) -> dict[str, Any]:
    """Write ``index.html`` and the figures of the run in ``store`` into ``folder``; return
    the artifact's meta (the page, the figure files, the patients shown)."""
    cohort = Cohort.from_columns(store.tables("cohort").table("patients"))
    final = store.tables("final_designs")
    designs = final.table("designs")
    emptied = {str(pid): str(reason) for pid, reason in final.meta.get("emptied", {}).items()}
    screen = store.shards("screen")
    screened = set(screen.keys())
    chosen = design_rows(designs)
    (folder / FIGURES).mkdir()
    sections, written = [], []
    for pid in patient_order(cohort.ids, screened, chosen, emptied):
        figures = (
            _figures_of(screen, pid, final.meta.get("trajectory_weeks", {}))
            if pid in screened
            else {}
        )
        for name, png in figures.items():
            relative = f"{FIGURES}/{pid}-{name}.png"
            (folder / relative).write_bytes(png)
            written.append(relative)
        baseline = cohort.get(pid) if pid in cohort.ids else None
        sections.append(
            patient_section_html(pid, chosen.get(pid), emptied.get(pid), baseline, figures)
        )
    page = report_document(study, designs, emptied, sections, final.meta.get("filters", []))
    (folder / INDEX).write_text(page, encoding="utf-8")
    return {"index": INDEX, "figures": written, "patients": list(chosen), "emptied": emptied}


def patient_order(cohort_ids: Sequence[str], *groups: Iterable[str]) -> list[str]:
    """Every patient of any group (shards, chosen designs, emptied chains) once, in cohort
    order, then any the cohort does not hold."""
    wanted = {str(pid) for group in groups for pid in group}
    ordered = [pid for pid in cohort_ids if pid in wanted]
    return ordered + sorted(wanted - set(ordered))


def _figures_of(
    screen: ShardedArtifact, patient_id: str, trajectory_weeks: Mapping[str, Sequence[float]]
) -> dict[str, bytes]:
    """The patient's figures, reading its shard alone (a cohort's finalists never sit in
    memory together)."""
    return patient_figures(
        screen.table(patient_id, "funnel"),
        screen.table(patient_id, "finalists"),
        # [column, sense] pairs in the chain's order (the meta's tables are key-sorted).
        dict(screen.shard_meta(patient_id).get("objectives") or []),
        trajectory_weeks,
    )


STAGE = Stage(
    name="report",
    version="1",
    description="write a self-contained HTML report of Stage 3's designs, fronts and funnels",
    sections=("screen",),
    inputs=("cohort", "screen", "final_designs"),
    outputs={"report": "folder"},
    enabled=lambda config: config.screen is not None and config.surrogate is not None,
    depends_on=lambda config: {"study": config.study.name},
    plugins=lambda config: [],
    run=_run,
)
