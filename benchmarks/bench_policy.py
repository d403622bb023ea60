"""Stage 2's policy against simpler searches, judged by the simulators; its training time on
the seeds' budget, and against stable-baselines3's PPO on the same environment.

    python benchmarks/bench_policy.py examples/surrogate_seeds_scale.toml [--budget 200]

Needs the pipeline's run up to its train stage (the dataset and the trained surrogate).

1. Training: the configured PPO (``[policy]``, the seeds' 1,000 episodes of 50 designs by
   default) on the training patients, timed; environment steps per second, updates included.
2. stable-baselines3's PPO on the same vectorised environment, its hybrid action relaxed to a
   Box (polymer and coverage binned from two coordinates, the four continuous ones squashed
   as ours are), with the same rollout size, epochs, minibatches, network widths and
   constants; timed. Each trainer runs ``--repeats`` times (3), alternating; medians.
3. Held-out patients (the dataset's validation and test patients: neither the surrogate nor
   the policy trained on them), each method with the same number of surrogate-scored designs
   per patient: the trained policy run on the patient (no per-patient search), random search
   over the design space, and pymoo's mixed-variable genetic algorithm on the surrogate's
   reward. Each method's best design is then simulated with the pipeline's simulators:
   the table compares simulated delta-EF, mean and worst; a figure shows the best reward
   found against surrogate calls.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hydraopt.config import Pipeline, load_pipeline
from hydraopt.design_environment import (
    DesignAction,
    DesignEnvironment,
    DesignReward,
    PatientScaling,
    patient_features,
    scorer_for,
)
from hydraopt.domain import Cohort, DesignBatch, DesignSpace
from hydraopt.domain.training import polymer_inputs
from hydraopt.plugin_calls import call_plugin, checked_mesh, checked_outcomes
from hydraopt.proposals import propose
from hydraopt.registry import PluginRegistry
from hydraopt.stages.designs import stored_space
from hydraopt.store import RunStore
from hydraopt.trained_surrogate import load_trained_surrogate, patient_splits
from hydraopt_plugins.policies import PPOSettings
from hydraopt_plugins.policies.ppo import PPOPolicy
from hydraopt_plugins.surrogates.hydrabert.training import autocast_dtype

FIGURE = Path(__file__).parent / "figures" / "policy_reward_vs_calls.png"
GA_POPULATION = 20
SB3_LABELS = {False: "its DummyVecEnv of single-patient envs", True: "our batched env"}


@dataclass
class Study:
    pipeline: Pipeline
    registry: PluginRegistry
    space: DesignSpace
    cohort: Cohort
    split_of: dict[str, str]
    reward: DesignReward
    scaling: PatientScaling


def load_study(path: Path, precision: str | None = None) -> Study:
    """The run's study; ``precision`` replaces the surrogate's (its reward's) precision."""
    registry = PluginRegistry.discover()
    pipeline = load_pipeline(path, registry)
    config = pipeline.config
    store = RunStore(pipeline.run_dir)
    space = stored_space(store, config)
    assert config.surrogate is not None, "the pipeline needs a [surrogate]"
    surrogate = load_trained_surrogate(
        registry.handle(
            "surrogate", config.surrogate.plugin, pipeline.plugin_settings[("surrogate",)]
        ),
        registry.handle("encoder", config.encoder.plugin, pipeline.plugin_settings[("encoder",)]),
        store.folder("surrogate").path,
    )
    if precision is not None:
        surrogate.settings = surrogate.settings.model_copy(update={"precision": precision})
    cohort = Cohort.from_columns(store.tables("cohort").table("patients"))
    split_of = patient_splits(store.tables("dataset"))
    scorer = scorer_for(surrogate, polymer_inputs(space.polymers))
    reward = DesignReward(space, scorer, config.reward)
    train = patient_features([cohort.get(p) for p in sorted(split_of) if split_of[p] == "train"])
    return Study(pipeline, registry, space, cohort, split_of, reward, PatientScaling.of(train))


def training_patients(study: Study) -> np.ndarray:
    ids = sorted(p for p, split in study.split_of.items() if split == "train")
    return patient_features([study.cohort.get(p) for p in ids])


def ppo_settings(study: Study) -> PPOSettings:
    choice = study.pipeline.config.policy
    settings = choice.settings if choice is not None and choice.plugin == "ppo" else {}
    return PPOSettings.model_validate(settings)


def train_ppo(study: Study, settings: PPOSettings) -> tuple[PPOPolicy, float, int]:
    features = training_patients(study)
    steps = study.pipeline.config.environment.episode_steps

    def make(num_envs: int) -> DesignEnvironment:
        return DesignEnvironment(study.reward, features, num_envs, steps, study.scaling)

    policy = PPOPolicy(settings)
    began = time.perf_counter()
    policy.fit(make, Path(tempfile.mkdtemp()), seed=0)
    seconds = time.perf_counter() - began
    return policy, seconds, policy.history[-1]["env_steps"]


# ---- stable-baselines3 on the same environment --------------------------------------------


def relaxed_action(a: torch.Tensor, n_polymers: int, n_coverages: int) -> DesignAction:
    """A Box action in [-1, 1]^6 as a design: polymer and coverage binned from the first two
    coordinates, the four continuous ones squashed by the logistic function as ours are."""
    share = (a[:, :2].clamp(-1, 1) + 1) / 2
    polymer = (share[:, 0] * n_polymers).long().clamp(max=n_polymers - 1)
    coverage = (share[:, 1] * n_coverages).long().clamp(max=n_coverages - 1)
    return DesignAction(polymer, coverage, torch.sigmoid(a[:, 2:]))


def time_stable_baselines3(
    study: Study, settings: PPOSettings, total_steps: int, batched: bool
) -> float:
    """SB3's PPO, timed. ``batched``: our vectorised environment behind SB3's VecEnv API,
    one surrogate call per step for all environments (the most SB3 can be given); otherwise
    the way SB3 runs a gymnasium environment, ``num_envs`` single-patient copies in its
    DummyVecEnv, stepped one after another, one surrogate call each."""
    import gymnasium
    from gymnasium import spaces
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

    features = training_patients(study)
    episode_steps = study.pipeline.config.environment.episode_steps
    env = DesignEnvironment(study.reward, features, settings.num_envs, episode_steps, study.scaling)
    n_polymers, n_coverages = env.n_polymers, env.n_coverages
    box = spaces.Box(-1.0, 1.0, (6,), np.float32)
    observation_box = spaces.Box(-np.inf, np.inf, (env.observation_dim,), np.float32)

    class SinglePatientEnv(gymnasium.Env):
        """One patient-episode at a time, numpy in and out (gymnasium's Env API)."""

        observation_space = observation_box
        action_space = box

        def __init__(self, index: int) -> None:
            self.inner = DesignEnvironment(study.reward, features, 1, episode_steps, study.scaling)
            self.index = index

        def reset(self, *, seed: int | None = None, options: Any = None) -> Any:
            observation, info = self.inner.reset(seed=self.index if seed is None else seed)
            return observation[0].numpy(), info

        def step(self, action: np.ndarray) -> Any:
            design = relaxed_action(
                torch.as_tensor(action, dtype=torch.float32)[None], n_polymers, n_coverages
            )
            observation, reward, terminated, truncated, _ = self.inner.step(design)
            return (
                observation[0].numpy(),
                float(reward[0]),
                bool(terminated[0]),
                bool(truncated[0]),
                {},
            )

    class RelaxedDesignVecEnv(VecEnv):
        """Our vectorised environment behind SB3's VecEnv API (numpy in and out)."""

        def __init__(self) -> None:
            super().__init__(env.num_envs, observation_box, box)
            self._actions: np.ndarray | None = None

        def reset(self) -> np.ndarray:
            observation, _ = env.reset(seed=0)
            return observation.numpy()

        def step_async(self, actions: np.ndarray) -> None:
            self._actions = actions

        def step_wait(self) -> Any:
            a = torch.as_tensor(self._actions, dtype=torch.float32)
            action = relaxed_action(a, n_polymers, n_coverages)
            observation, reward, terminated, _, _ = env.step(action)
            infos = [{} for _ in range(env.num_envs)]
            return observation.numpy(), reward.numpy(), terminated.numpy(), infos

        def close(self) -> None:
            pass

        def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
            return [getattr(env, attr_name)] * env.num_envs

        def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
            setattr(env, attr_name, value)

        def env_method(self, method_name: str, *args: Any, indices: Any = None, **kw: Any) -> list:
            return [getattr(env, method_name)(*args, **kw)]

        def env_is_wrapped(self, wrapper_class: Any, indices: Any = None) -> list[bool]:
            return [False] * env.num_envs

    batch = settings.num_envs * settings.rollout_steps
    vector = (
        RelaxedDesignVecEnv()
        if batched
        else DummyVecEnv(
            [lambda i=i: SinglePatientEnv(i) for i in range(settings.num_envs)]  # type: ignore[misc]
        )
    )
    model = PPO(
        "MlpPolicy",
        vector,
        learning_rate=settings.learning_rate,
        n_steps=settings.rollout_steps,
        batch_size=max(1, batch // settings.minibatches),
        n_epochs=settings.update_epochs,
        gamma=settings.gamma,
        gae_lambda=settings.gae_lambda,
        clip_range=settings.clip_coef,
        ent_coef=settings.entropy_coef,
        vf_coef=settings.value_coef,
        max_grad_norm=settings.max_grad_norm,
        policy_kwargs={"net_arch": {"pi": [settings.hidden] * 2, "vf": [settings.hidden] * 2}},
        device="cpu",
        seed=0,
        verbose=0,
    )
    began = time.perf_counter()
    model.learn(total_timesteps=total_steps)
    return time.perf_counter() - began


# ---- searches on held-out patients, each with the same surrogate budget --------------------


def random_search(
    reward: DesignReward, patient: np.ndarray, budget: int, seed: int
) -> tuple[DesignBatch, np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    action = DesignAction(
        torch.randint(reward.n_polymers, (budget,), generator=generator),
        torch.randint(reward.n_coverages, (budget,), generator=generator),
        torch.rand((budget, 4), generator=generator),
    )
    features = torch.as_tensor(patient, dtype=torch.float32).expand(budget, -1)
    values = reward(features, action).reward.cpu().numpy()
    best = int(np.argmax(values))
    return reward.designs(action).take(np.array([best])), values


def genetic_algorithm(
    reward: DesignReward, patient: np.ndarray, budget: int, seed: int
) -> tuple[DesignBatch, np.ndarray]:
    from pymoo.core.mixed import MixedVariableGA
    from pymoo.core.problem import Problem
    from pymoo.core.variable import Choice, Real
    from pymoo.optimize import minimize

    seen: list[float] = []

    class DesignProblem(Problem):
        def __init__(self) -> None:
            variables = {
                "polymer": Choice(options=list(range(reward.n_polymers))),
                "coverage": Choice(options=list(range(reward.n_coverages))),
                **{f"u{j}": Real(bounds=(0.0, 1.0)) for j in range(4)},
            }
            super().__init__(vars=variables, n_obj=1, elementwise=False)

        def _evaluate(self, X: Any, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
            action = _action_of(X)
            features = torch.as_tensor(patient, dtype=torch.float32).expand(len(X), -1)
            values = reward(features, action).reward.cpu().numpy().astype(np.float64)
            seen.extend(values[: max(0, budget - len(seen))].tolist())
            out["F"] = -values

    result = minimize(
        DesignProblem(),
        MixedVariableGA(pop_size=GA_POPULATION),
        ("n_evals", budget),
        seed=seed,
        verbose=False,
    )
    return reward.designs(_action_of([result.X])), np.asarray(seen)


def _action_of(rows: Any) -> DesignAction:
    return DesignAction(
        torch.tensor([int(x["polymer"]) for x in rows]),
        torch.tensor([int(x["coverage"]) for x in rows]),
        torch.tensor([[float(x[f"u{j}"]) for j in range(4)] for x in rows], dtype=torch.float32),
    )


def simulated_delta_ef(study: Study, patient_id: str, designs: DesignBatch) -> np.ndarray:
    """delta-EF of each design on the patient, by the pipeline's simulators; NaN for a design
    its polymer cannot make (the simulators flag it)."""
    pipeline, registry = study.pipeline, study.registry
    patient = study.cohort.get(patient_id)
    mesher = registry.handle(
        "mesher", pipeline.config.mesh.plugin, pipeline.plugin_settings[("mesh",)]
    )
    with tempfile.TemporaryDirectory() as scratch:
        mesh = checked_mesh(mesher, call_plugin(mesher, "build", patient, Path(scratch)), patient)
    for name in pipeline.config.simulators:
        simulator = registry.handle(
            "simulator", name, pipeline.plugin_settings[("simulators", name)]
        )
        outputs = simulator.build().outputs
        if not any(spec.name == "delta_ef_pct" for spec in outputs):
            continue
        with tempfile.TemporaryDirectory() as scratch:
            result = call_plugin(simulator, "simulate", patient, mesh, designs, Path(scratch))
        outcomes = checked_outcomes(simulator, result, len(designs), outputs)
        return np.asarray(outcomes["delta_ef_pct"], dtype=float)
    raise SystemExit("no configured simulator outputs delta_ef_pct")


def best_so_far(values: np.ndarray, budget: int) -> np.ndarray:
    curve = np.maximum.accumulate(values[:budget])
    return np.pad(curve, (0, budget - len(curve)), mode="edge")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pipeline", type=Path)
    parser.add_argument("--episodes-per-patient", type=int, default=4)
    parser.add_argument("--sb3-steps", type=int, default=0, help="0: the same budget as ours")
    parser.add_argument("--patients", choices=["held-out", "test"], default="held-out")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each trainer")
    parser.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        help="the surrogate's precision in the reward, for both trainers (default: the "
        "pipeline's; 'auto' is bf16 autocast on a CPU with native bf16)",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    study = load_study(args.pipeline, args.precision)
    settings = ppo_settings(study)
    steps = study.pipeline.config.environment.episode_steps
    print(
        f"torch threads {torch.get_num_threads()}; {len(study.space.polymers)} polymers; "
        f"reward {study.pipeline.config.reward.model_dump(mode='json')}"
    )
    precision = args.precision or study.pipeline.plugin_settings[("surrogate",)].precision
    dtype = autocast_dtype(study.reward.device, precision) or torch.float32
    print(f"surrogate precision {precision}: its matrix products in {dtype}")

    # torch imports its optimizer machinery (torch.distributed.tensor, about 1.3 s) when a
    # process builds its first optimizer: paid once per process, by whichever trainer comes
    # first, so it is paid here, outside both timings.
    torch.optim.Adam(torch.nn.Linear(1, 1).parameters())
    # This machine's timings vary by up to a fifth from one run to the next, so each
    # trainer runs ``--repeats`` times, ours and stable-baselines3's alternating so that
    # both meet the same conditions; medians and the ratio of medians are reported.
    sb3_steps = args.sb3_steps
    ours_seconds: list[float] = []
    theirs_seconds: dict[bool, list[float]] = {False: [], True: []}
    for repeat in range(args.repeats):
        policy, seconds, env_steps = train_ppo(study, settings)
        ours_seconds.append(seconds)
        final = policy.history[-1]
        print(
            f"ppo run {repeat + 1}: {settings.episodes} episodes x {steps} designs = "
            f"{env_steps} environment steps in {seconds:.2f} s ({env_steps / seconds:,.0f} "
            f"steps/s, updates included; {len(policy.history)} updates); final mean reward "
            f"{final['mean_reward']:.4f}, feasible {final['feasible_share']:.0%}"
        )
        sb3_steps = args.sb3_steps or env_steps
        for batched in (False, True):
            theirs_seconds[batched].append(
                time_stable_baselines3(study, settings, sb3_steps, batched)
            )
            print(
                f"  stable-baselines3 PPO on {SB3_LABELS[batched]}: {sb3_steps} steps in "
                f"{theirs_seconds[batched][-1]:.2f} s"
            )
    ours = env_steps / statistics.median(ours_seconds)
    print(
        f"ppo, median of {args.repeats}: {statistics.median(ours_seconds):.2f} s "
        f"(range {min(ours_seconds):.2f}-{max(ours_seconds):.2f}), {ours:,.0f} steps/s"
    )
    for batched in (False, True):
        runs = theirs_seconds[batched]
        theirs = sb3_steps / statistics.median(runs)
        ratios = [
            (env_steps / a) / (sb3_steps / b) for a, b in zip(ours_seconds, runs, strict=True)
        ]
        print(
            f"stable-baselines3 PPO on {SB3_LABELS[batched]}, median of {args.repeats}: "
            f"{theirs:,.0f} steps/s; ours / theirs = {ours / theirs:.1f}x "
            f"(per alternation {min(ratios):.1f}-{max(ratios):.1f}x)"
        )

    wanted = ("test",) if args.patients == "test" else ("validation", "test")
    held_out = sorted(p for p, split in study.split_of.items() if split in wanted)
    budget = args.episodes_per_patient * steps
    features = patient_features([study.cohort.get(p) for p in held_out])
    found = propose(
        policy, study.reward, features, study.scaling, steps, args.episodes_per_patient, 1
    )
    curves: dict[str, list[np.ndarray]] = {
        "ppo policy": [],
        "random search": [],
        "genetic algorithm": [],
    }
    table: dict[str, list[float]] = {name: [] for name in curves}
    best_reward: dict[str, list[float]] = {name: [] for name in curves}
    for i, patient_id in enumerate(held_out):
        by_policy = found[i].designs.take(np.array([0]))
        by_random, random_values = random_search(study.reward, features[i], budget, seed=i)
        by_ga, ga_values = genetic_algorithm(study.reward, features[i], budget, seed=i)
        curves["ppo policy"].append(best_so_far(found[i].visited_reward, budget))
        curves["random search"].append(best_so_far(random_values, budget))
        curves["genetic algorithm"].append(best_so_far(ga_values, budget))
        simulated = simulated_delta_ef(
            study, patient_id, DesignBatch.concat([by_policy, by_random, by_ga])
        )
        for name, value in zip(curves, simulated, strict=True):
            table[name].append(float(value))
            best_reward[name].append(float(curves[name][-1][-1]))
        print(
            f"  {patient_id}: simulated delta-EF policy {simulated[0]:.3f}, random "
            f"{simulated[1]:.3f}, GA {simulated[2]:.3f} %-points"
        )
    print(f"\nheld-out patients: {len(held_out)}; budget {budget} surrogate-scored designs each")
    print(f"{'method':<20} {'mean sim dEF':>13} {'worst sim dEF':>14} {'mean reward':>12}")
    for name in curves:
        values = np.asarray(table[name])
        print(
            f"{name:<20} {np.nanmean(values):>13.4f} {np.nanmin(values):>14.4f} "
            f"{np.mean(best_reward[name]):>12.4f}"
            + (f"  ({int(np.isnan(values).sum())} not makeable)" if np.isnan(values).any() else "")
        )
    _plot(curves, budget)
    print(f"figure: {FIGURE}")


def _plot(curves: dict[str, list[np.ndarray]], budget: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.8))
    calls = np.arange(1, budget + 1)
    for name, per_patient in curves.items():
        axis.plot(calls, np.mean(per_patient, axis=0), label=name)
    axis.set_xlabel("surrogate calls (designs scored) per patient")
    axis.set_ylabel("best reward found (mean over patients)")
    axis.legend()
    figure.tight_layout()
    FIGURE.parent.mkdir(exist_ok=True)
    figure.savefig(FIGURE, dpi=130)
    plt.close(figure)


if __name__ == "__main__":
    main()
