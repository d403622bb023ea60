"""The screen stage (Stage 3) and the report it feeds, run end to end on a small study: every
patient's candidates go through the funnel to one chosen, simulated design; a second run
skips everything; a lost shard is rebuilt; a chain that keeps nothing is reported per patient
without failing the run; a chain that cannot work is refused before anything runs."""

import base64
import csv
import html
import json
import re
import shutil

import numpy as np
import pytest

from hydraopt.config import load_pipeline
from hydraopt.domain import Cohort
from hydraopt.errors import ConfigError, HydraoptError
from hydraopt.registry import PluginRegistry
from hydraopt.store import RunStore, h5_content_digest
from hydraopt.validation import validate_inputs

from conftest import run_quietly

POLYMERS = ["gelma-lowdom", "alginate-ik5001", "fibrin", "pedot-pss"]
CANDIDATES = 2000
FILTER_NAMES = ["threshold", "top-percent", "diversity", "simulate", "simulate", "pareto"]
OBJECTIVES = [["simulated_delta_ef_pct", "max"], ["simulated_bz_stress_reduction_pct", "max"]]
THRESHOLD = '{ plugin = "threshold", min = { predicted_delta_ef_pct = -1000.0 } }'
GENERATOR = (
    'generator = { plugin = "grid-lhs", stiffness_kpa = 3, t50_days = 2, '
    "conductivity_s_per_m = 2, thickness_mm = 2 }"
)
PIPELINE = f"""\
[study]
name = "scr"
seed = 5
output_dir = "runs"

[cohort]
n_patients = 4
chronic_fraction = 0.5

[polymers]
include = {json.dumps(POLYMERS)}

[dataset]
designs_per_patient = 16
generator = {{ plugin = "sobol", scramble = true, within_polymer_ranges = true }}
is_optimal = {{ delta_ef_pct = 0.05, bz_stress_reduction_pct = 0.0 }}
splits = {{ train = 0.5, validation = 0.25, test = 0.25 }}

[mesh]
element_size_mm = 8.0

[simulators.reference-mechanics]

[surrogate]
plugin = "hydrabert"
epochs = 3
batch_size = 16
fusion_dim = 32
smiles_dim = 16
adapter_hidden = 16
mc_samples = 2

[surrogate.heads.delta_ef_pct]
hidden = [16]

[surrogate.heads.is_optimal]
kind = "classification"
loss = "focal"
hidden = [8]

[encoder]
plugin = "morgan"
fp_size = 128

[train]
baselines = []
leave_polymer_out = 0.0

[reward]
weights = {{ delta_ef_pct = 1.0, is_optimal = 0.2 }}

[screen]
candidates_per_patient = {CANDIDATES}
chunk_size = 512
{GENERATOR}
filters = [
  {THRESHOLD},
  {{ plugin = "top-percent", percent = 5.0 }},
  {{ plugin = "diversity", keep = 20 }},
  {{ plugin = "simulate", simulators = ["reference-mechanics"], fidelity = "screening", keep = 6 }},
  {{ plugin = "simulate", fidelity = "validation", keep = 3 }},
  {{ plugin = "pareto", objectives = {{ simulated_delta_ef_pct = "max", simulated_bz_stress_reduction_pct = "max" }}, keep = 1 }},
]

[execution]
workers = 1
"""  # noqa: E501


@pytest.fixture(scope="module")
def registry():
    return PluginRegistry.discover()


@pytest.fixture(scope="module")
def study(tmp_path_factory, registry):
    folder = tmp_path_factory.mktemp("screen")
    path = folder / "pipeline.toml"
    path.write_text(PIPELINE, encoding="utf-8")
    summary = run_quietly(path, registry)
    assert summary.ok and {"screen", "report"} <= set(summary.ran), summary
    return path, summary.run_dir


def copy_of(study, tmp_path, edit=None):
    """The study's folder (pipeline file and run directory) copied, its pipeline edited."""
    path, _ = study
    folder = tmp_path / "copy"
    shutil.copytree(path.parent, folder)
    copied = folder / path.name
    if edit is not None:
        text = copied.read_text(encoding="utf-8")
        assert edit[0] in text
        copied.write_text(text.replace(*edit), encoding="utf-8")
    return copied


def cohort_ids(run_dir):
    return Cohort.from_columns(RunStore(run_dir).tables("cohort").table("patients")).ids


def test_every_patient_gets_a_funnel_and_one_chosen_simulated_design(study):
    _, run_dir = study
    store = RunStore(run_dir)
    ids = cohort_ids(run_dir)
    shards = store.shards("screen")
    assert sorted(shards.keys()) == sorted(ids)
    for pid in ids:
        funnel = shards.table(pid, "funnel")
        assert list(funnel["filter"]) == ["generated", *FILTER_NAMES]
        assert list(funnel["position"]) == list(range(len(FILTER_NAMES) + 1))
        entered, kept = funnel["entered"], funnel["kept"]
        assert entered[0] == kept[0] == CANDIDATES
        assert np.all(np.diff(kept) <= 0), kept
        np.testing.assert_array_equal(entered[1:], kept[:-1])  # each link gets what the last kept
        assert kept[2] == int(np.ceil(0.05 * kept[1]))  # top-percent's 5%
        assert list(kept[3:]) == [20, 6, 3, 1]
        assert np.all(funnel["seconds"] >= 0)

        finalists = shards.table(pid, "finalists")
        assert len(finalists["chosen"]) == kept[2]  # the entrants of the first later link
        assert finalists["chosen"].sum() == 1
        chosen = int(np.flatnonzero(finalists["chosen"])[0])
        assert finalists["survivor"][chosen] and finalists["last_link"][chosen] == 6
        simulated = finalists["last_link"] >= 4
        assert simulated.sum() == 20
        assert np.isfinite(finalists["simulated_delta_ef_pct"][simulated]).all()
        assert np.isnan(finalists["simulated_delta_ef_pct"][~simulated]).all()
        assert finalists["polymer"][chosen] in POLYMERS
        meta = shards.shard_meta(pid)
        assert meta["patient_id"] == pid and meta["candidates"] == CANDIDATES
        assert meta["emptied_by"] is None
        assert shards.table(pid, "metrics")["pareto_front_size"][0] >= 1


def test_final_designs_hold_each_patients_chosen_design_also_as_csv(study):
    _, run_dir = study
    store = RunStore(run_dir)
    ids = cohort_ids(run_dir)
    final = store.tables("final_designs")
    table = final.table("designs")
    assert final.meta["emptied"] == {}
    assert [f["plugin"] for f in final.meta["filters"]] == FILTER_NAMES
    assert sorted(table["patient_id"]) == sorted(ids)
    assert np.isfinite(table["simulated_delta_ef_pct"]).all()
    assert np.isfinite(table["simulated_bz_stress_reduction_pct"]).all()
    assert set(table["split"]) <= {"train", "validation", "test"}
    assert (table["candidates"] == CANDIDATES).all()
    shards = store.shards("screen")
    for row, pid in enumerate(table["patient_id"]):
        finalists = shards.table(pid, "finalists")
        chosen = int(np.flatnonzero(finalists["chosen"])[0])
        for name in ("stiffness_kpa", "polymer", "simulated_delta_ef_pct", "reward"):
            assert table[name][row] == finalists[name][chosen], name

    with store.file("final_designs_csv").path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["patient_id"] for r in rows] == list(table["patient_id"])
    for row, record in enumerate(rows):
        assert record["polymer"] == table["polymer"][row]
        for name in ("simulated_delta_ef_pct", "stiffness_kpa", "reward"):
            assert float(record[name]) == pytest.approx(table[name][row], rel=1e-5), name


def test_the_report_stands_alone_and_shows_every_patient(study):
    _, run_dir = study
    index = RunStore(run_dir).folder("report").path / "index.html"
    page = index.read_text(encoding="utf-8")
    for pid in cohort_ids(run_dir):
        assert pid in page
    sources = re.findall(r"<img[^>]*\ssrc=\"([^\"]*)\"", page)
    assert sources, "no figures embedded"
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    first = base64.b64decode(sources[0].removeprefix("data:image/png;base64,"))
    assert first.startswith(b"\x89PNG\r\n\x1a\n")


def test_the_pareto_objectives_reach_the_shards_and_the_report(study):
    _, run_dir = study
    store = RunStore(run_dir)
    assert store.tables("final_designs").meta["objectives"] == OBJECTIVES
    report = store.folder("report").path
    for pid in cohort_ids(run_dir):
        assert store.shards("screen").shard_meta(pid)["objectives"] == OBJECTIVES
        assert (report / "figures" / f"{pid}-pareto.png").is_file()


def test_a_second_run_skips_everything(study, registry):
    path, _ = study
    summary = run_quietly(path, registry)
    assert summary.ok and summary.ran == []
    assert {"train", "screen", "report"} <= set(summary.skipped)


def test_a_lost_shard_is_rebuilt_the_same(study, registry, tmp_path):
    path = copy_of(study, tmp_path)
    run_dir = path.parent / "runs" / "scr"
    shards = run_dir / "artifacts" / "screen"
    before = {p.name: h5_content_digest(p) for p in shards.glob("*.h5")}
    lost = sorted(before)[1]
    (shards / lost).unlink()
    summary = run_quietly(path, registry, adopt_run_dir=True)
    assert summary.ok and "screen" in summary.ran and "train" in summary.skipped
    assert {p.name: h5_content_digest(p) for p in shards.glob("*.h5")} == before


def test_a_chain_that_keeps_nothing_is_reported_per_patient(study, registry, tmp_path):
    edit = (THRESHOLD, THRESHOLD.replace("-1000.0", "1000.0"))
    path = copy_of(study, tmp_path, edit)
    summary = run_quietly(path, registry, adopt_run_dir=True)
    assert summary.ok and {"screen", "report"} <= set(summary.ran), summary
    assert "train" in summary.skipped
    store = RunStore(summary.run_dir)
    ids = cohort_ids(summary.run_dir)
    final = store.tables("final_designs")
    assert len(final.table("designs")["patient_id"]) == 0
    emptied = final.meta["emptied"]
    assert sorted(emptied) == sorted(ids)
    for pid, message in emptied.items():
        assert "threshold" in message and "predicted_delta_ef_pct" in message
        assert "1000.0" in message and f"kept none of {CANDIDATES}" in message
        shards = store.shards("screen")
        funnel = shards.table(pid, "funnel")
        assert list(funnel["filter"][:2]) == ["generated", "threshold"]
        assert list(funnel["entered"][:2]) == [CANDIDATES, CANDIDATES]
        assert funnel["kept"][1] == 0
        emptied_by = shards.shard_meta(pid)["emptied_by"]
        assert emptied_by["position"] == 1 and emptied_by["filter"] == "threshold"
        assert emptied_by["settings"]["min"] == {"predicted_delta_ef_pct": 1000.0}
        assert shards.table(pid, "finalists")["chosen"].sum() == 0
    with store.file("final_designs_csv").path.open(newline="") as handle:
        assert list(csv.DictReader(handle)) == []
    page = html.unescape((store.folder("report").path / "index.html").read_text(encoding="utf-8"))
    for pid, message in emptied.items():
        assert pid in page and message in page


# --- refused before anything runs ---------------------------------------------------------------


def problems_of(path, registry):
    try:
        return validate_inputs(load_pipeline(path, registry), registry)
    except HydraoptError as exc:
        return [str(exc)]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            (
                'simulated_bz_stress_reduction_pct = "max" }',
                'simulated_nonexistent = "max" }',
            ),
            ["screen.filters[5] (pareto)", "'simulated_nonexistent'"],
        ),
        (
            ("predicted_delta_ef_pct = -1000.0", "predicted_bz_stress_reduction_pct = 0.0"),
            ["screen.filters[0] (threshold)", "'predicted_bz_stress_reduction_pct'"],
        ),
        (
            (GENERATOR, 'generator = { plugin = "policy" }'),
            ["screen.generator", "[policy]"],
        ),
        (
            ('fidelity = "validation"', 'fidelity = "ultra"'),
            ["screen.filters[4] (simulate)", "'ultra'"],
        ),
        (
            ('simulators = ["reference-mechanics"]', 'simulators = ["reference-ep"]'),
            ["screen.filters[3] (simulate)", "'reference-ep'"],
        ),
    ],
    ids=["pareto-column", "threshold-column", "policy-generator", "fidelity", "simulator"],
)
def test_a_chain_that_cannot_work_is_refused_before_anything_runs(
    tmp_path, registry, edit, expected
):
    text = PIPELINE.replace(*edit)
    assert text != PIPELINE
    path = tmp_path / "pipeline.toml"
    path.write_text(text, encoding="utf-8")
    problems = problems_of(path, registry)
    assert any(all(part in p for part in expected) for p in problems), problems
    with pytest.raises(ConfigError) as refused:
        run_quietly(path, registry)
    assert any(all(part in p for part in expected) for p in refused.value.problems)
    assert not (tmp_path / "runs").exists()


def test_trajectory_weeks_follow_the_simulator_that_ran_last_and_the_surrogates_shape():
    """Reference mechanics (four follow-up times) screens, FEBio (one) validates: the
    simulated trajectory is FEBio's, the predicted one the reference's, whose data the
    surrogate learnt."""
    from types import SimpleNamespace

    from hydraopt.domain import OutputSpec
    from hydraopt.screen_unit import _trajectory_weeks

    def handle(weeks):
        spec = OutputSpec("delta_ef_trajectory_pct", "%-points", "", shape=(len(weeks),))
        outputs = (spec, OutputSpec("delta_ef_pct", "%-points", ""))
        settings = SimpleNamespace(followup_weeks=weeks)
        return SimpleNamespace(settings=settings, build=lambda: SimpleNamespace(outputs=outputs))

    reference, febio = handle([1.0, 4.0, 12.0, 26.0]), handle([12.0])
    other = handle([2.0, 8.0, 16.0, 30.0])  # configured first, but not in the dataset
    job = SimpleNamespace(
        simulators={"other": other, "reference-mechanics": reference, "febio": febio},
        dataset_simulators=("reference-mechanics",),
    )
    used = ("reference-mechanics", "febio")
    contexts = SimpleNamespace(
        simulated={name: job.simulators[name].build().outputs for name in used}
    )
    predicted = (OutputSpec("delta_ef_trajectory_pct", "%-points", "", shape=(4,)),)
    weeks = _trajectory_weeks(job, predicted, contexts)
    assert weeks == {
        "simulated_delta_ef_trajectory_pct": [12.0],
        "predicted_delta_ef_trajectory_pct": [1.0, 4.0, 12.0, 26.0],
    }


def test_the_simulator_a_link_used_last_is_the_last_one_recorded(tmp_path):
    """ref -> febio -> ref again: the final simulated columns are the reference's, so its
    follow-up weeks label them."""
    from types import SimpleNamespace

    from hydraopt.registry import PluginRegistry
    from hydraopt.screen_unit import _Contexts

    registry = PluginRegistry.discover()
    handles = {
        name: registry.handle("simulator", name, registry.validate_settings("simulator", name, {}))
        for name in ("reference-mechanics", "febio")
    }
    job = SimpleNamespace(simulators=handles, cache=None, mesh_digest="", workdir=tmp_path)
    contexts = _Contexts(job, mesh=object())
    for name in ("reference-mechanics", "febio", "reference-mechanics"):
        contexts.simulator(name, None)
    assert list(contexts.simulated) == ["febio", "reference-mechanics"]
