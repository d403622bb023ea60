"""Stage 2's design environment: patients as episodes, designs as actions, the frozen
surrogate as the judge (seeds/000 section 7).

One slot of the vectorised environment is one patient-episode. At each of its K steps the
agent proposes a whole design for its patient: a polymer and a coverage pattern (discrete) and
stiffness, degradation half-life, conductivity and thickness as unit-cube coordinates, each
mapped onto the design space's bounds on the parameter's own scale (log where the space says
log). The step's reward is what the design is worth to the patient under ``[reward]``; the
next observation shows the agent the design it just proposed and its reward, so a policy can
refine. A design outside its polymer's achievable ranges cannot be made: it is not scored but
penalised, in proportion to how far outside it lies, never clipped into range (as the
simulators flag such designs rather than simulating them).

The whole batch lives on torch tensors on the surrogate's device: one step of thousands of
patient-episodes is one batched surrogate call. Observations, rewards and flags are tensors
(the gymnasium vector API with ``ArrayType = torch.Tensor``); the time left is part of the
observation, so an episode's end is a true termination (no bootstrapping past it), and a slot
starts its next episode in the same step (``AutoresetMode.SAME_STEP``).

Observation, ``float32 [num_envs, observation_dim]``, in this order:
the patient's 11 features standardised by the training patients' mean and spread;
optionally the surrogate's encoding of the patient (``environment.patient_encoding``);
the previous design as polymer one-hot, coverage one-hot and unit coordinates (zeros before
the first); the previous reward and whether that design was feasible; the share of the
episode left.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv

from hydraopt.config import RewardConfig
from hydraopt.domain import (
    CONTINUOUS_FIELDS,
    COVERAGE_PATTERNS,
    FEATURE_NAMES,
    DesignBatch,
    DesignSpace,
    OutputSpec,
    PolymerInput,
    Predictions,
    SurrogateInputs,
)
from hydraopt.domain.training import DATASET_FEATURE_NAMES

SMALLEST_FEATURE_STD = 1e-6  # a feature every training patient shares is centred, not blown up


@dataclass(frozen=True)
class DesignAction:
    """A batch of designs as an agent chooses them.

    :param polymer: ``[n]`` int64, index into the design space's polymers.
    :param coverage: ``[n]`` int64, index into the space's allowed coverage patterns.
    :param unit: ``[n, 4]`` float, each continuous parameter's position in ``[0, 1]`` along
        its scale between the space's bounds.
    """

    polymer: torch.Tensor
    coverage: torch.Tensor
    unit: torch.Tensor


@dataclass(frozen=True)
class ScoredDesigns:
    """What :class:`DesignReward` makes of a batch of designs."""

    reward: torch.Tensor  # [n]
    feasible: torch.Tensor  # [n] bool: inside its polymer's achievable ranges
    predictions: Mapping[str, tuple[torch.Tensor, torch.Tensor]]  # output -> (mean, std)


class PredictScorer:
    """A surrogate without a tensor path, behind the :class:`TensorScorer` interface: each
    call goes through ``predict`` on numpy arrays (slower, same answers)."""

    def __init__(self, surrogate: Any, polymers: tuple[PolymerInput, ...]) -> None:
        self.outputs: tuple[OutputSpec, ...] = tuple(surrogate.outputs)
        self.device = torch.device("cpu")
        self._surrogate, self._polymers = surrogate, polymers

    def __call__(
        self,
        features: torch.Tensor,
        polymer_index: torch.Tensor,
        outputs: Collection[str] | None = None,
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        n = len(features)
        inputs = SurrogateInputs(
            features.detach().cpu().double().numpy(),
            polymer_index.detach().cpu().numpy().astype(np.int64),
            self._polymers,
            np.full(n, "", dtype=object),
        )
        predicted: Predictions = self._surrogate.predict(inputs)
        return {
            spec.name: (
                torch.as_tensor(predicted[spec.name], dtype=torch.float32),
                torch.as_tensor(predicted.std[spec.name], dtype=torch.float32),
            )
            for spec in self.outputs
        }

    def patient_encoding(self, patient_features: torch.Tensor) -> None:
        return None


def scorer_for(surrogate: Any, polymers: tuple[PolymerInput, ...]) -> Any:
    """The surrogate's own tensor scorer over ``polymers``, or its ``predict`` wrapped."""
    make = getattr(surrogate, "tensor_scorer", None)
    return make(polymers) if callable(make) else PredictScorer(surrogate, polymers)


class DesignReward:
    """The reward of designs for patients under ``config``, from ``scorer``'s predictions.

    reward = sum_o w_o * mean_o - sum_o u_o * std_o - sum_limits p * (distance beyond it),
    for a feasible design; - infeasible_penalty * (1 + distance outside its polymer's
    ranges, in unit-cube coordinates) for one its polymer cannot make. ``rows_scored`` counts
    the designs sent to the surrogate (the budget baselines are compared at).
    """

    def __init__(self, space: DesignSpace, scorer: Any, config: RewardConfig) -> None:
        self.space, self.scorer, self.config = space, scorer, config
        self.device = torch.device(scorer.device)
        specs = {spec.name: spec for spec in scorer.outputs}
        for name in sorted(config.outputs()):
            if name not in specs:
                raise ValueError(
                    f"reward: the surrogate predicts no output {name!r} "
                    f"(it predicts: {', '.join(specs)})"
                )
            if specs[name].shape:
                raise ValueError(
                    f"reward: {name!r} is a sequence of shape {specs[name].shape}; the reward "
                    "reads scalar outputs"
                )
        self.rows_scored = 0
        self._read = sorted(config.outputs())  # the outputs a step needs, and no others
        bounds = torch.as_tensor(space.polymer_unit_bounds(), dtype=torch.float32)
        self._polymer_low = bounds[..., 0].to(self.device)
        self._polymer_high = bounds[..., 1].to(self.device)
        # Each parameter is start + unit * span on its own scale (log where the space says).
        log = np.array([p.scale == "log" for p in space.parameters])
        low = np.array([p.low for p in space.parameters])
        high = np.array([p.high for p in space.parameters])
        start = np.where(log, np.log(low), low)
        span = np.where(log, np.log(high), high) - start
        self._log = torch.as_tensor(log, device=self.device)
        self._start = torch.as_tensor(start, dtype=torch.float32, device=self.device)
        self._span = torch.as_tensor(span, dtype=torch.float32, device=self.device)
        self._coverage_global = torch.as_tensor(space.coverage_indices, device=self.device)
        self._patient_columns = [DATASET_FEATURE_NAMES.index(n) for n in FEATURE_NAMES]
        self._design_columns = [DATASET_FEATURE_NAMES.index(n) for n in CONTINUOUS_FIELDS]
        self._coverage_columns = torch.tensor(
            [DATASET_FEATURE_NAMES.index(f"coverage_{c}") for c in COVERAGE_PATTERNS],
            device=self.device,
        )

    @property
    def n_polymers(self) -> int:
        return len(self.space.polymers)

    @property
    def n_coverages(self) -> int:
        return len(self.space.coverages)

    def values(self, unit: torch.Tensor) -> torch.Tensor:
        """Unit-cube coordinates ``[n, 4]`` as parameter values in their units."""
        position = self._start + unit.float() * self._span
        return torch.where(self._log, torch.exp(position), position)

    def features(self, patient_features: torch.Tensor, action: DesignAction) -> torch.Tensor:
        """The surrogate's 19 input features of each (patient, design) row."""
        n = len(action.polymer)
        features = torch.zeros((n, len(DATASET_FEATURE_NAMES)), device=self.device)
        features[:, self._patient_columns] = patient_features.float()
        features[:, self._design_columns] = self.values(action.unit)
        coverage = self._coverage_columns[self._coverage_global[action.coverage]]
        features[torch.arange(n, device=self.device), coverage] = 1.0
        return features

    def distance_outside(self, action: DesignAction) -> torch.Tensor:
        """How far each design lies outside its polymer's achievable ranges, in unit-cube
        coordinates summed over the parameters (0 inside)."""
        low = self._polymer_low[action.polymer]
        high = self._polymer_high[action.polymer]
        unit = action.unit.float()
        # A polymer whose range misses the space's bounds (low > high) is outside everywhere.
        return (torch.relu(low - unit) + torch.relu(unit - high)).sum(-1)

    def __call__(
        self,
        patient_features: torch.Tensor,
        action: DesignAction,
        also: Collection[str] = (),
    ) -> ScoredDesigns:
        """The designs' rewards, from the outputs the reward reads and those named in
        ``also`` (which the design engine's filters read)."""
        predictions = self.scorer(
            self.features(patient_features, action),
            action.polymer,
            sorted({*self._read, *also}),
        )
        self.rows_scored += len(action.polymer)
        return self.score(predictions, action)

    def score(
        self, predictions: Mapping[str, tuple[torch.Tensor, torch.Tensor]], action: DesignAction
    ) -> ScoredDesigns:
        """The reward of designs whose outputs are predicted (mean, std) as given."""
        config = self.config
        reward = torch.zeros(len(action.polymer), device=self.device)
        for name, weight in config.weights.items():
            reward = reward + weight * predictions[name][0].float()
        for name, weight in config.uncertainty.items():
            reward = reward - weight * predictions[name][1].float()
        for limit in config.limits:
            mean = predictions[limit.output][0].float()
            if limit.max is not None:
                reward = reward - limit.penalty * torch.relu(mean - limit.max)
            if limit.min is not None:
                reward = reward - limit.penalty * torch.relu(limit.min - mean)
        outside = self.distance_outside(action)
        feasible = outside <= 1e-6
        penalty = -config.infeasible_penalty * (1.0 + outside)
        return ScoredDesigns(torch.where(feasible, reward, penalty), feasible, predictions)

    def designs(self, action: DesignAction) -> DesignBatch:
        """The designs as a :class:`DesignBatch` (numpy), for storage and simulation."""
        unit = action.unit.detach().cpu().double().numpy()
        return self.space.designs_from_unit(
            action.polymer.detach().cpu().numpy(), action.coverage.detach().cpu().numpy(), unit
        )

    def action_of(self, designs: DesignBatch) -> DesignAction:
        """The inverse of :meth:`designs` (coverage patterns must be allowed by the space)."""
        position = np.full(len(COVERAGE_PATTERNS), -1, dtype=np.int64)
        position[self.space.coverage_indices] = np.arange(len(self.space.coverage_indices))
        coverage = position[designs.coverage_index]
        if (coverage < 0).any():
            raise ValueError("a design's coverage pattern is not one the design space allows")
        return DesignAction(
            torch.as_tensor(designs.polymer_index, device=self.device),
            torch.as_tensor(coverage, device=self.device),
            torch.as_tensor(designs.unit_coordinates(), dtype=torch.float32, device=self.device),
        )


@dataclass(frozen=True)
class PatientScaling:
    """The training patients' feature means and spreads: every observation is standardised
    by them, for training and held-out patients alike."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> PatientScaling:
        std = features.std(axis=0)
        return cls(features.mean(axis=0), np.where(std > SMALLEST_FEATURE_STD, std, 1.0))

    def to_json(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_json(cls, data: Mapping[str, list[float]]) -> PatientScaling:
        return cls(np.asarray(data["mean"]), np.asarray(data["std"]))


class DesignEnvironment(VectorEnv):
    """``num_envs`` patient-episodes of ``episode_steps`` designs each (see the module
    docstring). ``patients`` are the 11 features of the patients episodes draw from (uniformly,
    seeded), or ``reset(options={"patients": index})`` pins each slot to one patient."""

    metadata: ClassVar[dict[str, Any]] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(
        self,
        reward: DesignReward,
        patients: np.ndarray,
        num_envs: int,
        episode_steps: int,
        scaling: PatientScaling,
        patient_encoding: bool = False,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        if len(patients) == 0:
            raise ValueError("the environment needs at least one patient")
        self.reward_function = reward
        self.device = reward.device
        self.num_envs = num_envs
        self.episode_steps = episode_steps
        self.scaling = scaling
        self.patients = torch.as_tensor(patients, dtype=torch.float32, device=self.device)
        observed = (
            torch.as_tensor(patients, dtype=torch.float32)
            - torch.as_tensor(scaling.mean, dtype=torch.float32)
        ) / torch.as_tensor(scaling.std, dtype=torch.float32)
        encoding = reward.scorer.patient_encoding(self.patients) if patient_encoding else None
        if patient_encoding and encoding is None:
            raise ValueError(
                "environment.patient_encoding: this surrogate offers no encoding of patients"
            )
        if encoding is not None:
            observed = torch.cat([observed.to(self.device), encoding.float()], dim=1)
        self._patient_observation = observed.to(self.device)
        self.n_polymers, self.n_coverages = reward.n_polymers, reward.n_coverages
        self.observation_dim = self._patient_observation.shape[1] + (
            self.n_polymers + self.n_coverages + len(CONTINUOUS_FIELDS) + 3
        )
        self.single_observation_space = spaces.Box(
            -np.inf, np.inf, (self.observation_dim,), np.float32
        )
        self.single_action_space = spaces.Dict(
            {
                "polymer": spaces.Discrete(self.n_polymers),
                "coverage": spaces.Discrete(self.n_coverages),
                "unit": spaces.Box(0.0, 1.0, (len(CONTINUOUS_FIELDS),), np.float32),
            }
        )
        self.observation_space = spaces.Box(
            -np.inf, np.inf, (num_envs, self.observation_dim), np.float32
        )
        self.action_space = spaces.Dict(
            {
                "polymer": spaces.MultiDiscrete([self.n_polymers] * num_envs),
                "coverage": spaces.MultiDiscrete([self.n_coverages] * num_envs),
                "unit": spaces.Box(0.0, 1.0, (num_envs, len(CONTINUOUS_FIELDS)), np.float32),
            }
        )
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(0)
        self._pinned: torch.Tensor | None = None
        self.patient_index = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self.step_index = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self._previous = torch.zeros(
            (num_envs, self.observation_dim - self._patient_observation.shape[1] - 1),
            device=self.device,
        )

    # ---- gymnasium API ----------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if seed is not None:
            self._generator.manual_seed(seed)
        pinned = (options or {}).get("patients")
        self._pinned = None
        if pinned is not None:
            pinned = torch.as_tensor(pinned, dtype=torch.long, device=self.device)
            if pinned.shape != (self.num_envs,):
                raise ValueError(
                    f"options['patients'] must give one patient per slot ({self.num_envs})"
                )
            self._pinned = pinned
        self._start_episodes(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        return self._observation(), {}

    def step(
        self, actions: DesignAction | Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        action = self._as_action(actions)
        scored = self.reward_function(self.patients[self.patient_index], action)
        previous = self._previous
        previous.zero_()
        n = torch.arange(self.num_envs, device=self.device)
        previous[n, action.polymer] = 1.0
        previous[n, self.n_polymers + action.coverage] = 1.0
        start = self.n_polymers + self.n_coverages
        previous[:, start : start + len(CONTINUOUS_FIELDS)] = action.unit.float()
        previous[:, start + len(CONTINUOUS_FIELDS)] = scored.reward
        previous[:, start + len(CONTINUOUS_FIELDS) + 1] = scored.feasible.float()
        self.step_index += 1
        terminated = self.step_index >= self.episode_steps
        info = {"feasible": scored.feasible, "patient_index": self.patient_index.clone()}
        if bool(terminated.any()):
            self._start_episodes(terminated)
        truncated = torch.zeros_like(terminated)
        return self._observation(), scored.reward, terminated, truncated, info

    # ---- checkpoints ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed training needs to continue the same episodes."""
        return {
            "generator": self._generator.get_state(),
            "patient_index": self.patient_index.cpu(),
            "step_index": self.step_index.cpu(),
            "previous": self._previous.cpu(),
            "pinned": None if self._pinned is None else self._pinned.cpu(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._generator.set_state(state["generator"])
        self.patient_index = state["patient_index"].to(self.device)
        self.step_index = state["step_index"].to(self.device)
        self._previous = state["previous"].to(self.device)
        pinned = state["pinned"]
        self._pinned = None if pinned is None else pinned.to(self.device)

    def signature(self) -> dict[str, Any]:
        """What a policy trained here depends on: the observation's layout and the action
        space's choices (the library by PSMILES, the coverage patterns)."""
        return {
            "observation_dim": self.observation_dim,
            "psmiles": [p.psmiles for p in self.reward_function.space.polymers],
            "coverages": list(self.reward_function.space.coverages),
            "patient_scaling": self.scaling.to_json(),
        }

    # ---- internals --------------------------------------------------------------------------

    def _start_episodes(self, slots: torch.Tensor) -> None:
        count = int(slots.sum())
        if self._pinned is not None:
            chosen = self._pinned[slots]
        else:
            chosen = torch.randint(len(self.patients), (count,), generator=self._generator).to(
                self.device
            )
        self.patient_index[slots] = chosen
        self.step_index[slots] = 0
        self._previous[slots] = 0.0

    def _observation(self) -> torch.Tensor:
        left = 1.0 - self.step_index.float() / self.episode_steps
        return torch.cat(
            [self._patient_observation[self.patient_index], self._previous, left[:, None]], dim=1
        )

    def _as_action(self, actions: DesignAction | Mapping[str, Any]) -> DesignAction:
        if isinstance(actions, DesignAction):
            return actions
        return DesignAction(
            torch.as_tensor(actions["polymer"], dtype=torch.long, device=self.device),
            torch.as_tensor(actions["coverage"], dtype=torch.long, device=self.device),
            torch.as_tensor(actions["unit"], dtype=torch.float32, device=self.device),
        )


def patient_features(patients: Any) -> np.ndarray:
    """The 11 features of each patient, ``[n, 11]`` float64."""
    return np.stack([p.features() for p in patients]) if len(patients) else np.zeros((0, 11))
