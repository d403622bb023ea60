"""PPO over the hybrid design space (Schulman et al. 2017), read top to bottom as CleanRL's
single-file ``ppo_continuous_action.py`` is (Huang et al. 2022): the agent, its action
distribution, then one training loop of rollout, advantages and clipped updates.

The agent (seeds/000 section 7): a shared actor trunk (2 x 256, LayerNorm, ReLU) with a
categorical head for the polymer, one for the coverage pattern and Gaussian means for the four
continuous parameters with learned, state-independent log standard deviations; a separate
critic of the same shape. Unlike the seeds' independent heads, the continuous means are given
per polymer and taken for the polymer drawn: each polymer reaches its own ranges, and designs
outside them are penalised. A continuous action is a latent Gaussian sample squashed by the
logistic function into the unit cube, which the environment maps onto the design space's
bounds (log-scaled where the space says log). The probability ratio uses the latent sample's
density: the squashing's Jacobian is the same for the old and new policy and cancels.

Everything runs on the environment's tensors and device; all randomness comes from seeded
torch generators, so a training on CPU is deterministic and a killed one, resumed from its
last checkpoint, ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hydraopt.design_environment import DesignAction, DesignEnvironment
from hydraopt_plugins.policies import PPOSettings

FORMAT = "hydraopt-ppo/1"
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "policy.safetensors"
METADATA = "policy.json"
TORCH_SEED_RANGE = 2**32  # torch and numpy seeds are 32-bit; hydraopt's derived seeds 63-bit
HIDDEN_GAIN = math.sqrt(2)  # CleanRL: orthogonal init, gain sqrt(2) for ReLU layers
POLICY_HEAD_GAIN = 0.01  # near-uniform initial choices and centred continuous means
VALUE_HEAD_GAIN = 1.0
ADAM_EPSILON = 1e-5  # CleanRL's, steadier than Adam's default 1e-8 for PPO
LOG_STD_BOUNDS = (-5.0, 2.0)  # keeps the Gaussian from collapsing or exploding
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


# ---- the agent ------------------------------------------------------------------------------


def layer(width_in: int, width_out: int, gain: float = HIDDEN_GAIN) -> nn.Linear:
    linear = nn.Linear(width_in, width_out)
    nn.init.orthogonal_(linear.weight, gain)
    nn.init.zeros_(linear.bias)
    return linear


def mlp(width_in: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        layer(width_in, hidden),
        nn.LayerNorm(hidden),
        nn.ReLU(),
        layer(hidden, hidden),
        nn.LayerNorm(hidden),
        nn.ReLU(),
    )


@dataclass(frozen=True)
class HybridDistribution:
    """Independent categorical polymer and coverage choices and a diagonal Gaussian over the
    latent continuous parameters."""

    polymer_log_p: torch.Tensor  # [n, P]
    coverage_log_p: torch.Tensor  # [n, C]
    means: torch.Tensor  # [n, P, 4]: the latent means should each polymer be chosen
    log_std: torch.Tensor  # [4]

    def mean(self, polymer: torch.Tensor) -> torch.Tensor:
        return self.means[torch.arange(len(polymer), device=polymer.device), polymer]

    def sample(self, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        polymer = torch.multinomial(self.polymer_log_p.exp(), 1, generator=generator)[:, 0]
        coverage = torch.multinomial(self.coverage_log_p.exp(), 1, generator=generator)[:, 0]
        mean = self.mean(polymer)
        noise = torch.randn(mean.shape, generator=generator, device=mean.device)
        return polymer, coverage, mean + self.log_std.exp() * noise

    def mode(self) -> tuple[torch.Tensor, ...]:
        polymer = self.polymer_log_p.argmax(-1)
        return polymer, self.coverage_log_p.argmax(-1), self.mean(polymer)

    def log_prob(
        self, polymer: torch.Tensor, coverage: torch.Tensor, latent: torch.Tensor
    ) -> torch.Tensor:
        z = (latent - self.mean(polymer)) * torch.exp(-self.log_std)
        gaussian = (-0.5 * z**2 - self.log_std - LOG_SQRT_2PI).sum(-1)
        return (
            self.polymer_log_p.gather(1, polymer[:, None])[:, 0]
            + self.coverage_log_p.gather(1, coverage[:, None])[:, 0]
            + gaussian
        )

    def entropy(self) -> torch.Tensor:
        categorical = -(self.polymer_log_p.exp() * self.polymer_log_p).sum(-1) - (
            self.coverage_log_p.exp() * self.coverage_log_p
        ).sum(-1)
        gaussian = (0.5 + LOG_SQRT_2PI + self.log_std).sum()
        return categorical + gaussian


class Agent(nn.Module):
    def __init__(
        self,
        observation_dim: int,
        n_polymers: int,
        n_coverages: int,
        n_continuous: int,
        hidden: int,
        initial_log_std: float,
    ) -> None:
        super().__init__()
        self.trunk = mlp(observation_dim, hidden)
        self.polymer_logits = layer(hidden, n_polymers, POLICY_HEAD_GAIN)
        self.coverage_logits = layer(hidden, n_coverages, POLICY_HEAD_GAIN)
        # One mean per polymer: which stiffness, half-life and conductivity a polymer can
        # reach is its own, so the continuous choice is conditioned on the discrete one (the
        # parameterised-action design of Masson et al. 2016 and Fan et al. 2019).
        self.continuous_mean = layer(hidden, n_polymers * n_continuous, POLICY_HEAD_GAIN)
        self.n_polymers, self.n_continuous = n_polymers, n_continuous
        self.continuous_log_std = nn.Parameter(torch.full((n_continuous,), initial_log_std))
        self.critic = nn.Sequential(mlp(observation_dim, hidden), layer(hidden, 1, VALUE_HEAD_GAIN))

    def value(self, observation: torch.Tensor) -> torch.Tensor:
        return self.critic(observation)[:, 0]

    def distribution(self, observation: torch.Tensor) -> HybridDistribution:
        features = self.trunk(observation)
        return HybridDistribution(
            torch.log_softmax(self.polymer_logits(features), -1),
            torch.log_softmax(self.coverage_logits(features), -1),
            self.continuous_mean(features).view(-1, self.n_polymers, self.n_continuous),
            self.continuous_log_std.clamp(*LOG_STD_BOUNDS),
        )


def design_action(polymer: torch.Tensor, coverage: torch.Tensor, latent: torch.Tensor):
    """The environment's action: the latent continuous sample squashed into the unit cube."""
    return DesignAction(polymer, coverage, torch.sigmoid(latent))


# ---- the rollout buffer ---------------------------------------------------------------------


class Rollout:
    """``rollout_steps`` steps of every environment, preallocated on the device."""

    def __init__(self, steps: int, envs: int, observation_dim: int, device: torch.device):
        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros((steps, envs, *shape), dtype=dtype, device=device)

        self.observation = zeros(observation_dim)
        self.polymer = zeros(dtype=torch.long)
        self.coverage = zeros(dtype=torch.long)
        self.latent = zeros(4)
        self.log_prob = zeros()
        self.reward = zeros()
        self.done = zeros()  # 1 where the step ended its episode
        self.value = zeros()
        self.feasible = zeros()

    def advantages(
        self, next_value: torch.Tensor, gamma: float, gae_lambda: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generalised advantage estimation (Schulman et al. 2016). An episode's end is a
        true termination here (the observation counts the steps left), so nothing is
        bootstrapped past it."""
        advantages = torch.zeros_like(self.reward)
        last = torch.zeros_like(next_value)
        steps = self.reward.shape[0]
        for t in reversed(range(steps)):
            following = next_value if t == steps - 1 else self.value[t + 1]
            alive = 1.0 - self.done[t]
            delta = self.reward[t] + gamma * following * alive - self.value[t]
            last = delta + gamma * gae_lambda * alive * last
            advantages[t] = last
        return advantages, advantages + self.value


@dataclass(frozen=True)
class Samples:
    """The rollout flattened to one row per environment step, with its advantages and
    returns: what the clipped updates draw their minibatches from."""

    observation: torch.Tensor
    polymer: torch.Tensor
    coverage: torch.Tensor
    latent: torch.Tensor
    log_prob: torch.Tensor
    advantage: torch.Tensor
    returns: torch.Tensor
    value: torch.Tensor

    @classmethod
    def of(cls, rollout: Rollout, advantages: torch.Tensor, returns: torch.Tensor) -> Samples:
        rows = advantages.numel()
        return cls(
            rollout.observation.reshape(rows, -1),
            rollout.polymer.reshape(rows),
            rollout.coverage.reshape(rows),
            rollout.latent.reshape(rows, -1),
            rollout.log_prob.reshape(rows),
            advantages.reshape(rows),
            returns.reshape(rows),
            rollout.value.reshape(rows),
        )

    def take(self, rows: torch.Tensor | slice) -> Samples:
        """The rows selected by an index tensor (a copy) or a slice (views)."""
        return Samples(*(getattr(self, field.name)[rows] for field in fields(self)))


# ---- the policy plugin ----------------------------------------------------------------------


class PPOPolicy:
    def __init__(self, settings: PPOSettings) -> None:
        self.settings = settings
        self._agent: Agent | None = None
        self._signature: dict[str, Any] = {}
        self._generator: torch.Generator | None = None
        self._seed = 0
        self.history: list[dict[str, float]] = []

    # ---- training -----------------------------------------------------------------------------

    def fit(
        self,
        make_environment: Callable[[int], DesignEnvironment],
        workdir: Path,
        seed: int = 0,
        report: Callable[[str], None] | None = None,
    ) -> Mapping[str, float]:
        s = self.settings
        say = report or (lambda line: None)
        env = make_environment(s.num_envs)
        device = env.device
        batch_size = s.num_envs * s.rollout_steps
        minibatch_size = max(1, batch_size // s.minibatches)
        iterations = max(1, math.ceil(s.episodes * env.episode_steps / batch_size))
        torch_seed = seed % TORCH_SEED_RANGE
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            agent = Agent(
                env.observation_dim,
                env.n_polymers,
                env.n_coverages,
                4,
                s.hidden,
                s.initial_log_std,
            ).to(device)
        # fused: one kernel over all parameters; the networks are small and the per-tensor
        # loop of the default implementation dominated the update.
        parameters = list(agent.parameters())
        optimizer = torch.optim.Adam(parameters, lr=s.learning_rate, eps=ADAM_EPSILON, fused=True)
        generator = torch.Generator(device=device)
        generator.manual_seed(torch_seed)
        observation, _ = env.reset(seed=torch_seed)
        history: list[dict[str, float]] = []
        start = 0
        identity = self._identity(env, seed)
        workdir.mkdir(parents=True, exist_ok=True)
        checkpoint = workdir / CHECKPOINT
        if checkpoint.exists():
            saved = torch.load(checkpoint, weights_only=True, map_location=device)
            if saved["identity"] == identity:
                agent.load_state_dict(saved["agent"])
                optimizer.load_state_dict(saved["optimizer"])
                generator.set_state(saved["generator"].cpu())
                env.load_state_dict(saved["environment"])
                observation = saved["observation"].to(device)
                history = json.loads(saved["history"])
                start = int(saved["iteration"])
                say(f"resumed at update {start}/{iterations}")
        rollout = Rollout(s.rollout_steps, s.num_envs, env.observation_dim, device)
        saved_at = time.perf_counter()

        for iteration in range(start, iterations):
            began = time.perf_counter()
            if s.anneal_learning_rate:
                optimizer.param_groups[0]["lr"] = s.learning_rate * (1 - iteration / iterations)

            # 1. Roll the current policy out in every environment.
            with torch.no_grad():
                for t in range(s.rollout_steps):
                    rollout.observation[t] = observation
                    distribution = agent.distribution(observation)
                    polymer, coverage, latent = distribution.sample(generator)
                    rollout.polymer[t], rollout.coverage[t], rollout.latent[t] = (
                        polymer,
                        coverage,
                        latent,
                    )
                    rollout.log_prob[t] = distribution.log_prob(polymer, coverage, latent)
                    rollout.value[t] = agent.value(observation)
                    observation, reward, terminated, _, info = env.step(
                        design_action(polymer, coverage, latent)
                    )
                    rollout.reward[t] = reward
                    rollout.done[t] = terminated.float()
                    rollout.feasible[t] = info["feasible"].float()
                advantages, returns = rollout.advantages(
                    agent.value(observation), s.gamma, s.gae_lambda
                )

            # 2. Clipped policy updates over minibatches of the flattened rollout, shuffled
            # once per epoch so that each minibatch is a contiguous slice (a view, not a copy).
            samples = Samples.of(rollout, advantages, returns)
            clip_fractions: list[torch.Tensor] = []
            for _ in range(s.update_epochs):
                shuffled = samples.take(
                    torch.randperm(batch_size, generator=generator, device=device)
                )
                for first in range(0, batch_size, minibatch_size):
                    mb = shuffled.take(slice(first, first + minibatch_size))
                    distribution = agent.distribution(mb.observation)
                    new_log_prob = distribution.log_prob(mb.polymer, mb.coverage, mb.latent)
                    entropy = distribution.entropy()
                    new_value = agent.value(mb.observation)
                    log_ratio = new_log_prob - mb.log_prob
                    ratio = log_ratio.exp()
                    with torch.no_grad():
                        approx_kl = ((ratio - 1) - log_ratio).mean()  # Schulman's k3 estimator
                        clip_fractions.append(((ratio - 1.0).abs() > s.clip_coef).float().mean())
                    advantage = mb.advantage
                    if len(advantage) > 1:
                        advantage = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
                    policy_loss = torch.max(
                        -advantage * ratio,
                        -advantage * ratio.clamp(1 - s.clip_coef, 1 + s.clip_coef),
                    ).mean()
                    if s.clip_value_loss:
                        clipped = mb.value + (new_value - mb.value).clamp(-s.clip_coef, s.clip_coef)
                        value_loss = (
                            0.5
                            * torch.max(
                                (new_value - mb.returns) ** 2, (clipped - mb.returns) ** 2
                            ).mean()
                        )
                    else:
                        value_loss = 0.5 * ((new_value - mb.returns) ** 2).mean()
                    entropy_mean = entropy.mean()
                    loss = policy_loss - s.entropy_coef * entropy_mean + s.value_coef * value_loss
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(parameters, s.max_grad_norm)
                    optimizer.step()
                    # kept as tensors: reading a number out after every step would stall
                    latest = (policy_loss, value_loss, entropy_mean, approx_kl)
                if s.target_kl is not None and float(approx_kl) > s.target_kl:
                    break
            stats = dict(
                zip(
                    ("policy_loss", "value_loss", "entropy", "approx_kl"),
                    _numbers(latest),
                    strict=True,
                )
            )

            # 3. Diagnostics, then a checkpoint a killed training resumes from.
            variance = samples.returns.var()
            explained = (
                1 - (samples.returns - samples.value).var() / variance if variance > 0 else 0.0
            )
            entry = {
                "update": iteration + 1,
                "env_steps": (iteration + 1) * batch_size,
                "mean_reward": float(rollout.reward.mean()),
                "best_reward": float(rollout.reward.max()),
                "feasible_share": float(rollout.feasible.mean()),
                **stats,
                "clip_fraction": float(torch.stack(clip_fractions).mean()),
                "explained_variance": float(explained),
                "learning_rate": float(optimizer.param_groups[0]["lr"]),
                "seconds": time.perf_counter() - began,
            }
            history.append(entry)
            last = iteration + 1 == iterations
            if last or time.perf_counter() - saved_at >= s.checkpoint_seconds:
                saved_at = time.perf_counter()
                _save_atomically(
                    {
                        "identity": identity,
                        "agent": agent.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "generator": generator.get_state(),
                        "environment": env.state_dict(),
                        "observation": observation.cpu(),
                        "history": json.dumps(history),
                        "iteration": iteration + 1,
                    },
                    checkpoint,
                )
            say(
                f"update {iteration + 1}/{iterations}: mean reward {entry['mean_reward']:.4f}, "
                f"feasible {entry['feasible_share']:.0%}, approx KL {entry['approx_kl']:.4f}, "
                f"clip fraction {entry['clip_fraction']:.2f}"
            )

        self._agent, self._signature, self.history = agent.eval(), env.signature(), history
        self._seed = torch_seed
        self._generator = None
        return {key: value for key, value in history[-1].items() if key != "update"}

    def _identity(self, env: DesignEnvironment, seed: int) -> str:
        """What the checkpoint must match to be resumed."""
        blob = json.dumps(
            {
                "settings": self.settings.model_dump(mode="json"),
                "env": env.signature(),
                "seed": seed,
            },
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    # ---- acting -------------------------------------------------------------------------------

    def act(self, observations: torch.Tensor, deterministic: bool = False) -> DesignAction:
        """Designs for a batch of observations: the most likely (``deterministic``) or drawn
        from the policy, from a generator seeded by the training seed."""
        if self._agent is None:
            raise RuntimeError("act() before fit() or load()")
        device = observations.device
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self._seed)
        with torch.no_grad():
            distribution = self._agent.distribution(observations)
            choice = distribution.mode() if deterministic else distribution.sample(self._generator)
        return design_action(*choice)

    # ---- persistence --------------------------------------------------------------------------

    def save(self, directory: Path) -> None:
        if self._agent is None:
            raise RuntimeError("save() before fit() or load()")
        state = {k: v.detach().cpu().contiguous() for k, v in self._agent.state_dict().items()}
        save_file(state, str(directory / WEIGHTS))
        meta = {
            "format": FORMAT,
            "settings": self.settings.model_dump(mode="json"),
            "environment": self._signature,
            "seed": self._seed,
            "history": self.history,
        }
        (directory / METADATA).write_text(json.dumps(meta, indent=1, sort_keys=True))

    def load(self, directory: Path, environment: DesignEnvironment) -> None:
        path = directory / METADATA
        try:
            meta = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a saved ppo policy ({exc})") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
        mismatch = _signature_mismatch(meta["environment"], environment.signature())
        if mismatch:
            raise ValueError(f"{path}: trained for another design environment: {mismatch}")
        settings = PPOSettings.model_validate(meta["settings"])
        agent = Agent(
            environment.observation_dim,
            environment.n_polymers,
            environment.n_coverages,
            4,
            settings.hidden,
            settings.initial_log_std,
        )
        agent.load_state_dict(load_file(str(directory / WEIGHTS)))
        self._agent = agent.to(environment.device).eval()
        self._signature, self._seed = meta["environment"], int(meta["seed"])
        self.history, self._generator = meta["history"], None


def _signature_mismatch(trained: Mapping[str, Any], here: Mapping[str, Any]) -> str:
    if trained["psmiles"] != here["psmiles"]:
        return "the polymer library differs (polymers or their order)"
    if trained["coverages"] != here["coverages"]:
        return f"coverage patterns {trained['coverages']}, here {here['coverages']}"
    if trained["observation_dim"] != here["observation_dim"]:
        return (
            f"observation width {trained['observation_dim']}, here {here['observation_dim']} "
            "(environment.patient_encoding differs?)"
        )
    if trained["patient_scaling"] != here["patient_scaling"]:
        return "the training patients' feature scaling differs"
    return ""


def _numbers(tensors: tuple[torch.Tensor, ...]) -> list[float]:
    return [float(t.detach()) for t in tensors]


def _save_atomically(state: dict[str, Any], path: Path) -> None:
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    os.replace(partial, path)
