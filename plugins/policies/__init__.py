"""Stage 2 design policies. ``ppo``: proximal policy optimisation (Schulman et al. 2017) over
the hybrid design space, rewarded by the frozen surrogate (seeds/000 section 7).

Registration and settings only; the factory imports torch when a pipeline builds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydantic import Field

from hydraopt import hookimpl
from hydraopt.plugin_types import PluginSettings, PolicyPlugin


class PPOSettings(PluginSettings):
    """PPO's budget, rollout and update. Defaults: the seeds' budget of 1,000 episodes of 50
    designs; CleanRL's update constants (Huang et al. 2022) except the learning rate, the
    discount and the rollout size, chosen for many small updates within that budget
    (docs/policy.md says how)."""

    episodes: int = Field(
        1000, ge=1, description="Training budget in episodes (each environment.episode_steps)."
    )
    num_envs: int = Field(
        128, ge=1, description="Patient-episodes stepped together (one surrogate call)."
    )
    rollout_steps: int = Field(
        8, ge=1, description="Steps of every environment per rollout (one update each)."
    )
    hidden: int = Field(256, ge=1, description="Width of the 2-layer actor trunk and critic.")
    learning_rate: float = Field(3e-3, gt=0, description="Adam learning rate.")
    anneal_learning_rate: bool = Field(
        True, description="Decay the learning rate linearly to 0 over training."
    )
    gamma: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Discount factor. A design's reward is immediate; later steps gain from "
        "it only through what the next observation shows, so a short horizon keeps the "
        "advantages free of the sampling noise of many future designs.",
    )
    gae_lambda: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    update_epochs: int = Field(4, ge=1, description="Passes over each rollout.")
    minibatches: int = Field(4, ge=1, description="Minibatches per pass.")
    clip_coef: float = Field(0.2, gt=0, description="PPO's ratio clip.")
    clip_value_loss: bool = Field(True, description="Clip the value loss as the ratio is.")
    entropy_coef: float = Field(0.01, ge=0, description="Entropy bonus weight.")
    value_coef: float = Field(0.5, ge=0, description="Value loss weight.")
    max_grad_norm: float = Field(0.5, gt=0, description="Largest gradient norm.")
    target_kl: float | None = Field(
        None, gt=0, description="Stop a rollout's update early past this approximate KL."
    )
    checkpoint_seconds: float = Field(
        30.0, ge=0, description="Least time between checkpoints (0: after every update)."
    )
    initial_log_std: float = Field(
        0.0, description="Initial log standard deviation of the continuous actions (pre-sigmoid)."
    )


def make_ppo(settings: PPOSettings) -> Any:
    from hydraopt_plugins.policies.ppo import PPOPolicy

    return PPOPolicy(settings)


@hookimpl
def hydraopt_policies() -> Iterator[PolicyPlugin]:
    yield PolicyPlugin(
        name="ppo",
        factory=make_ppo,
        settings=PPOSettings,
        description="PPO over the hybrid design space (polymer, coverage | E, t50, sigma, "
        "thickness), rewarded by the frozen surrogate",
        version="1",
    )
