"""The surrogate's settings tried on the validation patients, never the test patients:
every third row of the training patients in a run's dataset, the configured surrogate with the
changes given, judged on the validation split. Needs the run up to its dataset stage. A
variant's "study.seed" replaces the study's seed (the training's); its "train.patients": N
trains on N of the training patients only (a fixed random subset, nested as N grows), its
"train.thin": k on every k-th of those rows (as many rows from more patients); its
"train.every": k (3 unless given) takes every k-th row of the training patients, 1 all; its
"encoder": "none" trains without a polymer encoder, its "encoder_settings": {...} with the
configured encoder's settings changed so; its "held_out_polymers": [names] leaves
those polymers (and any with the same repeat unit) out of training and validation and
judges the variant on the validation patients' rows of them instead (leave-polymer-out, as
the train stage does on the test patients). Its "validation.to_train": [patient ids] moves
those validation patients into training (every row of theirs), and "validation.drop":
[patient ids] leaves them out of both; the variant is selected and judged on the validation
patients that remain, so that two variants judged on the same remaining patients show what
more training patients are worth.

    python benchmarks/experiment_surrogate_settings.py PIPELINE \
        '{"name": {"heads.delta_ef_pct.heteroscedastic": false}, "baseline": {}}'

Prints per variant delta-EF R², MAE and 90% coverage, stress-reduction R² and coverage,
is_optimal AUROC and F1, how each of delta-EF and stress reduction chooses the validation
patients' best designs (top_design_shortfall, top_percent_recall: docs/surrogate.md), and the
training time.
"""

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from hydraopt.config import load_pipeline
from hydraopt.plugin_types import NoSettings
from hydraopt.registry import PluginRegistry
from hydraopt.stages.train import load_training_table
from hydraopt.store import RunStore
from hydraopt.surrogate_evaluation import prediction_metrics

registry = PluginRegistry.discover()
pipeline = load_pipeline(Path(sys.argv[1]), registry)
store = RunStore(pipeline.run_dir)
data, split = load_training_table(store.tables("dataset"))
patient_id = np.asarray(data.inputs.patient_id)
all_train_rows = np.flatnonzero(split == "train")
train_rows = all_train_rows[::3]
# The training patients in a fixed random order: "train.patients": N keeps the first N of it,
# so that smaller sets are subsets of larger ones.
patient_order = np.random.default_rng(0).permutation(np.unique(patient_id[train_rows]))
base = pipeline.plugin_settings[("surrogate",)].model_dump()
config = pipeline.config
encoders = {
    config.encoder.plugin: registry.create(
        "encoder", config.encoder.plugin, pipeline.plugin_settings[("encoder",)]
    ),
    "none": registry.create("encoder", "none", NoSettings()),
}
row_psmiles = data.inputs.row_psmiles
variants = json.loads(sys.argv[2])
for name, changes in variants.items():
    settings = json.loads(json.dumps(base))
    seed = changes.pop("study.seed", config.study.seed)
    kept = patient_order[: changes.pop("train.patients", len(patient_order))]
    chosen = all_train_rows[:: changes.pop("train.every", 3)]
    rows = chosen[np.isin(patient_id[chosen], kept)]
    encoder = encoders[changes.pop("encoder", config.encoder.plugin)]
    if "encoder_settings" in changes:
        plugin = config.encoder.plugin
        encoder_settings = {
            **pipeline.plugin_settings[("encoder",)].model_dump(),
            **changes.pop("encoder_settings"),
        }
        encoder = registry.create(
            "encoder", plugin, registry.validate_settings("encoder", plugin, encoder_settings)
        )
    # By repeat unit, as the train stage holds out: two names with one PSMILES leave together.
    moved = np.isin(patient_id, changes.pop("validation.to_train", []))
    dropped = np.isin(patient_id, changes.pop("validation.drop", []))
    rows = np.union1d(rows, np.flatnonzero(moved & (split == "validation")))
    remaining = (split == "validation") & ~moved & ~dropped
    names = set(changes.pop("held_out_polymers", []))
    held_out = np.isin(row_psmiles, [p.psmiles for p in data.inputs.polymers if p.name in names])
    rows = rows[~held_out[rows]]
    train = data.take(rows[:: changes.pop("train.thin", 1)])
    if held_out.any():
        validation = data.take(remaining & ~held_out)
        judged = data.take(remaining & held_out)
    else:
        validation = judged = data.take(remaining)
    for key, value in changes.items():
        target = settings
        *path, last = key.split(".")
        for part in path:
            target = target[part]
        target[last] = value
    plugin = config.surrogate.plugin
    model = registry.create(
        "surrogate", plugin, registry.validate_settings("surrogate", plugin, settings)
    )
    began = time.perf_counter()
    model.fit(train, validation, encoder, Path(tempfile.mkdtemp()), seed=seed)
    m = prediction_metrics(judged, model.predict(judged.inputs), 0.9)
    d, s = m["delta_ef_pct"], m["bz_stress_reduction_pct"]
    print(
        f"{name}: dEF R2 {d['r2']:.4f} MAE {d['mae']:.4f} cov {d['interval_coverage']:.3f}; "
        f"stress R2 {s['r2']:.4f} cov {s['interval_coverage']:.3f}; "
        f"AUROC {m['is_optimal']['auroc']:.4f} F1 {m['is_optimal']['f1']:.3f}; "
        f"top shortfall dEF {d['top_design_shortfall']:.3f} (recall "
        f"{d['top_percent_recall']:.3f}), stress {s['top_design_shortfall']:.3f} (recall "
        f"{s['top_percent_recall']:.3f}); "
        f"{time.perf_counter() - began:.0f} s",
        flush=True,
    )
