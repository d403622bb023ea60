"""The Python API for scripted studies: load a pipeline, change what the study needs, run it,
and read its results as pandas DataFrames.

    from hydraopt.api import Study

    study = Study.load("pipeline.toml", {"cohort.n_patients": 60, "execution.engine": "dask"})
    summary = study.run()
    table = study.results()  # per patient and design; per patient once Stage 3 has run

A study is the same run directory ``hydraopt run`` makes: running it again resumes, skips what
is done, and reads evaluations another study paid for from the shared evaluation cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hydraopt.config import Pipeline, load_pipeline
from hydraopt.domain.design import COVERAGE_PATTERNS
from hydraopt.errors import HydraoptError
from hydraopt.registry import PluginRegistry
from hydraopt.run_summary import RunSummary
from hydraopt.store import RunStore

if TYPE_CHECKING:
    import pandas as pd


class Study:
    """One pipeline and its run directory."""

    def __init__(self, pipeline: Pipeline, registry: PluginRegistry | None = None) -> None:
        self.pipeline = pipeline
        self.registry = registry or PluginRegistry.discover()

    @classmethod
    def load(
        cls,
        path: str | Path,
        overrides: Mapping[str, Any] | None = None,
        cohort: pd.DataFrame | str | Path | None = None,
        registry: PluginRegistry | None = None,
    ) -> Study:
        """The pipeline file ``path`` with ``overrides`` by dotted key (see
        :func:`hydraopt.config.load_pipeline`), validated as ``hydraopt validate`` does.

        :param cohort: the patients, in place of the file's cohort: a cohort CSV, or a
            DataFrame with its columns (``patient_id`` and the patient features, optionally
            ``origin`` and ``infarct_age_days``), which is kept as a CSV named by its content
            in study.output_dir, so that the run sees when it changes.
        """
        path = Path(path)
        registry = registry or PluginRegistry.discover()
        settings = dict(overrides or {})
        if cohort is not None:
            # The file's own cohort is replaced, so it need not be valid: a stand-in lets
            # the rest be read for where the CSV goes.
            stand_in = {**settings, "cohort": {"source": "synthetic", "n_patients": 1}}
            first = load_pipeline(path, registry, stand_in)
            csv = cohort if isinstance(cohort, str | Path) else _cohort_csv(cohort, first)
            settings["cohort"] = {"source": "csv", "path": str(Path(csv).resolve())}
        return cls(load_pipeline(path, registry, settings), registry)

    @property
    def run_dir(self) -> Path:
        return self.pipeline.run_dir

    def run(
        self,
        *,
        quiet: bool = True,
        to_stage: str | None = None,
        from_stage: str | None = None,
        force: bool = False,
        keep_going: bool = False,
    ) -> RunSummary:
        """Run the study's stages (as ``hydraopt run``), resuming what an earlier run left.
        A stage whose units failed is in the summary's ``failed``; evaluation failures that
        were recorded, in its ``recorded``."""
        from hydraopt.pipeline import run_pipeline
        from hydraopt.progress import Reporter

        return run_pipeline(
            self.pipeline,
            self.registry,
            Reporter(quiet=quiet),
            from_stage=from_stage,
            force=force,
            keep_going=keep_going,
            to_stage=to_stage,
        )

    # ---- results -----------------------------------------------------------------------------

    def cohort(self) -> pd.DataFrame:
        """One row per patient: its id, origin and features."""
        import pandas as pd

        return pd.DataFrame(self._store().tables("cohort").table("patients"))

    def outcomes(self) -> pd.DataFrame:
        """One row per patient and simulated design: the design (polymer and coverage by
        name, the continuous parameters with their units in the names), every simulator's
        outputs, and per simulator whether the design failed and why."""
        import pandas as pd

        from hydraopt.stages.designs import stored_space

        store = self._store()
        space = stored_space(store, self.pipeline.config)
        designs, outcomes = store.shards("designs"), store.shards("outcomes")
        simulators = list(outcomes.meta["simulators"])
        frames = []
        for patient_id in outcomes.meta["patients"]:
            columns = designs.table(patient_id, "designs")
            frame = {
                "patient_id": np.full(len(columns["polymer_index"]), patient_id, dtype=object),
                "design_index": np.arange(len(columns["polymer_index"])),
                "polymer": np.array(space.polymers.names, dtype=object)[columns["polymer_index"]],
                "coverage": np.array(COVERAGE_PATTERNS, dtype=object)[columns["coverage_index"]],
                **{k: v for k, v in columns.items() if not k.endswith("_index")},
            }
            for simulator in simulators:
                table = outcomes.table(f"{patient_id}__{simulator}", "outcomes")
                for name, values in table.items():
                    if name in ("failed", "failure_reason"):
                        frame[f"{simulator}.{name}"] = values
                    elif values.ndim == 1:
                        frame[name] = values
                    else:  # a trajectory: one column per point
                        for point in range(values.shape[1]):
                            frame[f"{name}[{point}]"] = values[:, point]
            frames.append(pd.DataFrame(frame))
        return pd.concat(frames, ignore_index=True)

    def chosen_designs(self) -> pd.DataFrame:
        """One row per patient: the design Stage 3 chose, with its predicted and simulated
        outcomes (patients whose filter chain emptied are in the artifact's meta)."""
        import pandas as pd

        table = self._store().tables("final_designs").table("designs")
        return pd.DataFrame(
            {k: v for k, v in table.items() if np.ndim(v) == 1}  # trajectories stay in HDF5
        )

    def results(self) -> pd.DataFrame:
        """:meth:`chosen_designs` once the study has a design engine stage that finished,
        :meth:`outcomes` otherwise."""
        if self._store().stage_record("screen") is not None:
            return self.chosen_designs()
        return self.outcomes()

    def failures(self) -> pd.DataFrame:
        """Units that failed in the last run, one row each: stage, unit, the plugin to blame,
        the reason, and whether the study went on without it (recorded)."""
        import json

        import pandas as pd

        rows: list[dict[str, Any]] = []
        journal = self._store().journal_path
        lines = journal.read_text(encoding="utf-8").splitlines() if journal.is_file() else []
        finished = [json.loads(line) for line in lines if '"run_finished"' in line]
        if finished:
            last = finished[-1]
            for recorded, key in ((False, "failures"), (True, "recorded_failures")):
                for stage, failures in last.get(key, {}).items():
                    rows += [{"stage": stage, **f, "recorded": recorded} for f in failures]
        return pd.DataFrame(rows, columns=["stage", "unit", "plugin", "reason", "recorded"])

    def _store(self) -> RunStore:
        store = RunStore(self.run_dir)
        if store.stage_record("cohort") is None:
            raise HydraoptError(f"{self.run_dir}: the study has not run yet; call run() first")
        return store


def _cohort_csv(cohort: pd.DataFrame, pipeline: Pipeline) -> Path:
    """The DataFrame as a cohort CSV in study.output_dir, named by its content."""
    text = cohort.to_csv(index=False)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    folder = pipeline.resolve(pipeline.config.study.output_dir) / "cohorts"
    path = folder / f"{pipeline.config.study.name}-{digest}.csv"
    if not path.exists():
        from hydraopt.atomic import write_text

        write_text(path, text)
    return path
