"""The report stage's HTML page and figures, from screen and final_designs artifacts laid out
as the screen stage writes them (two patients: one with a pareto link and simulations, one
whose chain emptied)."""

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hydraopt.report_figures import (
    funnel_png,
    pareto_front_png,
    predicted_vs_simulated_png,
    trajectory_png,
)
from hydraopt.report_html import format_number
from hydraopt.stages.report import write_report
from hydraopt.store import RunStore, Shard, h5_content_digest, write_h5
from hydraopt.synthetic_cohort import synthetic_cohort

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WEEKS = [1, 4, 12, 26]
CHOSEN, EMPTIED = "SYN001", "SYN002"
EMPTIED_REASON = "threshold at position 1 kept none of 300 (predicted_delta_ef_pct > 3.0)"
OBJECTIVES = {
    "simulated_delta_ef_pct": "max",
    "simulated_bz_stress_reduction_pct": "max",
    "predicted_delta_ef_pct_std": "min",
}
FILTERS = [
    {"plugin": "threshold", "min": {"predicted_delta_ef_pct": 3.0}},
    {"plugin": "top_percent", "percent": 30},
    {"plugin": "diversity", "keep": 20},
    {"plugin": "simulate", "simulators": ["reference-mechanics", "reference-ep"]},
    {"plugin": "pareto", "objectives": OBJECTIVES},
]


def funnel(counts: list[int]) -> dict[str, np.ndarray]:
    """The funnel of a chain whose links kept ``counts`` (generator first)."""
    names = ["generated"] + [f["plugin"] for f in FILTERS]
    entered = [counts[0], *counts[:-1]]
    return {
        "position": np.arange(len(counts)),
        "filter": np.array(names[: len(counts)], dtype=object),
        "entered": np.array(entered),
        "kept": np.array(counts),
        "seconds": np.full(len(counts), 0.01),
    }


def finalists(rng: np.random.Generator, last_link: np.ndarray, simulate_from: int) -> dict:
    """Finalist columns: predictions for all, simulations for those reaching the simulate link."""
    n = len(last_link)
    predicted = rng.normal(4.0, 1.5, n)
    simulated = np.where(last_link >= simulate_from, predicted + rng.normal(0, 0.5, n), np.nan)
    trajectory = predicted[:, None] * np.array([0.3, 0.7, 1.0, 0.9])
    return {
        "polymer_index": rng.integers(0, 3, n),
        "coverage_index": rng.integers(0, 4, n),
        "polymer": np.array(["GelMA", "PEGDA", "alginate"], dtype=object)[rng.integers(0, 3, n)],
        "coverage": np.full(n, "scar_bz25", dtype=object),
        "stiffness_kpa": rng.uniform(5, 30, n),
        "t50_days": rng.uniform(7, 60, n),
        "conductivity_s_per_m": rng.uniform(0.01, 0.5, n),
        "thickness_mm": rng.uniform(1, 4, n),
        "reward": rng.normal(0, 1, n),
        "predicted_delta_ef_pct": predicted,
        "predicted_delta_ef_pct_std": rng.uniform(0.2, 1.0, n),
        "predicted_bz_stress_reduction_pct": rng.normal(20, 5, n),
        "predicted_bz_stress_reduction_pct_std": rng.uniform(1, 3, n),
        "predicted_delta_ef_trajectory_pct": trajectory,
        "predicted_delta_ef_trajectory_pct_std": np.full((n, len(WEEKS)), 0.5),
        "simulated_delta_ef_pct": simulated,
        "simulated_bz_stress_reduction_pct": simulated * 4.0,
        "simulated_delta_ef_trajectory_pct": simulated[:, None] * np.array([0.2, 0.6, 1.0, 1.0]),
        "simulated_ok": np.isfinite(simulated),
        "last_link": last_link,
    }


def chosen_patient_shard(rng: np.random.Generator) -> tuple[dict, dict]:
    """300 generated; threshold kept 120, top_percent 40, diversity 20, simulate 18, pareto 6."""
    last_link = np.repeat([1, 2, 3, 4, 5], [180, 80, 20, 2, 18])
    columns = finalists(rng, last_link, simulate_from=4)
    entered_pareto = last_link == 5
    x = columns["simulated_delta_ef_pct"]
    y = 30.0 - 2.0 * x + rng.normal(0, 1.0, len(x))  # a trade-off between the two
    dominated = np.array([np.any((x > x[i]) & (y > y[i]) & entered_pareto) for i in range(len(x))])
    columns["simulated_bz_stress_reduction_pct"] = y
    columns["pareto_rank"] = np.where(entered_pareto, dominated.astype(float), np.nan)
    columns["crowding_distance"] = np.where(entered_pareto, 1.0, np.nan)
    survivor = entered_pareto & ~dominated
    columns["survivor"] = survivor
    columns["chosen"] = np.zeros(len(x), dtype=bool)
    columns["chosen"][np.flatnonzero(survivor)[0]] = True
    meta = {
        "patient_id": CHOSEN,
        "candidates": 300,
        "emptied_by": None,
        "objectives": list(OBJECTIVES.items()),
        "chunks": 1,
    }
    tables = {
        "funnel": funnel([300, 120, 40, 20, 18, int(survivor.sum())]),
        "finalists": columns,
        "metrics": {"pareto_front_size": np.array([int(survivor.sum())])},
    }
    return tables, meta


def emptied_patient_shard(rng: np.random.Generator) -> tuple[dict, dict]:
    """300 generated, the threshold kept none."""
    columns = finalists(rng, np.ones(300, dtype=int), simulate_from=4)
    columns["pareto_rank"] = np.full(300, np.nan)
    columns["crowding_distance"] = np.full(300, np.nan)
    columns["survivor"] = np.zeros(300, dtype=bool)
    columns["chosen"] = np.zeros(300, dtype=bool)
    meta = {
        "patient_id": EMPTIED,
        "candidates": 300,
        "emptied_by": {"position": 1, "filter": "threshold", "settings": FILTERS[0]},
        "objectives": list(OBJECTIVES.items()),
        "chunks": 1,
    }
    return {"funnel": funnel([300, 0]), "finalists": columns, "metrics": {}}, meta


def final_designs(chosen_finalists: dict) -> dict:
    """The chosen row's scalar columns, as the screen stage writes them."""
    row = int(np.flatnonzero(chosen_finalists["chosen"])[0])
    columns = {
        name: values[row : row + 1]
        for name, values in chosen_finalists.items()
        if np.ndim(values) == 1 and name not in ("last_link", "survivor", "chosen")
    }
    return {
        "patient_id": np.array([CHOSEN], dtype=object),
        "split": np.array(["test"], dtype=object),
        **columns,
        "candidates": np.array([300]),
    }


def fake_run(root: Path) -> RunStore:
    """A run directory holding cohort, screen and final_designs as their stages write them."""
    store = RunStore(root / "run")
    store.create()
    rng = np.random.default_rng(11)
    cohort = store.write_tables("cohort", {"patients": synthetic_cohort(2, 3).to_columns()}, {}, {})
    store.record_stage("cohort", "fp", {"cohort": cohort}, 0.0)
    shards = {}
    for pid, (tables, meta) in {
        CHOSEN: chosen_patient_shard(rng),
        EMPTIED: emptied_patient_shard(rng),
    }.items():
        path = root / f"{pid}.h5"
        write_h5(path, tables, {}, meta)
        shards[pid] = (Shard(path, h5_content_digest(path)), tables)
    final_meta = {
        "trajectory_weeks": {
            "simulated_delta_ef_trajectory_pct": WEEKS,
            "predicted_delta_ef_trajectory_pct": WEEKS,
        },
        "objectives": OBJECTIVES,
        "filters": FILTERS,
        "emptied": {EMPTIED: EMPTIED_REASON},
    }
    outputs = {
        "screen": store.write_shards("screen", {k: s for k, (s, _) in shards.items()}, {}, {}),
        "final_designs": store.write_tables(
            "final_designs",
            {"designs": final_designs(shards[CHOSEN][1]["finalists"])},
            {},
            final_meta,
        ),
    }
    store.record_stage("screen", "fp", outputs, 0.0)
    return store


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("report")
    folder = root / "report"
    folder.mkdir()
    meta = write_report(fake_run(root), "hydrogel-trial", folder)
    return folder, meta


def test_page_shows_every_patient_with_its_design_or_reason(report):
    folder, meta = report
    page = (folder / "index.html").read_text(encoding="utf-8")
    assert "<title>hydraopt report: hydrogel-trial</title>" in page
    for pid in (CHOSEN, EMPTIED):
        assert f'<section class="patient" id="{pid}">' in page
        assert f'href="#{pid}"' in page
    assert EMPTIED_REASON.replace(">", "&gt;") in page
    summary = page.split('<table class="summary">', 1)[1].split("</table>", 1)[0]
    body = summary.split("<tbody>", 1)[1]
    assert body.count("<tr>") == 1 and f'href="#{CHOSEN}"' in body
    assert meta["patients"] == [CHOSEN] and meta["emptied"] == {EMPTIED: EMPTIED_REASON}
    section = page.split(f'id="{CHOSEN}"', 1)[1].split("</section>", 1)[0]
    assert "delta_ef_pct" in section and "±" in section  # predicted ± std beside simulated


def test_page_is_self_contained_with_png_figures(report):
    folder, meta = report
    page = (folder / "index.html").read_text(encoding="utf-8")
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # The chosen patient has all four figures; the emptied one only its funnel.
    assert len(images) == 5 == len(meta["figures"])
    for encoded in images:
        assert base64.b64decode(encoded).startswith(PNG_SIGNATURE)
    for relative in meta["figures"]:
        assert (folder / relative).read_bytes().startswith(PNG_SIGNATURE)
    assert f"figures/{EMPTIED}-funnel.png" in meta["figures"]
    assert f"figures/{EMPTIED}-pareto.png" not in meta["figures"]
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page


def test_figures_without_their_data_are_skipped():
    rng = np.random.default_rng(5)
    tables, _ = emptied_patient_shard(rng)
    rows = tables["finalists"]
    no_pareto_link = funnel([300, 120])
    assert funnel_png({}) is None
    assert pareto_front_png(no_pareto_link, rows, OBJECTIVES) is None
    assert pareto_front_png(tables["funnel"], rows, {}) is None
    assert predicted_vs_simulated_png(rows) is None  # nothing was simulated
    assert trajectory_png(rows, {"simulated_delta_ef_trajectory_pct": WEEKS}) is None


def test_two_objective_front_and_trajectory_without_std_are_drawn():
    tables, _ = chosen_patient_shard(np.random.default_rng(5))
    rows = dict(tables["finalists"])
    two = dict(list(OBJECTIVES.items())[:2])
    assert pareto_front_png(tables["funnel"], rows, two).startswith(PNG_SIGNATURE)
    del rows["predicted_delta_ef_trajectory_pct_std"]
    weeks = {"predicted_delta_ef_trajectory_pct": WEEKS}  # the simulated one lacks its weeks
    assert trajectory_png(rows, weeks).startswith(PNG_SIGNATURE)


def test_numbers_have_four_significant_digits():
    assert format_number(3.14159265) == "3.142"
    assert format_number(0.0123456) == "0.01235"
    assert format_number(12.0) == "12"
    assert format_number(float("nan")) == "—"
    assert format_number(None) == "—"
    assert format_number(np.bool_(True)) == "yes"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH")
def test_headless_chromium_renders_the_page(report, tmp_path):
    folder, _ = report
    index = (folder / "index.html").resolve()
    flags = [
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [CHROMIUM, *flags, "--dump-dom", index.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert '<table class="summary">' in dom
    for pid in (CHOSEN, EMPTIED):
        assert f'id="{pid}"' in dom
    screenshot = tmp_path / "page.png"
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={screenshot}", "--window-size=1200,1600", index.as_uri()],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert screenshot.read_bytes().startswith(PNG_SIGNATURE)
