"""Typed plugin registrations and the interfaces that plugin objects implement.

A registration (one frozen dataclass per kind) is cheap to build: it names the plugin, its
settings model (pydantic) and a factory. The factory is called only when a pipeline uses the
plugin, with the validated settings, and is where heavy imports belong.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict

from hydraopt.domain import (
    DesignBatch,
    DesignSpace,
    Outcomes,
    OutputSpec,
    Patient,
    Predictions,
    SurrogateInputs,
    TrainingData,
)
from hydraopt.domain.mesh import PatientMesh

PLUGIN_NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
HOOKS_VERSION_PATTERN = re.compile(r"^\d+\.\d+$")


def hooks_mismatch(declared: str | None, current: str) -> str | None:
    """Why a plugin written for hook contract ``declared`` cannot run with ``current`` (None
    when it can: same MAJOR, MINOR not newer, or nothing declared)."""
    if declared is None:
        return None
    (major, minor), (now_major, now_minor) = (
        tuple(int(part) for part in v.split(".")) for v in (declared, current)
    )
    if major != now_major:
        return "its major version differs: a hook or an interface it relies on has changed"
    if minor > now_minor:
        return "it needs hooks or members this hydraopt does not have yet"
    return None


class PluginSettings(BaseModel):
    """Base for plugin settings models: unknown keys are errors, values are immutable.

    Give every field a ``description``: it is shown by ``hydraopt plugins --settings``.
    Validation is strict (``true`` is not an integer) and rejects inf and nan.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class NoSettings(PluginSettings):
    """For plugins that take no settings."""


@dataclass(frozen=True)
class PluginRegistration:
    """What a hook returns for one plugin.

    :param name: unique within its kind; lowercase words joined by hyphens (``reference-ep``).
    :param factory: called as ``factory(settings)`` with an instance of ``settings``.
    :param settings: pydantic model of the plugin's table in pipeline.toml.
    :param description: one line, shown by ``hydraopt plugins``.
    :param version: the plugin's own version; defaults to its distribution's version. Simulators
        should bump it whenever their results change, since cached evaluations are keyed by it.
    :param hooks_version: the version of hydraopt's plugin contract
        (:data:`hydraopt.hookspecs.HOOKS_VERSION`, ``"MAJOR.MINOR"``) the plugin was written
        for; a hydraopt whose contract it does not fit refuses it with both versions named.
        None: not declared, assumed to fit.
    """

    kind: ClassVar[str] = ""
    name: str
    factory: Callable[[Any], Any]
    settings: type[PluginSettings] = NoSettings
    description: str = ""
    version: str | None = None
    hooks_version: str | None = None

    def __post_init__(self) -> None:
        if not PLUGIN_NAME_PATTERN.match(self.name):
            raise ValueError(
                f"{self.kind} plugin name {self.name!r} must be lowercase words joined by "
                "hyphens, for example 'reference-mechanics'"
            )
        if not (isinstance(self.settings, type) and issubclass(self.settings, BaseModel)):
            raise TypeError(f"{self.kind} plugin {self.name!r}: settings must be a pydantic model")
        if not callable(self.factory):
            raise TypeError(f"{self.kind} plugin {self.name!r}: factory must be callable")
        if self.hooks_version is not None and not HOOKS_VERSION_PATTERN.match(self.hooks_version):
            raise ValueError(
                f"{self.kind} plugin {self.name!r}: hooks_version {self.hooks_version!r} must "
                "be 'MAJOR.MINOR', for example '1.1'"
            )


@dataclass(frozen=True)
class MesherPlugin(PluginRegistration):
    kind: ClassVar[str] = "mesher"


@dataclass(frozen=True)
class SimulatorPlugin(PluginRegistration):
    kind: ClassVar[str] = "simulator"


@dataclass(frozen=True)
class EncoderPlugin(PluginRegistration):
    kind: ClassVar[str] = "encoder"


@dataclass(frozen=True)
class SurrogatePlugin(PluginRegistration):
    kind: ClassVar[str] = "surrogate"


@dataclass(frozen=True)
class PolicyPlugin(PluginRegistration):
    kind: ClassVar[str] = "policy"


@dataclass(frozen=True)
class FilterPlugin(PluginRegistration):
    kind: ClassVar[str] = "filter"


@dataclass(frozen=True)
class GeneratorPlugin(PluginRegistration):
    kind: ClassVar[str] = "generator"


@dataclass(frozen=True)
class RegisteredPlugin:
    """A registration together with the distribution that provided it."""

    registration: PluginRegistration
    package: str
    package_version: str

    @property
    def kind(self) -> str:
        return self.registration.kind

    @property
    def name(self) -> str:
        return self.registration.name

    @property
    def version(self) -> str:
        return self.registration.version or self.package_version

    @property
    def description(self) -> str:
        return self.registration.description


# kind -> (hook name, registration type), in the order `hydraopt plugins` lists them.
PLUGIN_KINDS: dict[str, tuple[str, type[PluginRegistration]]] = {
    "mesher": ("hydraopt_meshers", MesherPlugin),
    "simulator": ("hydraopt_simulators", SimulatorPlugin),
    "encoder": ("hydraopt_encoders", EncoderPlugin),
    "surrogate": ("hydraopt_surrogates", SurrogatePlugin),
    "policy": ("hydraopt_policies", PolicyPlugin),
    "filter": ("hydraopt_filters", FilterPlugin),
    "generator": ("hydraopt_generators", GeneratorPlugin),
}


@runtime_checkable
class Mesher(Protocol):
    """Builds a patient's tagged LV mesh; deterministic for the same patient and settings.
    ``workdir`` (may be None) is a folder for scratch files."""

    def build(self, patient: Patient, workdir: Path | None = None) -> PatientMesh: ...


@runtime_checkable
class Simulator(Protocol):
    """A physics simulator. Works on batches: a vectorised model integrates all designs at
    once, a subprocess adapter loops over them.

    ``outputs`` declares every output with its unit. ``simulate`` must be deterministic for the
    same patient, designs and settings; a design that cannot be evaluated is marked in
    ``Outcomes.failed`` with a reason rather than raising, so one bad design never stops a
    batch. ``workdir`` is an empty directory the simulator may use for its files.

    Optional: ``environment_problems() -> list[str]``, what this machine lacks for the
    simulator to run (an external program not found); ``hydraopt validate`` and ``run`` print
    them as warnings, since the evaluations would still be recorded, as failed.
    """

    outputs: tuple[OutputSpec, ...]

    def simulate(
        self, patient: Patient, mesh: PatientMesh, designs: DesignBatch, workdir: Path
    ) -> Outcomes: ...


@runtime_checkable
class Generator(Protocol):
    """Samples ``n`` designs from ``space``; all randomness comes from ``rng``."""

    def generate(self, space: DesignSpace, n: int, rng: np.random.Generator) -> DesignBatch: ...


@runtime_checkable
class Encoder(Protocol):
    """Maps polymer repeat units (PSMILES, ``[*]`` end points) to fixed-size embeddings.

    ``embedding_dim`` may be 0: no polymer encoder, the baseline that shows what one is worth.
    ``fingerprint`` is a digest of everything that decides the embeddings (weights, tokenizer,
    settings): a surrogate's checkpoint records it, so one trained with another encoder is
    refused. ``encode`` gives frozen embeddings, ``float32 [len(psmiles), embedding_dim]``,
    deterministic. ``trainable_module()`` is None for a frozen encoder; otherwise a new
    ``torch.nn.Module`` on every call, whose ``forward(psmiles: Sequence[str]) -> Tensor [n,
    embedding_dim]`` one surrogate trains with its own parameters (polyBERT's LoRA adapters,
    initialised from torch's generator, so that a seeded training starts from the same ones),
    and whose trainable parameters are what training changes. Each surrogate trains its own:
    one training must neither start from nor change another's.
    """

    embedding_dim: int
    fingerprint: str

    def encode(self, psmiles: Sequence[str]) -> np.ndarray: ...

    def trainable_module(self) -> Any: ...


@runtime_checkable
class Surrogate(Protocol):
    """Predicts outcomes of designs on patients without simulating them, each prediction with
    its uncertainty (Stage 1).

    ``fit`` trains on ``train`` with ``encoder`` for the polymers, selects on ``validation``
    (other patients) and returns the validation metrics by name; all randomness, MC dropout
    at prediction included, comes from ``seed``. ``workdir`` persists across
    runs of the stage: keep checkpoints there so that a killed training resumes from its last
    epoch. ``report`` (may be None) takes one line of progress. ``outputs`` declares what it
    predicts, with units, once fitted or loaded. ``save`` writes everything ``load`` needs
    into an empty folder; ``load`` restores a fitted surrogate into a new object built with
    the same settings and an encoder built with the same settings, and refuses (``ValueError``
    naming the file) a folder written with another configuration or encoder.
    ``predict(inputs)`` gives the predicted outcomes and their standard deviations.

    Optional, for the agents that call a surrogate thousands of times (Stage 2):
    ``tensor_scorer(polymers) -> TensorScorer``, the frozen surrogate as a function on torch
    tensors (without it, :func:`hydraopt.design_environment.scorer_for` wraps ``predict``);
    and ``training_domain -> SurrogateDomain | None``, the polymers and feature ranges it was
    trained on, against which a study's library and design space are checked.
    """

    outputs: tuple[OutputSpec, ...]

    def fit(
        self,
        train: TrainingData,
        validation: TrainingData,
        encoder: Encoder,
        workdir: Path,
        seed: int = 0,
        report: Callable[[str], None] | None = None,
    ) -> Mapping[str, float]: ...

    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path, encoder: Encoder) -> None: ...

    def predict(self, inputs: SurrogateInputs) -> Predictions: ...


@runtime_checkable
class TensorScorer(Protocol):
    """A fitted surrogate, frozen, as a function on torch tensors on ``device``.

    ``scorer(features, polymer_index, outputs=None)``: ``features [n, 19]`` float32, the
    :data:`hydraopt.domain.training.DATASET_FEATURES` in their units, and ``polymer_index
    [n]`` into the polymers the scorer was built for; returns, per output (or per output
    named in ``outputs``, at least), its predicted mean (a label's calibrated probability)
    and standard deviation, ``[n, *shape]``.
    Deterministic. ``patient_encoding(features)`` may return the surrogate's own encoding of
    patients ``[m, width]`` from their 11 features, or None.
    """

    outputs: tuple[OutputSpec, ...]
    device: Any

    def __call__(
        self, features: Any, polymer_index: Any, outputs: Any = None
    ) -> Mapping[str, tuple[Any, Any]]: ...

    def patient_encoding(self, patient_features: Any) -> Any: ...


@runtime_checkable
class Policy(Protocol):
    """Learns to propose designs for patients it has never seen (Stage 2).

    ``fit(make_environment, workdir, seed, report)`` trains on environments
    (:class:`hydraopt.design_environment.DesignEnvironment`, over the training patients) that
    ``make_environment(num_envs)`` builds, and returns its final diagnostics by name; all
    randomness comes from ``seed``; a checkpoint in ``workdir`` lets a killed training resume.
    ``act(observations, deterministic)`` maps a batch of observations to a
    :class:`hydraopt.design_environment.DesignAction` (seeded by ``fit``'s seed when
    sampling). ``save`` writes what ``load`` needs into an empty folder; ``load(directory,
    environment)`` refuses (``ValueError`` naming the file) a policy trained for another
    environment (library, coverage patterns, observation).
    """

    def fit(
        self,
        make_environment: Callable[[int], Any],
        workdir: Path,
        seed: int = 0,
        report: Callable[[str], None] | None = None,
    ) -> Mapping[str, float]: ...

    def act(self, observations: Any, deterministic: bool = False) -> Any: ...

    def save(self, directory: Path) -> None: ...

    def load(self, directory: Path, environment: Any) -> None: ...


@dataclass(frozen=True, eq=False)
class Candidates:
    """A patient's candidate designs at one link of the filter chain, columnar.

    ``columns`` holds one array per named quantity, ``[n]`` or ``[n, *shape]``:

    - ``reward``: the design's worth under ``[reward]`` (higher is better);
    - ``predicted_<output>`` and ``predicted_<output>_std``: the surrogate's prediction of each
      output and its standard deviation (a label's calibrated probability);
    - ``simulated_<output>``: a simulator's result, added by a filter that simulates (NaN where
      the simulation failed);
    - any other column an earlier filter added.
    """

    patient: Patient
    designs: DesignBatch
    columns: Mapping[str, np.ndarray]

    def __post_init__(self) -> None:
        n = len(self.designs)
        for name, values in self.columns.items():
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} rows, the designs {n}")

    def __len__(self) -> int:
        return len(self.designs)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.columns:
            raise KeyError(
                f"no column {name!r} among the candidates' columns "
                f"({', '.join(sorted(self.columns))})"
            )
        return self.columns[name]

    def take(self, rows: np.ndarray) -> Candidates:
        """The candidates at ``rows`` (indices or a mask), in that order."""
        return Candidates(
            self.patient,
            self.designs.take(rows),
            {name: values[rows] for name, values in self.columns.items()},
        )

    def with_columns(self, columns: Mapping[str, np.ndarray]) -> Candidates:
        """These candidates with ``columns`` added (or replaced)."""
        return Candidates(self.patient, self.designs, {**self.columns, **columns})


@dataclass(frozen=True)
class Selection:
    """What a filter keeps.

    :param keep: indices of the candidates kept, best first where the filter ranks (a filter
        that does not rank keeps the incoming order).
    :param columns: new columns for every candidate that entered (``simulated_*``), which
        later filters and the output see.
    :param metrics: figures about the selection, by name (``hypervolume``).
    """

    keep: np.ndarray
    columns: Mapping[str, np.ndarray] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class FilterContext:
    """What a filter may use besides the candidates.

    :param mesh: the patient's mesh (a filter that simulates needs it).
    :param simulator: ``simulator(name, fidelity)``, the pipeline's simulator ``name`` built
        with its settings, at ``fidelity`` when given (its settings' ``fidelity`` replaced).
    :param simulator_names: the simulators the pipeline configures, in its order.
    :param rng: a random stream of this filter and patient.
    :param workdir: an empty folder for the filter's files.
    """

    mesh: PatientMesh
    simulator: Callable[[str, str | None], Simulator]
    simulator_names: tuple[str, ...]
    rng: np.random.Generator
    workdir: Path


@runtime_checkable
class Filter(Protocol):
    """One link of Stage 3's filter chain: ``select(candidates, context) -> Selection``.

    ``reads``: the columns it needs; a chain where an earlier link (or the surrogate) does not
    provide one is refused before the run starts. Optional:

    - ``produces(simulator_outputs) -> tuple[str, ...]``: the columns it adds, given each
      configured simulator's output names;
    - ``rowwise = True``: each candidate is kept or not on its own columns alone, so the
      design engine applies it chunk by chunk as candidates stream through;
    - ``score(candidates) -> float array`` and ``kept_count(n_entered) -> int``: a filter that
      keeps the ``kept_count`` best by ``score`` (higher first); the engine keeps a running
      best set as chunks stream through, never all candidates at once.
    """

    reads: tuple[str, ...]

    def select(self, candidates: Candidates, context: FilterContext) -> Selection: ...


PLUGIN_INTERFACES: dict[str, type] = {
    "mesher": Mesher,
    "simulator": Simulator,
    "encoder": Encoder,
    "surrogate": Surrogate,
    "policy": Policy,
    "filter": Filter,
    "generator": Generator,
}
