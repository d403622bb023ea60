"""The report's figures of one patient's Stage 3 results, each as PNG bytes.

Every function takes the columns of the ``screen`` artifact (groups ``funnel`` and
``finalists``, see :mod:`hydraopt.stages.report`) and returns ``None`` when the data it draws
is absent (no pareto link, nothing simulated, no trajectory): a figure that cannot be drawn
is left out of the report, never an error. matplotlib is imported inside the functions so
that ``import hydraopt`` stays light; figures are drawn on the Agg canvas, without pyplot's
global state.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Columns = Mapping[str, np.ndarray]

PARETO_FILTER = "pareto"
TRAJECTORY_OUTPUT = "delta_ef_trajectory_pct"
# Small enough that a cohort of a hundred patients gives a report of tens of megabytes.
DPI = 100
FRONT_COLOUR = "#d62728"
OTHER_COLOUR = "#9e9e9e"
CHOSEN_COLOUR = "#1f77b4"


def patient_figures(
    funnel: Columns,
    finalists: Columns,
    objectives: Mapping[str, str],
    trajectory_weeks: Mapping[str, Sequence[float]],
) -> dict[str, bytes]:
    """Every figure that the patient's data allows, by name (``funnel``, ``pareto``,
    ``predicted_vs_simulated``, ``trajectory``), in the order the report shows them."""
    drawn = {
        "funnel": funnel_png(funnel),
        "pareto": pareto_front_png(funnel, finalists, objectives),
        "predicted_vs_simulated": predicted_vs_simulated_png(finalists),
        "trajectory": trajectory_png(finalists, trajectory_weeks),
    }
    return {name: png for name, png in drawn.items() if png is not None}


def funnel_png(funnel: Columns) -> bytes | None:
    """How many candidates each link of the filter chain kept, on a log scale."""
    if not funnel or len(funnel.get("position", ())) == 0:
        return None
    order = np.argsort(np.asarray(funnel["position"]), kind="stable")
    names = [f"{int(funnel['position'][i])}. {funnel['filter'][i]}" for i in order]
    entered = np.asarray(funnel["entered"], dtype=float)[order]
    kept = np.asarray(funnel["kept"], dtype=float)[order]
    figure, axes = _figure(6.5, 0.45 * len(names) + 1.2)
    y = np.arange(len(names))
    # A log axis has no zero: bars start at half a candidate, so one kept candidate still
    # shows and a link that kept none shows nothing.
    base = 0.5
    axes.barh(y, np.maximum(entered, base) - base, left=base, color="#dddddd", label="entered")
    axes.barh(y, np.maximum(kept, base) - base, left=base, color=CHOSEN_COLOUR, label="kept")
    axes.set_xscale("log")
    axes.set_xlim(base, max(entered.max(), 10) * 8)
    for row, (inn, out) in enumerate(zip(entered, kept, strict=True)):
        axes.text(max(inn, 1) * 1.15, row, f"{out:,.0f} of {inn:,.0f}", va="center", fontsize=8)
    axes.set_yticks(y, names)
    axes.invert_yaxis()
    axes.set_xlabel("candidates")
    axes.legend(loc="lower right", fontsize=8)
    return _png(figure)


def pareto_link_position(funnel: Columns) -> int | None:
    """The position of the pareto link in the chain, or None when the chain has none."""
    if not funnel or "filter" not in funnel:
        return None
    rows = [i for i, name in enumerate(funnel["filter"]) if str(name) == PARETO_FILTER]
    return int(funnel["position"][rows[0]]) if rows else None


def pareto_front_png(
    funnel: Columns, finalists: Columns, objectives: Mapping[str, str]
) -> bytes | None:
    """The candidates that entered the pareto link in the first two objectives, the first
    front highlighted and the chosen design marked; coloured by a third objective if any."""
    position = pareto_link_position(funnel)
    names = [name for name in objectives if name in finalists]
    if position is None or len(names) < 2 or len(objectives) != len(names):
        return None
    entered = np.asarray(finalists["last_link"]) >= position
    if not entered.any():
        return None
    x = _floats(finalists[names[0]])[entered]
    y = _floats(finalists[names[1]])[entered]
    rank = _floats(finalists.get("pareto_rank", np.full(len(entered), np.nan)))[entered]
    front = rank == 0
    figure, axes = _figure(6.0, 4.5)
    if len(names) >= 3:
        colour = _floats(finalists[names[2]])[entered]
        points = axes.scatter(x, y, c=colour, s=14, cmap="viridis", alpha=0.8)
        figure.colorbar(points, ax=axes, label=_objective_label(names[2], objectives))
        axes.scatter(
            x[front],
            y[front],
            s=40,
            facecolors="none",
            edgecolors=FRONT_COLOUR,
            label="first front",
        )
    else:
        axes.scatter(x[~front], y[~front], s=12, color=OTHER_COLOUR, label="dominated")
        order = np.argsort(x[front])
        axes.plot(
            x[front][order],
            y[front][order],
            "o-",
            color=FRONT_COLOUR,
            ms=5,
            lw=1,
            label="first front",
        )
    _mark_chosen(axes, finalists, entered, x, y)
    axes.set_xlabel(_objective_label(names[0], objectives))
    axes.set_ylabel(_objective_label(names[1], objectives))
    axes.set_title(f"{int(entered.sum()):,} candidates entered the pareto link", fontsize=10)
    axes.legend(fontsize=8)
    return _png(figure)


def predicted_vs_simulated_png(finalists: Columns) -> bytes | None:
    """For every scalar output both predicted and simulated: surrogate prediction (with its
    std as error bars) against the simulation, one panel each, with the identity line."""
    outputs = compared_outputs(finalists)
    if not outputs:
        return None
    columns = min(3, len(outputs))
    rows = -(-len(outputs) // columns)
    figure = _new_figure(3.4 * columns, 3.2 * rows)
    chosen = _chosen_mask(finalists)
    for k, output in enumerate(outputs):
        axes = figure.add_subplot(rows, columns, k + 1)
        simulated = _floats(finalists[f"simulated_{output}"])
        predicted = _floats(finalists[f"predicted_{output}"])
        std = _floats(finalists.get(f"predicted_{output}_std", np.zeros_like(predicted)))
        both = np.isfinite(simulated) & np.isfinite(predicted)
        error = np.where(np.isfinite(std), std, 0.0)[both]
        axes.errorbar(
            simulated[both],
            predicted[both],
            yerr=error,
            fmt="o",
            ms=3,
            color=OTHER_COLOUR,
            ecolor="#cccccc",
            elinewidth=0.8,
        )
        picked = both & chosen
        axes.plot(simulated[picked], predicted[picked], "*", ms=12, color=CHOSEN_COLOUR)
        low, high = _span(simulated[both], predicted[both])
        axes.plot([low, high], [low, high], "--", color="black", lw=0.8)
        mae = float(np.mean(np.abs(predicted[both] - simulated[both])))
        axes.set_title(f"{output}\nMAE {mae:.3g}, n={int(both.sum())}", fontsize=9)
        axes.set_xlabel("simulated", fontsize=8)
        axes.set_ylabel("predicted", fontsize=8)
    figure.tight_layout()
    return _png(figure)


def compared_outputs(finalists: Columns) -> list[str]:
    """Scalar outputs with both a prediction and a simulation for at least one finalist."""
    found = []
    for column in finalists:
        if not column.startswith("predicted_") or column.endswith("_std"):
            continue
        output = column.removeprefix("predicted_")
        simulated = finalists.get(f"simulated_{output}")
        if simulated is None or np.ndim(simulated) != 1 or np.ndim(finalists[column]) != 1:
            continue
        pairs = np.isfinite(_floats(simulated)) & np.isfinite(_floats(finalists[column]))
        if pairs.any():
            found.append(output)
    return sorted(found)


def trajectory_png(
    finalists: Columns,
    trajectory_weeks: Mapping[str, Sequence[float]],
    output: str = TRAJECTORY_OUTPUT,
) -> bytes | None:
    """The chosen design's simulated and predicted trajectory of ``output`` over follow-up,
    the prediction with a band of one std."""
    chosen = np.flatnonzero(_chosen_mask(finalists))
    if len(chosen) == 0:
        return None
    row = int(chosen[0])
    series = {}
    for source in ("simulated", "predicted"):
        column = f"{source}_{output}"
        if column in finalists and column in trajectory_weeks and np.ndim(finalists[column]) == 2:
            values = _floats(finalists[column][row])
            if np.isfinite(values).any():
                series[source] = (np.asarray(trajectory_weeks[column], dtype=float), values)
    if not series:
        return None
    figure, axes = _figure(6.0, 3.8)
    if "predicted" in series:
        weeks, mean = series["predicted"]
        axes.plot(weeks, mean, "o-", color=OTHER_COLOUR, label="predicted")
        std_column = f"predicted_{output}_std"
        if std_column in finalists and np.ndim(finalists[std_column]) == 2:
            std = _floats(finalists[std_column][row])
            axes.fill_between(
                weeks,
                mean - std,
                mean + std,
                color=OTHER_COLOUR,
                alpha=0.25,
                label="predicted ± 1 std",
            )
    if "simulated" in series:
        weeks, values = series["simulated"]
        axes.plot(weeks, values, "s-", color=CHOSEN_COLOUR, label="simulated")
    axes.axhline(0.0, color="black", lw=0.6)
    axes.set_xlabel("weeks after injection")
    axes.set_ylabel(output)
    axes.legend(fontsize=8)
    return _png(figure)


def _mark_chosen(
    axes: Any, finalists: Columns, entered: np.ndarray, x: np.ndarray, y: np.ndarray
) -> None:
    picked = _chosen_mask(finalists)[entered]
    if picked.any():
        axes.plot(
            x[picked],
            y[picked],
            "*",
            ms=16,
            color=CHOSEN_COLOUR,
            markeredgecolor="black",
            label="chosen",
        )


def _objective_label(name: str, objectives: Mapping[str, str]) -> str:
    better = "higher" if objectives[name] == "max" else "lower"
    return f"{name} ({better} is better)"


def _chosen_mask(finalists: Columns) -> np.ndarray:
    if "chosen" not in finalists:
        return np.zeros(len(next(iter(finalists.values()), ())), dtype=bool)
    return np.asarray(finalists["chosen"], dtype=bool)


def _floats(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=float)


def _span(*arrays: np.ndarray) -> tuple[float, float]:
    """The range of every value given, widened by a margin (and never empty)."""
    values = np.concatenate([a.ravel() for a in arrays])
    low, high = float(values.min()), float(values.max())
    margin = 0.05 * (high - low) or 0.5
    return low - margin, high + margin


def _new_figure(width_in: float, height_in: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _figure(width_in: float, height_in: float) -> tuple[Any, Any]:
    figure = _new_figure(width_in, height_in)
    return figure, figure.add_subplot()


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    return buffer.getvalue()
