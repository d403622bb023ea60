"""Stage ``policy``: Stage 2. A design policy learns, on the dataset's training patients, to
propose designs that the frozen surrogate rewards (``[reward]``); it then proposes, for every
patient of the cohort, its best designs, by running on that patient alone. The design engine
takes them as extra candidates.

Before anything trains, the surrogate is checked against the study: every polymer of the
library must be one it was trained on, and the design space must lie within the ranges of its
training rows, or the policy would learn from the surrogate's extrapolations.

Artifacts: ``policy`` (the trained policy's folder, its ``history.csv`` and
``training_curve.png``) and ``proposals`` (table ``designs``: per patient its proposed designs,
best first, with their reward and predicted outputs). The training keeps a checkpoint in the
stage's work folder after every update, so a killed run resumes there.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from hydraopt.config import Pipeline, PipelineConfig
from hydraopt.domain import CONTINUOUS_FIELDS, COVERAGE_PATTERNS, Cohort
from hydraopt.domain.training import polymer_inputs
from hydraopt.errors import DataError
from hydraopt.registry import PluginRegistry
from hydraopt.seeding import derive_seed
from hydraopt.stages.base import Stage, StageContext
from hydraopt.stages.designs import load_space
from hydraopt.trained_surrogate import domain_problems, load_trained_surrogate, patient_splits


def _run(context: StageContext) -> None:
    from hydraopt.design_environment import (
        DesignEnvironment,
        DesignReward,
        PatientScaling,
        patient_features,
        scorer_for,
    )
    from hydraopt.proposals import propose

    config = context.config
    say = context.reporter.say
    cohort = Cohort.from_columns(context.store.tables("cohort").table("patients"))
    split_of = patient_splits(context.store.tables("dataset"))
    train_ids = sorted(pid for pid, split in split_of.items() if split == "train")
    if not train_ids:
        raise DataError("policy: the dataset has no training patients to learn from")
    space = load_space(context)
    surrogate = load_trained_surrogate(
        context.plugin(("surrogate",)),
        context.plugin(("encoder",)),
        context.store.folder("surrogate").path,
    )
    problems = domain_problems(surrogate, space)
    if problems:
        raise DataError(
            "policy: the trained surrogate does not cover this study's design space:\n  "
            + "\n  ".join(problems)
        )
    try:
        scorer = scorer_for(surrogate, polymer_inputs(space.polymers))
        reward = DesignReward(space, scorer, config.reward)
    except ValueError as exc:
        raise DataError(f"{context.pipeline.path}: {exc}") from None
    train_features = patient_features([cohort.get(pid) for pid in train_ids])
    scaling = PatientScaling.of(train_features)
    environment = config.environment

    def make_environment(num_envs: int) -> DesignEnvironment:
        return DesignEnvironment(
            reward,
            train_features,
            num_envs,
            environment.episode_steps,
            scaling,
            environment.patient_encoding,
        )

    assert config.policy is not None  # the stage is enabled by it
    policy = context.plugin(("policy",)).build_new()
    workdir = context.store.work_dir("policy") / "training"
    workdir.mkdir(parents=True, exist_ok=True)
    seed = derive_seed(config.study.seed, "policy", "training")
    say(
        f"  {config.policy.plugin}: {len(train_ids)} training patients, "
        f"{len(space.polymers)} polymers, {environment.episode_steps} designs per episode"
    )
    diagnostics = policy.fit(make_environment, workdir, seed, lambda line: say(f"    {line}"))
    scored_in_training = reward.rows_scored

    folder = context.scratch_dir() / "policy"
    shutil.rmtree(folder, ignore_errors=True)  # what a killed run left
    folder.mkdir()
    policy.save(folder)
    history = list(getattr(policy, "history", []))
    _write_history(folder, history)
    context.write_folder(
        "policy",
        folder,
        meta={
            "policy": config.policy.plugin,
            "training_patients": train_ids,
            "surrogate_rows_scored": scored_in_training,
            "final": dict(diagnostics),
        },
    )

    everyone = list(cohort)
    found = propose(
        policy,
        reward,
        patient_features(everyone),
        scaling,
        environment.episode_steps,
        config.proposals.episodes,
        config.proposals.per_patient,
        environment.patient_encoding,
    )
    table = _proposals_table(everyone, found, reward, split_of)
    context.write_tables(
        "proposals",
        {"designs": table},
        meta={
            "per_patient": config.proposals.per_patient,
            "surrogate_rows_per_patient": config.proposals.episodes * environment.episode_steps,
            "reward": config.reward.model_dump(mode="json"),
        },
    )
    for line in _summary(table):
        say("  " + line)


def _proposals_table(
    patients: list[Any], found: list[Any], reward: Any, split_of: dict[str, str]
) -> dict[str, np.ndarray]:
    """One row per proposed design, each patient's best first, with the surrogate's
    prediction of every scalar output."""
    import torch

    columns: dict[str, list[np.ndarray]] = {}
    names = reward.space.polymers.names
    for patient, proposals in zip(patients, found, strict=True):
        designs = proposals.designs
        n = len(designs)
        action = reward.action_of(designs)
        features = torch.as_tensor(patient.features(), dtype=torch.float32, device=reward.device)
        predicted = reward.scorer(reward.features(features.expand(n, -1), action), action.polymer)
        block = {
            "patient_id": np.full(n, patient.patient_id, dtype=object),
            "split": np.full(n, split_of.get(patient.patient_id, ""), dtype=object),
            "rank": np.arange(1, n + 1),
            "polymer": np.array([names[i] for i in designs.polymer_index], dtype=object),
            "polymer_index": designs.polymer_index,
            "coverage": np.array(
                [COVERAGE_PATTERNS[i] for i in designs.coverage_index], dtype=object
            ),
            "coverage_index": designs.coverage_index,
            **{name: getattr(designs, name) for name in CONTINUOUS_FIELDS},
            "reward": proposals.reward.astype(np.float64),
            "feasible": proposals.feasible.astype(bool),
        }
        for spec in reward.scorer.outputs:
            if spec.shape:
                continue
            mean, std = predicted[spec.name]
            block[f"predicted_{spec.name}"] = mean.cpu().numpy().astype(np.float64)
            block[f"predicted_{spec.name}_std"] = std.cpu().numpy().astype(np.float64)
        for key, value in block.items():
            columns.setdefault(key, []).append(np.asarray(value))
    return {key: np.concatenate(parts) for key, parts in columns.items()}


def _summary(table: dict[str, np.ndarray]) -> list[str]:
    """The mean reward of each patient's best proposal, by split."""
    best = table["rank"] == 1
    lines = []
    for split in ("train", "validation", "test", ""):
        mine = best & (table["split"] == split)
        if mine.any():
            label = split or "not in the dataset"
            lines.append(
                f"best proposal, {label} patients ({int(mine.sum())}): mean reward "
                f"{table['reward'][mine].mean():.4f}, feasible {table['feasible'][mine].mean():.0%}"
            )
    return lines


def _write_history(folder: Path, history: list[dict[str, Any]]) -> None:
    if not history:
        return
    with (folder / "history.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["env_steps"] for h in history]
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    axes[0].plot(steps, [h["mean_reward"] for h in history], label="mean")
    axes[0].plot(steps, [h["best_reward"] for h in history], label="best")
    axes[0].set_xlabel("environment steps (surrogate-scored designs)")
    axes[0].set_ylabel("reward per design")
    axes[0].legend()
    if "approx_kl" in history[0]:
        axes[1].plot(steps, [h["approx_kl"] for h in history], label="approx KL")
        axes[1].plot(steps, [h.get("clip_fraction", 0.0) for h in history], label="clip fraction")
        axes[1].set_xlabel("environment steps")
        axes[1].legend()
    figure.tight_layout()
    figure.savefig(folder / "training_curve.png", dpi=120)
    plt.close(figure)


def _preflight(pipeline: Pipeline, registry: PluginRegistry) -> list[str]:
    """The reward's outputs against the surrogate's heads, and a library of two polymers at
    least, before anything runs."""
    config = pipeline.config
    if config.policy is None:
        return []
    problems = []
    heads = getattr(pipeline.plugin_settings.get(("surrogate",)), "heads", None)
    if heads is not None:
        for name in sorted(config.reward.outputs()):
            if name not in heads:
                problems.append(
                    f"{pipeline.path}: reward: no surrogate head predicts {name!r} "
                    f"(heads: {', '.join(heads)})"
                )
    try:
        from hydraopt.inputs import load_library

        count = len(load_library(pipeline))
        if count < 2:
            problems.append(
                f"{pipeline.path}: polymers: the library holds {count} polymer(s); the policy "
                "stage needs at least two to choose between"
            )
    except DataError:  # reported by validation
        pass
    return problems


def _depends_on(config: PipelineConfig) -> Any:
    return {
        "reward": config.reward.model_dump(mode="json"),
        "environment": config.environment.model_dump(mode="json"),
        "proposals": config.proposals.model_dump(mode="json"),
    }


STAGE = Stage(
    name="policy",
    version="1",
    sections=("policy",),
    description="learn a design policy on the training patients, propose designs per patient",
    inputs=("cohort", "polymers", "dataset", "surrogate"),
    outputs={"policy": "folder", "proposals": "tables"},
    enabled=lambda config: config.policy is not None and config.surrogate is not None,
    depends_on=_depends_on,
    plugins=lambda config: [("policy",), ("surrogate",), ("encoder",)],
    run=_run,
    preflight=_preflight,
)
