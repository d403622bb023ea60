"""Stage 2's design environment and the PPO policy, on a surrogate with a known answer: the
environment keeps the gymnasium contract and scores designs as ``[reward]`` says, penalising
designs a polymer cannot make; PPO learns which polymer and stiffness suit which patient and
proposes them for patients it never saw; training is seeded, resumes after a kill as if never
stopped, and a saved policy refuses another design environment."""

import numpy as np
import pytest
import torch

from hydraopt.config import RewardConfig
from hydraopt.design_environment import (
    DesignAction,
    DesignEnvironment,
    DesignReward,
    PatientScaling,
)
from hydraopt.domain import DesignSpace, OutputSpec
from hydraopt.domain.training import DATASET_FEATURE_NAMES
from hydraopt.polymer_library import read_polymer_library
from hydraopt_plugins.policies import PPOSettings

POLYMERS = ["gelma-lowdom", "alginate-ik5001", "chitosan-gp", "fibrin"]
LVEF = DATASET_FEATURE_NAMES.index("lvef_pct")
STIFFNESS = DATASET_FEATURE_NAMES.index("stiffness_kpa")
BEST_LOG10_STIFFNESS = 0.5  # 3.2 kPa: inside gelma-lowdom's, alginate's and fibrin's ranges
NOISE_STD = 0.1


class KnownScorer:
    """delta-EF is 2 for the patient's polymer (gelma-lowdom below an EF of 35%,
    alginate-ik5001 above), minus the squared decades from the best stiffness; is_optimal
    follows it; a trajectory output the reward cannot read."""

    outputs = (
        OutputSpec("delta_ef_pct", "%-points", "change in EF"),
        OutputSpec("is_optimal", "1", "label"),
        OutputSpec("delta_ef_trajectory_pct", "%-points", "trajectory", (2,)),
    )
    device = torch.device("cpu")

    def __call__(self, features, polymer_index, outputs=None):
        best = torch.where(features[:, LVEF] < 35.0, 0, 1)
        hit = (polymer_index == best).float()
        delta_ef = 2.0 * hit - (torch.log10(features[:, STIFFNESS]) - BEST_LOG10_STIFFNESS) ** 2
        std = torch.full_like(delta_ef, NOISE_STD)
        probability = torch.sigmoid(4 * (delta_ef - 1.0))
        trajectory = torch.stack([0.5 * delta_ef, delta_ef], dim=1)
        return {
            "delta_ef_pct": (delta_ef, std),
            "is_optimal": (probability, torch.zeros_like(probability)),
            "delta_ef_trajectory_pct": (trajectory, torch.zeros_like(trajectory)),
        }

    def patient_encoding(self, patient_features):
        return None


def patients(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    features = rng.uniform(0.9, 1.1, (n, 11)) * np.array(
        [35, -12, 200, 130, 20, 10, 30, 20, 1.5, 0.6, 9]
    )
    features[:, 0] = rng.uniform(20, 50, n)  # LVEF, which decides the patient's polymer
    return features


@pytest.fixture(scope="module")
def space():
    return DesignSpace(read_polymer_library(None).subset(POLYMERS))


def reward_of(space, **config) -> DesignReward:
    return DesignReward(space, KnownScorer(), RewardConfig.model_validate(config))


def environment(space, num_envs=8, steps=5, seed_patients=0, **reward) -> DesignEnvironment:
    features = patients(40, seed_patients)
    return DesignEnvironment(
        reward_of(space, **reward), features, num_envs, steps, PatientScaling.of(features)
    )


def action(polymer, coverage, unit) -> DesignAction:
    return DesignAction(
        torch.tensor(polymer), torch.tensor(coverage), torch.tensor(unit, dtype=torch.float32)
    )


def test_the_environment_keeps_the_gymnasium_vector_contract(space):
    env = environment(space, num_envs=8, steps=3)
    observation, _ = env.reset(seed=1)
    assert observation.shape == (8, env.observation_dim) == env.observation_space.shape
    assert env.single_action_space.contains(env.single_action_space.sample())
    assert env.observation_dim == 11 + len(POLYMERS) + 4 + 4 + 3
    assert torch.all(observation[:, -1] == 1.0)  # the whole episode is left
    patient_at_start = env.patient_index.clone()
    sampled = env.action_space.sample()
    for step in range(3):
        observation, reward, terminated, truncated, _ = env.step(sampled)
        assert reward.shape == terminated.shape == (8,) and not truncated.any()
        assert terminated.all() == (step == 2)
    # same-step autoreset: the returned observation opens each slot's next episode
    assert torch.all(observation[:, -1] == 1.0)
    assert not torch.equal(env.patient_index, patient_at_start)
    env.reset(seed=1)
    assert torch.equal(env.patient_index, patient_at_start)  # seeded draws of patients
    env.reset(options={"patients": np.arange(8)})
    assert torch.equal(env.patient_index, torch.arange(8))


def test_the_next_observation_shows_the_design_just_proposed_and_its_reward(space):
    env = environment(space, num_envs=2, steps=4)
    env.reset(seed=0)
    unit = [[0.3, 0.5, 0.5, 0.2], [0.6, 0.5, 0.5, 0.9]]
    observation, reward, *_ = env.step(action([1, 3], [0, 2], unit))
    previous = observation[:, 11:]
    assert torch.equal(previous[:, : len(POLYMERS)].argmax(1), torch.tensor([1, 3]))
    assert torch.equal(previous[:, 4:8].argmax(1), torch.tensor([0, 2]))
    assert torch.allclose(previous[:, 8:12], torch.tensor(unit))
    assert torch.allclose(previous[:, 12], reward)
    assert torch.allclose(observation[:, -1], torch.tensor(0.75))


def test_rewards_are_the_declared_sum_and_unmakeable_designs_are_penalised_not_clipped(space):
    reward = reward_of(
        space,
        weights={"delta_ef_pct": 1.0, "is_optimal": 0.5},
        uncertainty={"delta_ef_pct": 2.0},
        limits=[{"output": "delta_ef_pct", "max": 1.5, "penalty": 3.0}],
        infeasible_penalty=4.0,
    )
    stiffness = space.parameter("stiffness_kpa")
    inside = float(stiffness.to_unit(np.array(10**BEST_LOG10_STIFFNESS)))
    t50 = float(space.parameter("t50_days").to_unit(np.array(10.0)))  # gelma-lowdom: 3-21 d
    sigma = float(space.parameter("conductivity_s_per_m").to_unit(np.array(0.01)))
    too_stiff = float(stiffness.to_unit(np.array(20.0)))  # gelma-lowdom makes 0.5-10 kPa
    designs = action([0, 0], [0, 0], [[inside, t50, sigma, 0.5], [too_stiff, t50, sigma, 0.5]])
    lvef_low = torch.tensor(patients(1, 0), dtype=torch.float32).expand(2, -1).clone()
    lvef_low[:, 0] = 30.0  # gelma-lowdom is this patient's polymer
    scored = reward(lvef_low, designs)
    assert scored.feasible.tolist() == [True, False]
    delta_ef = 2.0
    expected = delta_ef + 0.5 / (1 + np.exp(-4.0)) - 2.0 * NOISE_STD - 3.0 * (delta_ef - 1.5)
    assert float(scored.reward[0]) == pytest.approx(expected, rel=1e-5)
    high = float(stiffness.to_unit(np.array(10.0)))
    assert float(scored.reward[1]) == pytest.approx(-4.0 * (1 + too_stiff - high), rel=1e-5)
    assert reward.designs(designs).stiffness_kpa[1] == pytest.approx(20.0)  # not clipped
    assert reward.rows_scored == 2


def test_a_reward_the_surrogate_cannot_give_is_refused(space):
    with pytest.raises(ValueError, match="predicts no output 'qrs_ms'"):
        reward_of(space, weights={"qrs_ms": 1.0})
    with pytest.raises(ValueError, match="sequence"):
        reward_of(space, weights={"delta_ef_trajectory_pct": 1.0})
    with pytest.raises(ValueError, match="every weight is zero"):
        RewardConfig.model_validate({"weights": {"delta_ef_pct": 0.0}})


def ppo(**changes):
    from hydraopt_plugins.policies.ppo import PPOPolicy

    base = {"episodes": 1500, "num_envs": 16, "rollout_steps": 5, "hidden": 64}
    return PPOPolicy(PPOSettings.model_validate({**base, **changes}))


def make_environment(space, steps=10):
    features = patients(40, 0)
    scaling = PatientScaling.of(features)
    reward = reward_of(space)
    return lambda n: DesignEnvironment(reward, features, n, steps, scaling), scaling


@pytest.fixture(scope="module")
def trained(space, tmp_path_factory):
    make, scaling = make_environment(space)
    policy = ppo()
    policy.fit(make, tmp_path_factory.mktemp("ppo"), seed=3)
    return policy, scaling


def test_ppo_learns_each_patients_polymer_and_stiffness_for_patients_it_never_saw(space, trained):
    from hydraopt.proposals import propose

    policy, scaling = trained
    history = policy.history
    assert history[-1]["mean_reward"] > history[0]["mean_reward"] + 1.0
    for key in ("approx_kl", "clip_fraction", "entropy", "explained_variance"):
        assert np.isfinite(history[-1][key])
    unseen = patients(12, 99)
    reward = reward_of(space)
    found = propose(policy, reward, unseen, scaling, 10, 2, 5)
    best_polymer = np.where(unseen[:, 0] < 35.0, 0, 1)
    right, decades = [], []
    for proposals, polymer in zip(found, best_polymer, strict=True):
        assert proposals.feasible[0]
        assert np.all(np.diff(proposals.reward[proposals.feasible]) <= 0)  # best first
        right.append(proposals.designs.polymer_index[0] == polymer)
        decades.append(abs(np.log10(proposals.designs.stiffness_kpa[0]) - BEST_LOG10_STIFFNESS))
    # patients near the EF threshold are the hard ones; random choice would be right for 1 in 4
    assert np.mean(right) >= 0.75, right
    assert np.mean(decades) < 0.3, decades
    assert reward.rows_scored == 12 * 2 * 10


def test_training_is_seeded_and_a_killed_training_resumes_as_if_never_stopped(space, tmp_path):
    make, _ = make_environment(space, steps=5)
    settings = {"episodes": 40, "num_envs": 8, "rollout_steps": 5, "checkpoint_seconds": 0}
    whole = ppo(**settings)
    whole.fit(make, tmp_path / "whole", seed=11)

    class Killed(Exception):
        pass

    def kill_after_two(line):
        if line.startswith("update 2/"):
            raise Killed

    interrupted = ppo(**settings)
    with pytest.raises(Killed):
        interrupted.fit(make, tmp_path / "killed", seed=11, report=kill_after_two)
    resumed = ppo(**settings)
    lines = []
    resumed.fit(make, tmp_path / "killed", seed=11, report=lines.append)
    assert lines[0] == "resumed at update 2/5"
    for (name, a), (_, b) in zip(
        whole._agent.state_dict().items(), resumed._agent.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert whole.history[-1]["mean_reward"] == resumed.history[-1]["mean_reward"]


def test_a_saved_policy_acts_the_same_and_refuses_another_environment(space, trained, tmp_path):
    policy, scaling = trained
    policy.save(tmp_path)
    env = DesignEnvironment(reward_of(space), patients(40, 0), 6, 10, scaling)
    observation, _ = env.reset(seed=4)
    loaded = ppo()
    loaded.load(tmp_path, env)
    mine, theirs = policy.act(observation, True), loaded.act(observation, True)
    assert torch.equal(mine.polymer, theirs.polymer)
    assert torch.allclose(mine.unit, theirs.unit)
    other = DesignSpace(read_polymer_library(None).subset([*POLYMERS[:3], "matrigel"]))
    elsewhere = DesignEnvironment(reward_of(other), patients(40, 0), 6, 10, scaling)
    with pytest.raises(ValueError, match="polymer library differs"):
        ppo().load(tmp_path, elsewhere)
