"""pipeline.toml: the schema, loading, and errors that point at the file, line and key.

Every section is a pydantic model that forbids unknown keys. Sections that name a plugin
(``{ plugin = "sobol", ...settings }``) are checked in a second pass against the plugin's own
settings model, so one ``hydraopt validate`` reports every problem with its location.
Relative paths in the file are relative to the file's folder.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hydraopt.domain.design import COVERAGE_PATTERNS, DEFAULT_PARAMETERS
from hydraopt.errors import ConfigError, HydraoptError
from hydraopt.toml_lines import key_lines, line_of

# Spelled out for the schema; a test keeps it equal to COVERAGE_PATTERNS.
CoveragePattern = Literal["scar_only", "scar_bz25", "scar_bz50", "scar_bz100"]


class Section(BaseModel):
    # strict: `true` is not an integer and 1e3 is not a count; finite: no inf or nan bounds.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class StudyConfig(Section):
    """What the study is called, its master seed, and where its runs go."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Study name; the run directory is OUTPUT_DIR/NAME.",
    )
    seed: int = Field(0, ge=0, description="Master seed; every random draw derives from it.")
    output_dir: str = Field(
        "runs", description="Folder holding run directories, relative to the pipeline file."
    )


class CohortConfig(Section):
    """The patients: a CSV file, or a synthetic cohort drawn from published statistics."""

    source: Literal["synthetic", "csv"] = Field(
        "synthetic", description="'synthetic' draws patients; 'csv' reads PATH."
    )
    n_patients: int | None = Field(None, ge=1, description="Synthetic cohorts: number of patients.")
    chronic_fraction: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Synthetic cohorts: share of chronic HFrEF patients (the rest subacute STEMI).",
    )
    path: str | None = Field(
        None, description="CSV cohorts: file with patient_id and the 11 feature columns."
    )

    @model_validator(mode="after")
    def _source_needs_its_keys(self) -> CohortConfig:
        if self.source == "csv":
            if self.path is None:
                raise ValueError("source = 'csv' needs path = 'cohort.csv'")
            if self.n_patients is not None or "chronic_fraction" in self.model_fields_set:
                raise ValueError("n_patients and chronic_fraction apply to synthetic cohorts only")
        if self.source == "synthetic":
            if self.n_patients is None:
                raise ValueError("source = 'synthetic' needs n_patients")
            if self.path is not None:
                raise ValueError("path applies to source = 'csv' only")
        return self


class PolymersConfig(Section):
    """The polymer library the design may choose from."""

    library: str | None = Field(
        None, description="Polymer library CSV; the bundled 24 cardiac hydrogels when omitted."
    )
    include: list[str] | None = Field(
        None, min_length=1, description="Restrict the design to these polymer names."
    )


class RangeConfig(Section):
    """Bounds of one continuous design parameter and the scale it is sampled on."""

    min: float = Field(description="Lower bound, in the parameter's unit.")
    max: float = Field(description="Upper bound; must exceed min.")
    scale: Literal["linear", "log"] = Field(
        description="Sampling scale; 'log' spreads designs evenly per decade."
    )

    @model_validator(mode="after")
    def _ordered(self) -> RangeConfig:
        # Stiffness, half-life, conductivity and thickness are all strictly positive.
        if self.min <= 0:
            raise ValueError(f"min must be positive, got {self.min:g}")
        if not self.min < self.max:
            raise ValueError(f"min ({self.min:g}) must be smaller than max ({self.max:g})")
        return self


def _default_range(name: str) -> RangeConfig:
    parameter = next(p for p in DEFAULT_PARAMETERS if p.name == name)
    return RangeConfig(min=parameter.low, max=parameter.high, scale=parameter.scale)


class DesignSpaceConfig(Section):
    """Coverage patterns allowed and bounds of the continuous parameters."""

    coverage_patterns: list[CoveragePattern] = Field(
        default_factory=lambda: list(COVERAGE_PATTERNS),
        min_length=1,
        description="Allowed coverage patterns (scar only; scar plus 25, 50 or 100% of the BZ).",
    )
    stiffness_kpa: RangeConfig = Field(
        default_factory=lambda: _default_range("stiffness_kpa"),
        description="Hydrogel elastic modulus E, kPa.",
    )
    t50_days: RangeConfig = Field(
        default_factory=lambda: _default_range("t50_days"),
        description="Degradation half-life t50, days.",
    )
    conductivity_s_per_m: RangeConfig = Field(
        default_factory=lambda: _default_range("conductivity_s_per_m"),
        description="Hydrogel electrical conductivity, S/m.",
    )
    thickness_mm: RangeConfig = Field(
        default_factory=lambda: _default_range("thickness_mm"),
        description="Injected patch thickness, mm.",
    )

    @model_validator(mode="after")
    def _unique_patterns(self) -> DesignSpaceConfig:
        if len(set(self.coverage_patterns)) != len(self.coverage_patterns):
            raise ValueError("coverage_patterns lists a pattern twice")
        return self


class PluginChoice(BaseModel):
    """A plugin by name plus its settings, e.g. ``{ plugin = "sobol", scramble = true }``.

    Keys other than ``plugin`` are the plugin's settings, checked by its own settings model.
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    plugin: str = Field(description="Name of the plugin (see `hydraopt plugins`).")

    @property
    def settings(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class GeneratorChoice(PluginChoice):
    """A generator plugin and its settings; the plugin defaults to ``sobol``."""

    plugin: str = Field("sobol", description="Name of the generator plugin.")


class MesherChoice(PluginChoice):
    """A mesher plugin and its settings; the plugin defaults to ``lv-ellipsoid``."""

    plugin: str = Field("lv-ellipsoid", description="Name of the mesher plugin.")


class EncoderChoice(PluginChoice):
    """The polymer encoder plugin and its settings; ``polybert`` (the seeds') by default."""

    plugin: str = Field("polybert", description="Name of the encoder plugin.")


BASELINES = ("hist-gradient-boosting", "no-encoder")


class SearchRange(Section):
    """One searched setting: ``low``/``high`` (``log`` for a log scale) or ``choices``."""

    low: int | float | None = Field(None, description="Smallest value (with high).")
    high: int | float | None = Field(None, description="Largest value (with low).")
    log: bool = Field(False, description="Sample on a log scale.")
    choices: list[int | float | str | bool] | None = Field(
        None, min_length=1, description="Values to choose from (instead of low and high)."
    )

    @model_validator(mode="after")
    def _range_or_choices(self) -> SearchRange:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise ValueError("give either low and high, or choices")
        if self.choices is None and not self.low < self.high:  # type: ignore[operator]
            raise ValueError(f"low ({self.low}) must be smaller than high ({self.high})")
        if self.log and self.choices is None and self.low <= 0:  # type: ignore[operator]
            raise ValueError("a log scale needs low > 0")
        return self


class SearchConfig(Section):
    """Hyperparameter search (Optuna TPE) over declared ranges of the surrogate's settings,
    judged on held-out patients; the best settings train the final surrogate."""

    space: dict[str, SearchRange] = Field(
        min_length=1,
        description="Surrogate settings to search, by name (see the surrogate plugin's "
        "settings), each a range or a list of choices.",
    )
    trials: int = Field(20, ge=1, description="Trials to run (finished ones are kept).")
    folds: int = Field(
        1,
        ge=1,
        description="1: judge each trial on the validation patients; k: patient-grouped "
        "k-fold over the training and validation patients.",
    )
    objective_output: str = Field("delta_ef_pct", description="Output whose metric is scored.")
    objective_metric: Literal[
        "mae",
        "rmse",
        "r2",
        "auroc",
        "f1",
        "accuracy",
        "precision",
        "recall",
        "top_design_shortfall",
        "top_percent_recall",
    ] = Field(
        "mae",
        description="Metric scored (errors and top_design_shortfall minimised, the others "
        "maximised; docs/surrogate.md).",
    )


class TrainConfig(Section):
    """Stage ``train``: what the surrogate is judged against, besides its test patients."""

    baselines: list[Literal["hist-gradient-boosting", "no-encoder"]] = Field(
        default_factory=lambda: list(BASELINES),
        description="Trained on the same split and judged on the same test patients: "
        "scikit-learn gradient boosting on the same features, and the surrogate without a "
        "polymer encoder.",
    )
    leave_polymer_out: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="Share of the distinct polymers (by PSMILES) held out of training and "
        "tested on alone, with the configured encoder and with none; 0 skips it.",
    )
    interval: float = Field(
        0.9, gt=0.0, lt=1.0, description="Central probability of the predictive intervals."
    )
    search: SearchConfig | None = Field(
        None, description="Hyperparameter search before the final training (off by default)."
    )
    processes: int = Field(
        1,
        ge=1,
        description="Processes that train each surrogate data-parallel on this machine "
        "(torchrun; one per GPU, or CPU processes with gloo); 1 trains in the run's process.",
    )
    launcher: list[str] | None = Field(
        None,
        min_length=1,
        description="Command that starts the training processes instead of `torchrun "
        '--standalone --nproc-per-node PROCESSES`, e.g. ["srun", "torchrun", "--nnodes=2", '
        '"--nproc-per-node=4", "--rdzv-backend=c10d", "--rdzv-endpoint=HOST:29500"] '
        "for several nodes sharing the run directory; hydraopt appends `-m "
        "hydraopt.distributed_training JOB`.",
    )


class OutputLimit(Section):
    """A safety limit on one predicted output: each unit beyond it costs ``penalty``."""

    output: str = Field(description="Surrogate output the limit applies to.")
    min: float | None = Field(None, description="Smallest acceptable predicted value.")
    max: float | None = Field(None, description="Largest acceptable predicted value.")
    penalty: float = Field(gt=0.0, description="Reward lost per output unit beyond the limit.")

    @model_validator(mode="after")
    def _one_side_at_least(self) -> OutputLimit:
        if self.min is None and self.max is None:
            raise ValueError(f"limit on {self.output!r} needs min, max or both")
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise ValueError(f"limit on {self.output!r}: min {self.min} must be below max")
        return self


class RewardConfig(Section):
    """What a design is worth to a patient, from the surrogate's predictions (Stages 2 and 3):
    the weighted predicted outputs (a label's calibrated probability), minus penalties on
    their predicted standard deviations and on safety limits. A design its polymer cannot
    make is penalised instead, never clipped."""

    weights: dict[str, float] = Field(
        default_factory=lambda: {"delta_ef_pct": 1.0},
        min_length=1,
        description="Weight of each predicted output (is_optimal: its probability), per "
        "output unit.",
    )
    uncertainty: dict[str, float] = Field(
        default_factory=dict,
        description="Reward lost per unit of each output's predicted standard deviation.",
    )
    limits: list[OutputLimit] = Field(
        default_factory=list, description="Safety limits on predicted outputs."
    )
    infeasible_penalty: float = Field(
        1.0,
        gt=0.0,
        description="Reward of a design outside its polymer's achievable ranges: minus this, "
        "times 1 + how far outside it lies (in unit-cube coordinates, summed).",
    )

    @model_validator(mode="after")
    def _something_to_gain(self) -> RewardConfig:
        if not any(w != 0 for w in self.weights.values()):
            raise ValueError("every weight is zero: the reward would reward nothing")
        negative = [name for name, w in self.uncertainty.items() if w < 0]
        if negative:
            raise ValueError(f"uncertainty penalties must be >= 0 ({', '.join(negative)})")
        return self

    def outputs(self) -> set[str]:
        """Every output the reward reads."""
        return {*self.weights, *self.uncertainty, *(limit.output for limit in self.limits)}


class EnvironmentConfig(Section):
    """Stage 2's design environment: one patient per episode, a design per step."""

    episode_steps: int = Field(
        50, ge=1, description="Designs an episode proposes for its patient (K)."
    )
    patient_encoding: bool = Field(
        False,
        description="Add the surrogate's encoding of the patient (its property encoder) to "
        "the observation, where the surrogate offers one.",
    )


class ProposalsConfig(Section):
    """Stage 2's output: each patient's best designs, found by the trained policy alone."""

    per_patient: int = Field(32, ge=1, description="Designs proposed for each patient.")
    episodes: int = Field(
        4,
        ge=1,
        description="Episodes the policy runs per patient to find them (each scores "
        "environment.episode_steps designs with the surrogate).",
    )


class SplitFractions(Section):
    """Shares of the patients in each split of the dataset (patients, never rows, are split)."""

    train: float = Field(0.7, gt=0.0, le=1.0, description="Share of patients trained on.")
    validation: float = Field(
        0.2, ge=0.0, le=1.0, description="Share of patients for model selection."
    )
    test: float = Field(0.1, ge=0.0, le=1.0, description="Share of patients held out to the end.")

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        total = self.train + self.validation + self.test
        if not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"train + validation + test must be 1, got {total:g}")
        return self

    def named(self) -> dict[str, float]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


# The seeds' definition of an optimal design (seeds/001, section 3.4).
SEEDS_OPTIMAL_THRESHOLDS = {"delta_ef_pct": 3.0, "bz_stress_reduction_pct": 15.0}


class DatasetConfig(Section):
    """The training dataset: the design plan (stage `designs`), what makes a design optimal and
    how patients are split (stage `dataset`)."""

    designs_per_patient: int = Field(ge=1, description="Designs sampled for each patient.")
    generator: GeneratorChoice = Field(
        default_factory=GeneratorChoice,
        description="Generator plugin that samples the designs.",
    )
    is_optimal: dict[str, float] = Field(
        default_factory=lambda: dict(SEEDS_OPTIMAL_THRESHOLDS),
        min_length=1,
        description="A design is optimal when every named simulator output reaches its "
        "threshold (output >= value); the seeds' delta-EF >= 3 %-points and border-zone "
        "stress reduction >= 15% by default.",
    )
    splits: SplitFractions = Field(
        default_factory=SplitFractions,
        description="Shares of patients in the train, validation and test splits.",
    )
    simulators: list[str] | None = Field(
        None,
        min_length=1,
        description="The configured simulators whose outcomes make the dataset (default: "
        "all). The others run only where the design engine's filters name them: FEBio and "
        "openCARP validating finalists, say.",
    )


def _seeds_funnel() -> list[PluginChoice]:
    """seeds/000 section 8.1: therapeutic threshold, top 10%, diversity, simulator pre-screen,
    full simulation, Pareto ranking (10M -> 100K -> 10K -> 1K -> 100 -> 10 -> 1)."""
    return [
        PluginChoice(plugin="threshold"),
        PluginChoice(plugin="top-percent", percent=10.0),
        PluginChoice(plugin="diversity", keep=1000),
        PluginChoice(plugin="simulate", fidelity="screening", keep=100),
        PluginChoice(plugin="simulate", fidelity="validation", keep=10),
        PluginChoice(plugin="pareto", keep=1),
    ]


class CascadeConfig(Section):
    """A small model distilled from the surrogate, per patient, scores every candidate; only
    the best share goes on to the full surrogate and the filter chain."""

    keep_percent: float = Field(
        1.0,
        gt=0.0,
        le=100.0,
        description="Share of the candidates, best by the distilled model, that the full "
        "surrogate scores.",
    )
    distil_samples: int = Field(
        32768,
        ge=256,
        description="Candidates of each patient the full surrogate scores to teach the small "
        "model.",
    )


class ScreenConfig(Section):
    """Stage 3: candidates per patient, scored in chunks by the surrogate, through the ordered
    filter chain to one design per patient."""

    candidates_per_patient: int = Field(
        ge=1, description="Candidates generated per patient (the seeds: 10,000,000)."
    )
    chunk_size: int = Field(
        65536,
        ge=1,
        description="Candidates generated, scored and filtered at a time. With a chain that "
        "opens with row-wise links and a ranking link (the seeds' threshold and top-percent), "
        "memory is bounded by it and by what the ranking link keeps, whatever "
        "candidates_per_patient is. The chunks' random streams follow it: another chunk size "
        "draws other candidates.",
    )
    generator: GeneratorChoice = Field(
        default_factory=lambda: GeneratorChoice(plugin="grid-lhs"),
        description="Generator plugin for the candidates ('grid-lhs': the seeds' grid and "
        "Latin hypercube samples between its points; 'policy': samples around the policy's "
        "proposals).",
    )
    include_proposals: bool = Field(
        True,
        description="Add the Stage 2 policy's proposals for the patient to its candidates, "
        "when a policy stage runs.",
    )
    filters: list[PluginChoice] = Field(
        default_factory=_seeds_funnel,
        min_length=1,
        description="Filter plugins, applied in this order; the seeds' funnel by default.",
    )
    cascade: CascadeConfig | None = Field(
        None, description="Score every candidate with a distilled small model first."
    )


DaskCluster = Literal["local", "slurm", "pbs", "sge", "lsf", "htcondor"]


class DaskConfig(Section):
    """The Dask cluster a `dask` engine runs on: an existing scheduler, a LocalCluster on
    this machine, or a dask-jobqueue cluster whose jobs the batch system starts."""

    scheduler_address: str | None = Field(
        None,
        description="Address of a running Dask scheduler (`tcp://host:8786`); when given, "
        "`cluster` and `cluster_options` are not used.",
    )
    cluster: DaskCluster = Field(
        "local",
        description="'local': a LocalCluster of `execution.workers` processes; 'slurm', "
        "'pbs', 'sge', 'lsf', 'htcondor': a dask-jobqueue cluster scaled to "
        "`execution.workers` workers.",
    )
    cluster_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for the cluster class as they are (for Slurm: queue, "
        "account, cores, memory, walltime, job_extra_directives, ...).",
    )


class ExecutionConfig(Section):
    """Where work runs: a local process pool, or a Dask cluster."""

    engine: Literal["local", "dask"] = Field(
        "local",
        description="'local': hydraopt's process pool on this machine; 'dask': a "
        "dask.distributed cluster, set in [execution.dask].",
    )
    workers: int = Field(
        0,
        ge=0,
        description="Worker processes (local pool, Dask LocalCluster or jobqueue cluster); "
        "0 means one per CPU core of this machine.",
    )
    dask: DaskConfig = Field(default_factory=DaskConfig)
    evaluation_batch: int = Field(
        0,
        ge=0,
        description="Designs per simulator evaluation task: a patient's designs are split "
        "into batches of this size, each a task of its own (spread over workers, resumed and "
        "failed alone); 0 means one task per patient and simulator.",
    )
    failed_evaluations: Literal["record", "stop"] = Field(
        "record",
        description="An evaluation task that raised, ran past its simulator's timeout_s or "
        "lost its worker twice: 'record' marks its designs failed with the reason, the "
        "study goes on and the next run retries it; 'stop' fails the stage, so the stages "
        "after it wait for a rerun.",
    )

    @model_validator(mode="after")
    def _jobqueue_needs_workers(self) -> ExecutionConfig:
        batch_system = self.dask.cluster != "local" and not self.dask.scheduler_address
        if self.engine == "dask" and batch_system and self.workers == 0:
            raise ValueError(
                f"execution.workers: a {self.dask.cluster} cluster starts as many workers "
                "as you ask for; 0 (one per core of this machine) does not say how many"
            )
        return self

    evaluation_cache: bool = Field(
        True,
        description="Read simulator evaluations another run already paid for (same simulator, "
        "settings and code, same heart and mesh, same design) from the cache, and keep new "
        "ones there.",
    )
    cache_dir: str | None = Field(
        None,
        description="The evaluation cache's folder, shared by every study that names it "
        "(relative to this file); by default `evaluation-cache` in study.output_dir.",
    )


class PipelineConfig(Section):
    """A whole pipeline.toml. Optional sections switch their stages on."""

    study: StudyConfig
    cohort: CohortConfig
    polymers: PolymersConfig = Field(default_factory=PolymersConfig)
    design_space: DesignSpaceConfig = Field(default_factory=DesignSpaceConfig)
    mesh: MesherChoice = Field(
        default_factory=MesherChoice,
        description="Mesher plugin building each patient's LV mesh; meshes are built when "
        "simulators are configured or this table is given.",
    )
    simulators: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="One table per simulator plugin, [simulators.NAME], holding its settings "
        "and, optionally, `timeout_s`: the longest one evaluation (a patient's designs) may "
        "take before it is stopped and reported as failed (default: no limit).",
    )
    dataset: DatasetConfig | None = Field(None, description="The training dataset's design plan.")
    surrogate: PluginChoice | None = Field(
        None, description="Stage 1: the surrogate plugin and its settings."
    )
    encoder: EncoderChoice = Field(
        default_factory=EncoderChoice,
        description="Stage 1: the polymer encoder the surrogate uses, and its settings.",
    )
    train: TrainConfig = Field(
        default_factory=TrainConfig,
        description="Stage 1: baselines and the leave-polymer-out evaluation.",
    )
    policy: PluginChoice | None = Field(
        None, description="Stage 2: the design-policy plugin and its settings."
    )
    reward: RewardConfig = Field(
        default_factory=RewardConfig,
        description="Stages 2 and 3: what a design is worth, from the surrogate's predictions.",
    )
    environment: EnvironmentConfig = Field(
        default_factory=EnvironmentConfig, description="Stage 2: the design environment."
    )
    proposals: ProposalsConfig = Field(
        default_factory=ProposalsConfig, description="Stage 2: the designs the policy proposes."
    )
    screen: ScreenConfig | None = Field(None, description="Stage 3: the design engine.")
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    @model_validator(mode="after")
    def _dataset_simulators_are_configured(self) -> PipelineConfig:
        chosen = self.dataset.simulators if self.dataset else None
        unknown = [name for name in chosen or () if name not in self.simulators]
        if unknown:
            raise ValueError(
                f"dataset.simulators names {unknown}, which have no [simulators.NAME] table "
                f"(configured: {list(self.simulators)})"
            )
        return self

    def dataset_simulators(self) -> list[str]:
        """The simulators that simulate the dataset's designs: ``[dataset] simulators``, or
        every configured one."""
        chosen = self.dataset.simulators if self.dataset else None
        return list(chosen) if chosen else list(self.simulators)

    def present_sections(self) -> list[str]:
        """Optional sections this file fills in (each switches on the stages that read it)."""
        optional = ("simulators", "dataset", "surrogate", "policy", "screen")
        present = [name for name in optional if getattr(self, name)]
        return ["mesh", *present] if "mesh" in self.model_fields_set else present

    def plugin_choices(self) -> Iterator[tuple[tuple[str | int, ...], str, str, dict[str, Any]]]:
        """Every plugin the pipeline names: (key path, kind, name, raw settings)."""
        yield ("mesh",), "mesher", self.mesh.plugin, self.mesh.settings
        for name, table in self.simulators.items():
            settings = {k: v for k, v in table.items() if k not in CORE_SIMULATOR_KEYS}
            yield ("simulators", name), "simulator", name, settings
        if self.dataset:
            yield (
                ("dataset", "generator"),
                "generator",
                self.dataset.generator.plugin,
                self.dataset.generator.settings,
            )
        if self.surrogate:
            yield ("surrogate",), "surrogate", self.surrogate.plugin, self.surrogate.settings
            yield ("encoder",), "encoder", self.encoder.plugin, self.encoder.settings
        if self.policy:
            yield ("policy",), "policy", self.policy.plugin, self.policy.settings
        if self.screen:
            yield (
                ("screen", "generator"),
                "generator",
                self.screen.generator.plugin,
                self.screen.generator.settings,
            )
            for i, choice in enumerate(self.screen.filters):
                yield ("screen", "filters", i), "filter", choice.plugin, choice.settings

    def plugin_at(self, loc: tuple[str | int, ...]) -> tuple[str, str]:
        """(kind, name) of the plugin configured at ``loc``."""
        for choice_loc, kind, name, _ in self.plugin_choices():
            if choice_loc == loc:
                return kind, name
        raise KeyError(f"no plugin configured at {loc}")


# Keys of a [simulators.NAME] table that hydraopt reads itself; the rest are the plugin's.
CORE_SIMULATOR_KEYS = ("timeout_s",)


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline file: its config, where it lives, and its plugins' settings."""

    config: PipelineConfig
    path: Path
    plugin_settings: dict[tuple[str | int, ...], BaseModel]

    def timeout_s(self, loc: tuple[str | int, ...]) -> float | None:
        """The wall-clock limit of one evaluation by the plugin at ``loc``, if one is set."""
        if loc[0] == "simulators":
            return self.config.simulators[str(loc[1])].get("timeout_s")
        return None

    @property
    def base_dir(self) -> Path:
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """A path from the file, taken relative to the file's folder."""
        candidate = Path(relative).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    @property
    def cache_dir(self) -> Path | None:
        """The evaluation cache's folder, or None when the cache is off."""
        execution = self.config.execution
        if not execution.evaluation_cache:
            return None
        if execution.cache_dir is not None:
            return self.resolve(execution.cache_dir).resolve()
        return (self.resolve(self.config.study.output_dir) / "evaluation-cache").resolve()

    @property
    def run_dir(self) -> Path:
        return (self.resolve(self.config.study.output_dir) / self.config.study.name).resolve()

    def resolved_dict(self) -> dict[str, Any]:
        """The config with every default filled in, as plain TOML-able data."""
        return self.config.model_dump(mode="json", exclude_none=True)

    def config_hash(self) -> str:
        return stable_hash(self.resolved_dict())


def stable_hash(data: Any) -> str:
    """SHA-256 of the canonical JSON form of ``data``."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def load_pipeline(
    path: Path, registry: Any | None = None, overrides: Mapping[str, Any] | None = None
) -> Pipeline:
    """Read and validate ``path``; with a registry, also check plugin names and settings.

    ``overrides`` replace values of the file before it is validated, by dotted key
    (``{"cohort.n_patients": 60}``; a table's key with a dict replaces the whole table, and
    None removes a key); a problem with one names it as ``override KEY``.

    Raises :class:`ConfigError` listing every problem as ``file:line: key.path: message``.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the pipeline file ({exc.strerror})"]) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}:{line}: not UTF-8 text ({exc.reason})"]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_error(path, exc, text)]) from None
    lines = key_lines(text)
    changed = apply_overrides(raw, overrides or {})

    def where(loc: tuple[str | int, ...]) -> str:
        dotted = dotted_key(loc)
        for key in changed:
            if dotted == key or dotted.startswith(f"{key}."):
                return f"{path} (override {key})"
        line = line_of(lines, loc)
        return f"{path}:{line}" if line else str(path)

    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, (), PipelineConfig, where)) from None
    pipeline = Pipeline(config, path.resolve(), {})
    problems = _check_files(pipeline, where)
    if registry is not None:
        problems += _check_plugins(pipeline, registry, where)
    if problems:
        raise ConfigError(problems)
    return pipeline


def apply_overrides(raw: dict[str, Any], overrides: Mapping[str, Any]) -> list[str]:
    """Set dotted keys of the parsed file ``raw`` in place (None removes one); returns the
    keys set, for error messages."""
    for key, value in overrides.items():
        *tables, name = key.split(".")
        if not name or not all(tables):
            raise ConfigError([f"override {key!r}: not a dotted key such as 'cohort.n_patients'"])
        table = raw
        for part in tables:
            inner = table.setdefault(part, {})
            if not isinstance(inner, dict):
                raise ConfigError([f"override {key!r}: {part!r} is a value, not a table"])
            table = inner
        if value is None:
            table.pop(name, None)
        else:
            table[name] = value
    return sorted(overrides, key=len, reverse=True)


def _syntax_error(path: Path, exc: tomllib.TOMLDecodeError, text: str) -> str:
    message = str(exc)
    if message.endswith("(at end of document)"):
        line = text.count("\n") + (0 if text.endswith("\n") else 1)
        reason = message.removesuffix("(at end of document)").strip()
        return f"{path}:{line}: TOML syntax error: {reason} (at the end of the file)"
    # tomllib ends its messages with "(at line L, column C)".
    marker = message.rfind("(at line ")
    if marker >= 0:
        position = message[marker + len("(at line ") :].rstrip(")").split(", column ")
        return (
            f"{path}:{position[0]}: TOML syntax error: {message[:marker].strip()} "
            f"(column {position[1]})"
            if len(position) == 2
            else f"{path}: {message}"
        )
    return f"{path}: TOML syntax error: {message}"


def _describe(
    exc: ValidationError, prefix: tuple[str | int, ...], model: type[BaseModel], where: Any
) -> list[str]:
    problems = []
    for error in exc.errors():
        loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and "[" in p))
        full = (*prefix, *loc)
        key = dotted_key(full) or "(top level)"
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            message = "unknown key"
            close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
            if allowed:
                message += f"{'' if close else '.'} Expected one of: {', '.join(allowed)}."
        elif error["type"] == "missing":
            message = "required key is missing"
        else:
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] not in ("value_error", "assertion_error"):
                message += f" (got {error['input']!r})"
        problems.append(f"{where(full)}: {key}: {message}")
    return problems


def dotted_key(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _allowed_keys(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """Field names of the model found by walking ``loc`` through the schema."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = typing.get_args(current)
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(part)
            current = field.annotation if field else None
        else:
            return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> ``X``; ``Annotated[X, ...]`` -> ``X``."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return options[0] if len(options) == 1 else annotation
    return annotation


def _check_files(pipeline: Pipeline, where: Any) -> list[str]:
    problems = []
    config = pipeline.config
    for loc, value in (
        (("cohort", "path"), config.cohort.path),
        (("polymers", "library"), config.polymers.library),
    ):
        if value is not None and not pipeline.resolve(value).is_file():
            problems.append(
                f"{where(loc)}: {dotted_key(loc)}: no such file {str(pipeline.resolve(value))!r}"
            )
    if not problems:
        problems += _check_polymers(pipeline, where)
    return problems


def _check_polymers(pipeline: Pipeline, where: Any) -> list[str]:
    """The library must load (PSMILES checked) and hold every polymer ``include`` names."""
    from hydraopt.polymer_library import read_polymer_library

    section = pipeline.config.polymers
    library_path = pipeline.resolve(section.library) if section.library else None
    try:
        names = set(read_polymer_library(library_path).names)
    except HydraoptError as exc:
        return [f"{where(('polymers', 'library'))}: polymers.library: {exc}"]
    return [
        f"{where(('polymers', 'include'))}: polymers.include[{i}]: no polymer {name!r} in the "
        f"library (it has: {', '.join(sorted(names))})"
        for i, name in enumerate(section.include or [])
        if name not in names
    ]


def _check_plugins(pipeline: Pipeline, registry: Any, where: Any) -> list[str]:
    problems = _check_timeouts(pipeline, where)
    for loc, kind, name, raw in pipeline.config.plugin_choices():
        try:
            plugin = registry.get(kind, name)
        except HydraoptError as exc:
            name_loc = loc if loc[0] == "simulators" else (*loc, "plugin")
            problems.append(f"{where(name_loc)}: {dotted_key(name_loc)}: {exc}")
            continue
        settings_model = plugin.registration.settings
        try:
            pipeline.plugin_settings[loc] = settings_model.model_validate(raw)
        except ValidationError as exc:
            problems += _describe(exc, loc, settings_model, where)
    return problems


def _check_timeouts(pipeline: Pipeline, where: Any) -> list[str]:
    problems = []
    for name, table in pipeline.config.simulators.items():
        if "timeout_s" not in table:
            continue
        loc = ("simulators", name, "timeout_s")
        value = table["timeout_s"]
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{where(loc)}: {dotted_key(loc)}: expected a number of seconds")
        elif not (math.isfinite(value) and value > 0):
            problems.append(
                f"{where(loc)}: {dotted_key(loc)}: expected a positive, finite number of seconds, "
                f"got {value!r}"
            )
    return problems


def build_design_space(section: DesignSpaceConfig, polymers: Any) -> Any:
    """The :class:`~hydraopt.domain.DesignSpace` a config section describes over ``polymers``."""
    from hydraopt.domain import ContinuousParameter, DesignSpace

    parameters = tuple(
        ContinuousParameter(
            name=p.name,
            unit=p.unit,
            description=p.description,
            low=getattr(section, p.name).min,
            high=getattr(section, p.name).max,
            scale=getattr(section, p.name).scale,
        )
        for p in DEFAULT_PARAMETERS
    )
    return DesignSpace(
        polymers=polymers, coverages=tuple(section.coverage_patterns), parameters=parameters
    )
