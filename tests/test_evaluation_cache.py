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
    outcomes_of, meshes = {}, {}
    for name in ("first", "second"):
        path = tmp_path / f"{name}.toml"
        path.write_text(STUDY.format(name=name), encoding="utf-8")
        summary = run_quietly(path, registry)
        assert summary.ok, summary
        journal = [json.loads(line) for line in (summary.run_dir / "journal.jsonl").open()]
        events = {e["stage"]: e for e in journal if e.get("event") == "evaluation_cache"}
        store = RunStore(summary.run_dir)
        outcomes = store.shards("outcomes")
        outcomes_of[name] = {k: outcomes.table(k, "outcomes") for k in outcomes}
        meshes[name] = store.output_digests("meshes")["meshes"]
        counts = {stage: (e["hits"], e["misses"]) for stage, e in events.items()}
        if name == "first":
            assert counts == {"meshes": (0, 2), "simulate": (0, 12)}
        else:  # the same hearts: their meshes are read too, and equal
            assert counts == {"meshes": (2, 0), "simulate": (12, 0)}
            assert meshes["second"] == meshes["first"]
            assert (summary.run_dir / "meshes" / "SYN001.png").is_file()
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
    assert (first.cache_stats.hits, first.cache_stats.misses) == (0, 4)
    again = _CheckedSimulator(handle, (tmp_path, "mesh-digest"))
    read = again.simulate(patient, mesh, batch, tmp_path)
    assert (again.cache_stats.hits, again.cache_stats.misses) == (4, 0)  # the stage reports
    for name in paid.names:
        np.testing.assert_array_equal(read[name], paid[name])
    assert read.failed.tolist() == paid.failed.tolist()


def per_design_outcomes(batch):
    """Outcomes where each design's row depends on that design alone, as a simulator's."""
    failed = batch.coverage_index == 0
    a = np.where(failed, np.nan, batch.stiffness_kpa)
    traj = np.outer(batch.thickness_mm, [1.0, 2.0, 3.0])
    traj[failed] = np.nan
    reason = np.where(failed, "scar only", "").astype(object)
    return Outcomes(SPECS, {"a": a, "traj": traj}, failed, reason)


def _write_and_read(root, seed):
    """One of several processes sharing a cache folder: store overlapping evaluations, read
    them back at once, and report what was found (in a worker process)."""
    batch = designs(n=40)
    context = context_key(SIMULATOR, example_patient(), "mesh1")
    cache = EvaluationCache(root, context)
    rows = np.random.default_rng(seed).permutation(40)
    for chunk in np.array_split(rows, 8):
        part = batch.take(np.sort(chunk))
        cache.store(design_keys(part), per_design_outcomes(part))
        found, _ = cache.lookup(design_keys(batch), SPECS)
    return int(found.sum()), cache.stats.corrupt


def test_concurrent_writers_share_one_folder_without_damage(tmp_path):
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.starmap(_write_and_read, [(tmp_path, seed) for seed in range(4)])
    # Every writer saw its own 40 evaluations at the end; no reader met a torn entry.
    assert [found for found, _ in results] == [40] * 4
    assert sum(corrupt for _, corrupt in results) == 0
    batch = designs(n=40)
    reader = EvaluationCache(tmp_path, context_key(SIMULATOR, example_patient(), "mesh1"))
    found, columns = reader.lookup(design_keys(batch), SPECS)
    expected = per_design_outcomes(batch)
    assert found.all() and reader.stats.corrupt == 0
    np.testing.assert_array_equal(columns["failed"], expected.failed)
    np.testing.assert_array_equal(columns["traj"], expected.values["traj"])
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_damaged_cached_mesh_is_set_aside_and_rebuilt(tmp_path):
    from hydraopt.mesh_cache import MeshCache, mesh_key

    key = mesh_key({"name": "lv-ellipsoid", "settings": "s"}, example_patient())
    assert key != mesh_key({"name": "lv-ellipsoid", "settings": "t"}, example_patient())
    source = tmp_path / "built"
    source.mkdir()
    (source / "mesh.h5").write_bytes(b"mesh bytes")
    (source / "view.png").write_bytes(b"png bytes")
    files = {"mesh.h5": source / "mesh.h5", "view.png": source / "view.png"}
    MeshCache(tmp_path / "cache", key).keep(files)
    targets = {"mesh.h5": tmp_path / "run" / "m.h5", "view.png": tmp_path / "run" / "v.png"}
    assert MeshCache(tmp_path / "cache", key).restore(targets)
    assert targets["mesh.h5"].read_bytes() == b"mesh bytes"

    entry = MeshCache(tmp_path / "cache", key).folder
    (entry / "view.png").write_bytes(b"torn")
    assert not MeshCache(tmp_path / "cache", key).restore(targets)
    assert not entry.exists() and entry.with_suffix(".corrupt").is_dir()
    MeshCache(tmp_path / "cache", key).keep(files)  # the rebuilt mesh takes its place
    assert MeshCache(tmp_path / "cache", key).restore(targets)
