"""A trained policy's proposals: each patient's best designs, found by running the policy on
that patient alone (no per-patient search or training). The first episode acts
deterministically (the most likely design at every step), the others sample; every design
they visit is scored once by the surrogate, and the best distinct feasible ones are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hydraopt.design_environment import (
    DesignAction,
    DesignEnvironment,
    DesignReward,
    PatientScaling,
)
from hydraopt.domain import DesignBatch
from hydraopt.plugin_types import Policy

PATIENTS_PER_BATCH = 4096  # patient-episodes stepped together when proposing


@dataclass(frozen=True)
class Proposals:
    """One patient's proposed designs, best first, with their rewards."""

    designs: DesignBatch
    reward: np.ndarray
    feasible: np.ndarray
    visited_reward: np.ndarray  # every scored design's reward, in the order visited


def propose(
    policy: Policy,
    reward: DesignReward,
    patients: np.ndarray,
    scaling: PatientScaling,
    episode_steps: int,
    episodes: int,
    per_patient: int,
    patient_encoding: bool = False,
) -> list[Proposals]:
    """Per patient (rows of ``patients``, 11 features each), up to ``per_patient`` designs;
    ``episodes * episode_steps`` surrogate-scored designs per patient."""
    out: list[Proposals] = []
    for first in range(0, len(patients), PATIENTS_PER_BATCH):
        chunk = patients[first : first + PATIENTS_PER_BATCH]
        env = DesignEnvironment(reward, chunk, len(chunk), episode_steps, scaling, patient_encoding)
        observation, _ = env.reset(options={"patients": np.arange(len(chunk))})
        polymers, coverages, units, rewards, feasibles = [], [], [], [], []
        for episode in range(episodes):
            for _ in range(episode_steps):
                action: DesignAction = policy.act(observation, deterministic=episode == 0)
                observation, step_reward, _, _, info = env.step(action)
                polymers.append(action.polymer)
                coverages.append(action.coverage)
                units.append(action.unit)
                rewards.append(step_reward)
                feasibles.append(info["feasible"])
        visited = DesignAction(
            torch.stack(polymers), torch.stack(coverages), torch.stack(units)
        )  # [steps, patients, ...]
        reward_table = torch.stack(rewards).cpu().numpy()
        feasible_table = torch.stack(feasibles).cpu().numpy()
        for slot in range(len(chunk)):
            out.append(_best(reward, visited, reward_table, feasible_table, slot, per_patient))
    return out


def _best(
    reward: DesignReward,
    visited: DesignAction,
    reward_table: np.ndarray,
    feasible_table: np.ndarray,
    slot: int,
    per_patient: int,
) -> Proposals:
    """The slot's best distinct designs: feasible ones first, then by reward."""
    action = DesignAction(
        visited.polymer[:, slot], visited.coverage[:, slot], visited.unit[:, slot]
    )
    designs = reward.designs(action)
    key = np.column_stack(
        [designs.polymer_index, designs.coverage_index, designs.unit_coordinates()]
    )
    _, first_seen = np.unique(key, axis=0, return_index=True)
    values, feasible = reward_table[:, slot], feasible_table[:, slot].astype(bool)
    order = first_seen[np.lexsort((-values[first_seen], ~feasible[first_seen]))][:per_patient]
    return Proposals(designs.take(order), values[order], feasible[order], values.copy())
