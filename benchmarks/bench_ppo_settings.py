"""PPO's settings on a surrogate with a known answer, at the seeds' budget: which rollout
size, number of epochs, discount and learning rate learn most from 1,000 episodes of 50
designs. The problem is the tests' (tests/test_policy.py): each patient's best polymer
depends on its ejection fraction, delta-EF falls with the squared decades from the best
stiffness, and designs a polymer cannot make are penalised.

    python benchmarks/bench_ppo_settings.py

Prints, per setting, the updates, the final rollout's mean reward per design (about 2 at
best) and share of feasible designs, and the training time.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from test_policy import POLYMERS, make_environment

from hydraopt.domain import DesignSpace
from hydraopt.polymer_library import read_polymer_library
from hydraopt_plugins.policies import PPOSettings
from hydraopt_plugins.policies.ppo import PPOPolicy

SEEDS_BUDGET = {"episodes": 1000}
EPISODE_STEPS = 50
VARIANTS = [
    {"num_envs": 32, "rollout_steps": 8, "gamma": 0.99, "learning_rate": 3e-4},
    {"num_envs": 32, "rollout_steps": 8, "gamma": 0.5, "learning_rate": 1e-3},
    {"num_envs": 128, "rollout_steps": 8, "gamma": 0.99, "learning_rate": 3e-3},
    {"num_envs": 128, "rollout_steps": 8, "gamma": 0.5, "learning_rate": 1e-3},
    {"num_envs": 128, "rollout_steps": 8, "gamma": 0.5, "learning_rate": 3e-3},
    {"num_envs": 128, "rollout_steps": 8, "gamma": 0.0, "learning_rate": 3e-3},
]


def main() -> None:
    space = DesignSpace(read_polymer_library(None).subset(POLYMERS))
    print(f"{'setting':<90} {'updates':>7} {'reward':>7} {'feasible':>8} {'seconds':>7}")
    for variant in VARIANTS:
        make, _ = make_environment(space, steps=EPISODE_STEPS)
        policy = PPOPolicy(PPOSettings.model_validate({**SEEDS_BUDGET, **variant}))
        began = time.perf_counter()
        policy.fit(make, Path(tempfile.mkdtemp()), seed=3)
        last = policy.history[-1]
        print(
            f"{variant!s:<90} {len(policy.history):>7} {last['mean_reward']:>7.3f} "
            f"{last['feasible_share']:>8.0%} {time.perf_counter() - began:>7.1f}"
        )


if __name__ == "__main__":
    main()
