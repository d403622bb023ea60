import json

import numpy as np
import pytest

from hydraopt import store as store_module
from hydraopt.atomic import atomic_path, write_json
from hydraopt.store import RunStore, content_digest, read_h5_attrs, read_h5_table


def test_artifact_round_trip_with_provenance(tmp_path):
    store = RunStore(tmp_path / "run")
    store.create()
    tables = {
        "patients": {
            "patient_id": np.array(["A", "B"], dtype=object),
            "lvef_pct": np.array([30.0, 40.0]),
        }
    }
    record = store.write_artifact("cohort", tables, {"config_hash": "abc"}, {"n": 2})
    columns = store.read_table("cohort", "patients")
    assert columns["patient_id"].tolist() == ["A", "B"]
    np.testing.assert_array_equal(columns["lvef_pct"], [30.0, 40.0])
    assert store.read_provenance("cohort") == {"config_hash": "abc"}
    assert store.read_meta("cohort") == {"n": 2}
    assert record["file"] == "artifacts/cohort.h5"
    assert record["sha256"] == content_digest(tables, {"n": 2})


def test_large_arrays_are_compressed(tmp_path):
    store = RunStore(tmp_path)
    store.write_artifact("big", {"g": {"x": np.zeros(100_000)}}, {}, {})
    assert store.artifact_path("big").stat().st_size < 100_000 * 8 / 10


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


def test_stage_records_decide_completion(tmp_path):
    store = RunStore(tmp_path)
    store.create()
    record = store.write_artifact("a", {"g": {"x": np.ones(2)}}, {}, {})
    store.record_stage("s", "fp1", {"a": record}, 0.1)
    assert store.is_complete("s", "fp1")
    assert not store.is_complete("s", "fp2")
    store.artifact_path("a").unlink()
    assert not store.is_complete("s", "fp1")
    (store.stages_dir / "s.json").write_text("{torn")
    assert store.stage_record("s") is None
