import json

import numpy as np
import pytest

from hydraopt import store as store_module
from hydraopt.atomic import atomic_path, write_json
from hydraopt.errors import StoreError
from hydraopt.store import (
    RunStore,
    Shard,
    content_digest,
    h5_content_digest,
    read_h5_attrs,
    read_h5_table,
)


def test_tables_artifact_round_trip_with_provenance(tmp_path):
    store = RunStore(tmp_path / "run")
    store.create()
    tables = {
        "patients": {
            "patient_id": np.array(["A", "B"], dtype=object),
            "lvef_pct": np.array([30.0, 40.0]),
        }
    }
    record = store.write_tables("cohort", tables, {"config_hash": "abc"}, {"n": 2})
    store.record_stage("cohort", "fp", {"cohort": record}, 0.1)
    artifact = store.tables("cohort")
    columns = artifact.table("patients")
    assert columns["patient_id"].tolist() == ["A", "B"]
    np.testing.assert_array_equal(columns["lvef_pct"], [30.0, 40.0])
    assert artifact.provenance == {"config_hash": "abc"}
    assert artifact.meta == {"n": 2}
    assert record.path == "artifacts/cohort.h5" and record.kind == "tables"
    assert record.digest == content_digest(tables, {"n": 2})
    assert record.digest == h5_content_digest(store.run_dir / record.path)
    with pytest.raises(StoreError, match="'cohort' is a tables artifact, not shards"):
        store.shards("cohort")
    with pytest.raises(StoreError, match="no finished stage has written artifact 'x'"):
        store.tables("x")


def test_file_artifact_keeps_its_provenance_beside_it(tmp_path):
    store = RunStore(tmp_path / "run")
    store.create()
    source = tmp_path / "model.safetensors"
    source.write_bytes(b"weights")
    record = store.write_file("checkpoint", source, {"stage": "train"}, {"epochs": 3})
    store.record_stage("train", "fp", {"checkpoint": record}, 0.1)
    artifact = store.file("checkpoint")
    assert artifact.path.read_bytes() == b"weights"
    assert artifact.path.name == "checkpoint.safetensors"
    assert artifact.meta == {"epochs": 3} and artifact.provenance == {"stage": "train"}
    source.write_bytes(b"other weights")
    again = store.write_file("checkpoint", source, {"stage": "train"}, {"epochs": 3})
    assert again.digest != record.digest


def test_sharded_artifact_links_unit_files_and_reads_them_one_by_one(tmp_path):
    store = RunStore(tmp_path / "run")
    store.create()
    shards = {}
    for key in ("P1", "P2"):
        path = tmp_path / f"{key}.h5"
        store_module.write_h5(path, {"g": {"x": np.arange(3.0) + len(key)}}, {}, {"k": key})
        shards[key] = Shard(path, h5_content_digest(path))
    record = store.write_shards("outcomes", shards, {"stage": "simulate"}, {"n": 2})
    store.record_stage("simulate", "fp", {"outcomes": record}, 0.1)
    artifact = store.shards("outcomes")
    assert artifact.keys() == ["P1", "P2"] and artifact.meta == {"n": 2}
    np.testing.assert_array_equal(artifact.table("P2", "g")["x"], np.arange(3.0) + 2)
    assert artifact.shard_meta("P1") == {"k": "P1"}
    assert set(record.files) == {
        "artifacts/outcomes/P1.h5",
        "artifacts/outcomes/P2.h5",
        "artifacts/outcomes/manifest.json",
    }
    # The digest follows the shards' content, and rewriting replaces the whole folder.
    del shards["P2"]
    smaller = store.write_shards("outcomes", shards, {"stage": "simulate"}, {"n": 2})
    assert smaller.digest != record.digest
    assert sorted(p.name for p in (store.artifacts_dir / "outcomes").iterdir()) == [
        "P1.h5",
        "manifest.json",
    ]
    assert not list(store.artifacts_dir.glob(".*"))


def test_large_arrays_are_compressed(tmp_path):
    store = RunStore(tmp_path)
    record = store.write_tables("big", {"g": {"x": np.zeros(100_000)}}, {}, {})
    assert (tmp_path / record.path).stat().st_size < 100_000 * 8 / 10


def test_interrupted_write_keeps_the_previous_artifact(tmp_path, monkeypatch):
    path = tmp_path / "designs.h5"
    store_module.write_h5(path, {"g": {"x": np.arange(5.0)}}, {"v": 1}, {})
    calls = {"n": 0}
    original = store_module._write_column

    def failing(group, name, values):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed mid-write")
        original(group, name, values)

    monkeypatch.setattr(store_module, "_write_column", failing)
    with pytest.raises(KeyboardInterrupt):
        store_module.write_h5(path, {"g": {"x": np.ones(3), "y": np.ones(3)}}, {"v": 2}, {})
    np.testing.assert_array_equal(read_h5_table(path, "g")["x"], np.arange(5.0))
    assert read_h5_attrs(path)["provenance"] == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["designs.h5"]  # no temporary left behind


def test_atomic_path_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"ok": True})
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text("{half")
        raise RuntimeError("boom")
    assert json.loads(target.read_text()) == {"ok": True}
    assert len(list(tmp_path.iterdir())) == 1


def test_content_digest_ignores_provenance_but_not_values():
    a = {"g": {"x": np.arange(3.0)}}
    assert content_digest(a, {}) == content_digest({"g": {"x": np.arange(3.0)}}, {})
    assert content_digest(a, {}) != content_digest({"g": {"x": np.arange(3.0) + 1}}, {})
    assert content_digest(a, {}) != content_digest(a, {"m": 1})


def test_recorded_files_are_checked_byte_for_byte(tmp_path):
    store = RunStore(tmp_path)
    store.create()
    record = store.write_tables("a", {"g": {"x": np.ones(2)}}, {}, {})
    store.record_stage("s", "fp1", {"a": record}, 0.1)
    assert store.damaged_outputs("s") == []
    path = tmp_path / record.path
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte, same size
    path.write_bytes(bytes(data))
    assert store.damaged_outputs("s") == ["artifacts/a.h5 has changed content"]
    path.write_bytes(bytes(data[:1000]))
    assert store.damaged_outputs("s") == ["artifacts/a.h5 has changed size"]
    path.unlink()
    assert store.damaged_outputs("s") == ["artifacts/a.h5 is missing"]
    (store.stages_dir / "s.json").write_text("{torn")
    assert store.stage_record("s") is None


def test_temporaries_of_interrupted_writes_are_removed(tmp_path):
    store = RunStore(tmp_path)
    store.create()
    (store.artifacts_dir / ".designs.h5.abc123.tmp").write_bytes(b"half")
    (store.artifacts_dir / ".outcomes.staging.tmp").mkdir()
    (store.artifacts_dir / ".outcomes.staging.tmp" / "P1.h5").write_bytes(b"x")
    keep = store.artifacts_dir / "designs.h5"
    keep.write_bytes(b"whole")
    removed = store.remove_temporaries()
    assert len(removed) == 2
    assert [p.name for p in store.artifacts_dir.iterdir()] == ["designs.h5"]
