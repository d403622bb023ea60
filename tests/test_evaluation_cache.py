"""The evaluation cache: a second study reads what the first paid for, never a damaged entry,
and a changed simulator, heart or design is simulated again."""

import shutil
from dataclasses import replace

import numpy as np

from hydraopt.domain import Outcomes, OutputSpec
from hydraopt.evaluation_cache import EvaluationCache, context_key, design_keys
from hydraopt.testing import example_patient, example_space

SPECS = (OutputSpec("a", "1", "a number"), OutputSpec("traj", "1", "a curve", shape=(3,)))
SIMULATOR = {"name": "toy", "version": "1", "settings": "s", "code": "c"}


def designs(n=6, seed=0):
    space = example_space()
    rng = np.random.default_rng(seed)
    return space.designs_from_unit(
        rng.integers(0, len(space.polymers), n), rng.integers(0, 4, n), rng.random((n, 4))
    )


def outcomes(batch):
    a = batch.stiffness_kpa.copy()
    failed = a > np.median(a)
    a[failed] = np.nan
    traj = np.outer(batch.thickness_mm, [1.0, 2.0, 3.0])
    traj[failed] = np.nan
    reason = np.where(failed, "too stiff", "").astype(object)
    return Outcomes(SPECS, {"a": a, "traj": traj}, failed, reason)


def test_a_second_cache_reads_what_the_first_stored(tmp_path):
    batch = designs()
    context = context_key(SIMULATOR, example_patient(), "mesh1")
    first = EvaluationCache(tmp_path, context)
    keys = design_keys(batch)
    found, _ = first.lookup(keys, SPECS)
    assert not found.any()
    first.store(keys[:4], outcomes(batch.take(np.arange(4))))
    second = EvaluationCache(tmp_path, context)
    found, columns = second.lookup(keys, SPECS)
    assert found.tolist() == [True] * 4 + [False] * 2
    expected = outcomes(batch.take(np.arange(4)))
    np.testing.assert_array_equal(columns["a"][:4], expected["a"])
    np.testing.assert_array_equal(columns["traj"][:4], expected["traj"])
    assert columns["failed"][:4].tolist() == expected.failed.tolist()
    assert list(columns["failure_reason"][:4]) == list(expected.failure_reason)
    assert (second.stats.hits, second.stats.misses) == (4, 2)


def test_what_decides_an_evaluation_decides_the_key():
    patient = example_patient()
    base = context_key(SIMULATOR, patient, "mesh1")
    assert context_key(SIMULATOR, replace(patient, patient_id="OTHER"), "mesh1") == base
    assert context_key({**SIMULATOR, "settings": "t"}, patient, "mesh1") != base
    assert context_key({**SIMULATOR, "code": "d"}, patient, "mesh1") != base
    assert context_key(SIMULATOR, patient, "mesh2") != base
    lvef = replace(patient, lvef_pct=patient.lvef_pct + 1)
    assert context_key(SIMULATOR, lvef, "mesh1") != base
    batch = designs()
    keys = design_keys(batch)
    assert len(set(keys)) == len(keys)
    moved = replace(batch, thickness_mm=batch.thickness_mm + 1e-12)
    assert not set(design_keys(moved)) & set(keys)


def test_a_damaged_entry_is_set_aside_and_never_returned(tmp_path):
    batch = designs()
    keys = design_keys(batch)
    context = context_key(SIMULATOR, example_patient(), "mesh1")
    EvaluationCache(tmp_path, context).store(keys, outcomes(batch))
    [entry] = list(tmp_path.rglob("*.h5"))
    truncated = entry.read_bytes()[: entry.stat().st_size // 2]
    entry.write_bytes(truncated)
    cache = EvaluationCache(tmp_path, context)
    found, _ = cache.lookup(keys, SPECS)
    assert not found.any() and cache.stats.corrupt == 1
    assert not entry.exists() and entry.with_suffix(".corrupt").exists()
    # A copy whose content no longer matches its name is refused the same way.
    EvaluationCache(tmp_path, context).store(keys, outcomes(batch))
    [entry] = list(tmp_path.rglob("*.h5"))
    other = tmp_path / "other.h5"
    EvaluationCache(other, context).store(keys[:2], outcomes(batch.take(np.arange(2))))
    [foreign] = list(other.rglob("*.h5"))
    shutil.copyfile(foreign, entry)
    cache = EvaluationCache(tmp_path, context)
    found, _ = cache.lookup(keys, SPECS)
    assert not found.any() and cache.stats.corrupt == 1


STUDY = """\
[study]
name = "{name}"
seed = 4
output_dir = "runs"

[cohort]
n_patients = 2
chronic_fraction = 0.5

[polymers]
include = ["gelma-lowdom", "fibrin"]

[dataset]
designs_per_patient = 6
splits = {{ train = 0.5, validation = 0.5, test = 0.0 }}
is_optimal = {{ delta_ef_pct = 0.01 }}

[mesh]
element_size_mm = 8.0

[simulators.reference-mechanics]
"""


def test_a_second_study_sharing_the_cache_simulates_nothing(tmp_path):
    import json

    from hydraopt.registry import PluginRegistry
    from hydraopt.store import RunStore

    from conftest import run_quietly

    registry = PluginRegistry.discover()
    outcomes_of = {}
    for name in ("first", "second"):
        path = tmp_path / f"{name}.toml"
        path.write_text(STUDY.format(name=name), encoding="utf-8")
        summary = run_quietly(path, registry)
        assert summary.ok, summary
        journal = [json.loads(line) for line in (summary.run_dir / "journal.jsonl").open()]
        [event] = [e for e in journal if e.get("event") == "evaluation_cache"]
        outcomes = RunStore(summary.run_dir).shards("outcomes")
        outcomes_of[name] = {k: outcomes.table(k, "outcomes") for k in outcomes}
        if name == "first":
            assert (event["hits"], event["misses"]) == (0, 12)
        else:
            assert (event["hits"], event["misses"]) == (12, 0)
    for key, table in outcomes_of["first"].items():
        for column, values in table.items():
            np.testing.assert_array_equal(outcomes_of["second"][key][column], values)


def test_the_design_engine_simulates_through_the_cache(tmp_path):
    """Stage 3's simulators read and keep evaluations as the simulate stage does: the second
    time, nothing is simulated and the outcomes are the same."""
    from hydraopt.evaluation_cache import context_key
    from hydraopt.registry import PluginRegistry
    from hydraopt.screen_unit import _CheckedSimulator, at_fidelity
    from hydraopt.testing import example_mesh

    registry = PluginRegistry.discover()
    settings = registry.validate_settings("simulator", "reference-mechanics", {})
    handle = at_fidelity(registry.handle("simulator", "reference-mechanics", settings), None)
    patient, mesh, batch = example_patient(), example_mesh(), designs(4)
    first = _CheckedSimulator(handle, (tmp_path, "mesh-digest"))
    paid = first.simulate(patient, mesh, batch, tmp_path)
    context = context_key(handle.identity(), patient, "mesh-digest")
    cache = EvaluationCache(tmp_path, context)
    found, _ = cache.lookup(design_keys(batch), first.outputs)
    assert found.all()
    read = _CheckedSimulator(handle, (tmp_path, "mesh-digest")).simulate(
        patient, mesh, batch, tmp_path
    )
    for name in paid.names:
        np.testing.assert_array_equal(read[name], paid[name])
    assert read.failed.tolist() == paid.failed.tolist()
