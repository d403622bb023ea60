"""The Stage 3 report as one self-contained HTML document.

Everything the page needs is inside it: the CSS inline, the figures as base64
``data:image/png`` URIs, no script and no external resource, so the file can be mailed,
archived or opened from a cluster's file system as it is. Every text taken from the data is
escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hydraopt.domain import Patient

Columns = Mapping[str, np.ndarray]

DELTA_EF = "delta_ef_pct"
# (column of final_designs, header) of the summary table's design columns.
DESIGN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("polymer", "polymer"),
    ("coverage", "coverage"),
    ("stiffness_kpa", "stiffness (kPa)"),
    ("t50_days", "t50 (days)"),
    ("conductivity_s_per_m", "conductivity (S/m)"),
    ("thickness_mm", "thickness (mm)"),
)
FIGURE_CAPTIONS: dict[str, str] = {
    "funnel": "Filter chain: candidates entering (grey) and kept (blue) by each link, log scale.",
    "pareto": "Candidates that entered the pareto link: first front highlighted, chosen design "
    "starred.",
    "predicted_vs_simulated": "Surrogate prediction (error bars: ± 1 std) against the full "
    "simulation, per output; dashed: identity; star: chosen design.",
    "trajectory": "ΔEF of the chosen design over follow-up, simulated and predicted.",
}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222;
       padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; } td.text, th.text { text-align: left; }
section.patient { border-top: 2px solid #ddd; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figure img { max-width: 100%; } figcaption { font-size: 0.85em; color: #555; max-width: 40em; }
.reason { color: #a00; }
"""


def format_number(value: Any, digits: int = 4) -> str:
    """A number with ``digits`` significant digits; an em dash for a missing value."""
    if value is None:
        return "—"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, str):
        return value or "—"
    number = float(value)
    if not math.isfinite(number):
        return "—"
    if number.is_integer() and abs(number) < 1e6:
        return f"{number:.0f}"
    return f"{number:.{digits}g}"


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def design_rows(designs: Columns) -> dict[str, dict[str, Any]]:
    """The rows of the ``final_designs`` table, by patient id, scalar columns only (the
    trajectories have their own figure)."""
    ids = [str(x) for x in designs.get("patient_id", ())]
    scalar = {name: values for name, values in designs.items() if np.ndim(values) == 1}
    return {pid: {name: values[i] for name, values in scalar.items()} for i, pid in enumerate(ids)}


def summary_table_html(designs: Columns) -> str:
    """One row per patient with a chosen design, each linking to the patient's section."""
    header = (
        ["patient", "split"]
        + [label for _, label in DESIGN_COLUMNS]
        + ["predicted ΔEF (%)", "simulated ΔEF (%)", "reward"]
    )
    rows = []
    for pid, row in design_rows(designs).items():
        cells = [f'<td class="text"><a href="#{_e(pid)}">{_e(pid)}</a></td>', _cell(row["split"])]
        cells += [_cell(row.get(column)) for column, _ in DESIGN_COLUMNS]
        cells.append(_cell(_with_std(row, f"predicted_{DELTA_EF}")))
        cells.append(_cell(row.get(f"simulated_{DELTA_EF}")))
        cells.append(_cell(row.get("reward")))
        rows.append("<tr>" + "".join(cells) + "</tr>")
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    return (
        f'<table class="summary"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def emptied_html(emptied: Mapping[str, str]) -> str:
    """The patients whose filter chain kept no candidate, each with the reason."""
    if not emptied:
        return ""
    items = "".join(
        f'<li><a href="#{_e(pid)}">{_e(pid)}</a>: <span class="reason">{_e(reason)}</span></li>'
        for pid, reason in emptied.items()
    )
    return (
        '<section id="emptied"><h2>Patients without a design</h2>'
        f'<ul class="emptied">{items}</ul></section>'
    )


def patient_section_html(
    patient_id: str,
    design: Mapping[str, Any] | None,
    emptied_reason: str | None,
    baseline: Patient | None,
    figures: Mapping[str, bytes],
) -> str:
    """One patient's section (anchor: the patient id): baseline, design, outcomes, figures."""
    parts = [f'<section class="patient" id="{_e(patient_id)}"><h2>Patient {_e(patient_id)}</h2>']
    if baseline is not None:
        parts.append(
            f"<p>Baseline: LVEF {format_number(baseline.lvef_pct)} %, scar "
            f"{format_number(baseline.scar_fraction_pct)} %, border zone "
            f"{format_number(baseline.bz_fraction_pct)} % of the myocardium, wall "
            f"{format_number(baseline.wall_thickness_mm)} mm.</p>"
        )
    if emptied_reason is not None:
        parts.append(f'<p class="reason">No design: {_e(emptied_reason)}</p>')
    if design is not None:
        parts.append(_design_table(design))
        parts.append(outcomes_table_html(design))
    for name, png in figures.items():
        caption = FIGURE_CAPTIONS.get(name, name)
        parts.append(
            f'<figure><img src="{png_data_uri(png)}" alt="{_e(name)} of patient '
            f'{_e(patient_id)}"><figcaption>{_e(caption)}</figcaption></figure>'
        )
    parts.append("</section>")
    return "\n".join(parts)


def outcomes_table_html(design: Mapping[str, Any]) -> str:
    """The chosen design's predicted (± std) and simulated value of every scalar output."""
    outputs = sorted(
        {
            name.removeprefix(prefix)
            for name in design
            for prefix in ("predicted_", "simulated_")
            if name.startswith(prefix) and not name.endswith("_std") and name != "simulated_ok"
        }
    )
    rows = "".join(
        f'<tr><td class="text">{_e(output)}</td>'
        f"{_cell(_with_std(design, f'predicted_{output}'))}"
        f"{_cell(design.get(f'simulated_{output}'))}</tr>"
        for output in outputs
    )
    return (
        '<table class="outcomes"><thead><tr><th class="text">output</th><th>predicted</th>'
        f"<th>simulated</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def report_document(
    study: str,
    designs: Columns,
    emptied: Mapping[str, str],
    sections: Sequence[str],
    chain: Sequence[Mapping[str, Any]] = (),
) -> str:
    """The whole page: title, the chain of filters, the cohort summary, the patients without
    a design, then ``sections`` (from :func:`patient_section_html`)."""
    chosen = len(design_rows(designs))
    links = " → ".join(_e(str(link.get("plugin", "?"))) for link in chain)
    return "\n".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>hydraopt report: {_e(study)}</title><style>{STYLE}</style></head><body>",
            f"<h1>Stage 3 report: {_e(study)}</h1>",
            f"<p>Patients with a chosen design: {chosen}; without: {len(emptied)}.</p>",
            f"<p>Filter chain: {links}</p>" if links else "",
            '<section id="summary"><h2>Cohort summary</h2>',
            summary_table_html(designs),
            "</section>",
            emptied_html(emptied),
            *sections,
            "</body></html>",
        ]
    )


def _design_table(design: Mapping[str, Any]) -> str:
    rows = [*DESIGN_COLUMNS, ("reward", "reward"), ("candidates", "candidates generated")]
    body = "".join(
        f'<tr><th class="text">{_e(label)}</th>{_cell(design.get(column))}</tr>'
        for column, label in rows
        if column in design
    )
    return f'<table class="design"><tbody>{body}</tbody></table>'


def _with_std(row: Mapping[str, Any], column: str) -> str | None:
    """``mean ± std`` of a predicted column, the mean alone without a std."""
    if column not in row:
        return None
    mean = format_number(row[column])
    std = row.get(f"{column}_std")
    if std is None or mean == "—" or format_number(std) == "—":
        return mean
    return f"{mean} ± {format_number(std, digits=3)}"


def _cell(value: Any) -> str:
    text = format_number(value)
    numeric = not isinstance(value, str) or value[:1].isdigit() or value[:1] == "-"
    return f"<td>{_e(text)}</td>" if numeric else f'<td class="text">{_e(text)}</td>'


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)
