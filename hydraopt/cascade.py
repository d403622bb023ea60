"""The design engine's cascade: a small network distilled from the surrogate scores every
candidate, and only the best share of them goes on to the full surrogate.

Per patient, a sample of its candidates is scored by the full surrogate; a small MLP learns
that reward from the design alone (the patient is fixed): the four unit coordinates through
one linear layer, plus a learned bias per polymer and coverage pattern (as the full
surrogate's first fusion layer folds its per-polymer share), two hidden layers of 32, one
output. Scoring a candidate costs about 2.4 kFLOP instead of the surrogate's 1.2 MFLOP.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from hydraopt.design_engine import best_positions
from hydraopt.domain import DesignBatch

ROWS_PER_BLOCK = 4096


class DistilledReward(nn.Module):
    """Reward of one patient's designs from polymer, coverage and unit coordinates."""

    def __init__(self, n_polymers: int, n_coverages: int, hidden: int) -> None:
        super().__init__()
        self.n_coverages = n_coverages
        self.choice_bias = nn.Embedding(n_polymers * n_coverages, hidden)
        self.unit = nn.Linear(4, hidden, bias=False)
        self.rest = nn.Sequential(
            nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1)
        )
        self.register_buffer("centre", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, choice: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        return self.rest(self.unit(unit) + self.choice_bias(choice)).squeeze(-1)

    def choice(self, designs: DesignBatch) -> torch.Tensor:
        return torch.as_tensor(designs.polymer_index * self.n_coverages + designs.coverage_index)

    @torch.inference_mode()
    def predict(self, designs: DesignBatch) -> np.ndarray:
        """Predicted reward of each design, in the reward's unit; in blocks of
        :data:`ROWS_PER_BLOCK` rows, whose activations stay in cache."""
        unit = torch.as_tensor(designs.unit_coordinates(), dtype=torch.float32)
        choice = self.choice(designs)
        out = torch.cat(
            [
                self(choice[i : i + ROWS_PER_BLOCK], unit[i : i + ROWS_PER_BLOCK])
                for i in range(0, len(designs), ROWS_PER_BLOCK)
            ]
        )
        return (out * self.scale + self.centre).numpy()


def distil(
    designs: DesignBatch,
    reward: np.ndarray,
    n_coverages: int,
    seed: int,
    hidden: int = 32,
    epochs: int = 10,
    batch_size: int = 2048,
    min_steps: int = 200,
) -> DistilledReward:
    """A :class:`DistilledReward` fitted to ``reward`` (the full surrogate's) on ``designs``
    by mean squared error on the standardised reward (Adam, cosine-decayed rate): ``epochs``
    passes, and more if needed to take ``min_steps`` optimiser steps (a small sample is
    learnt too)."""
    torch.manual_seed(seed)
    model = DistilledReward(len(designs.space.polymers), n_coverages, hidden)
    target = torch.as_tensor(reward, dtype=torch.float32)
    model.centre.fill_(float(target.mean()))
    model.scale.fill_(float(target.std().clamp_min(1e-8)))
    target = (target - model.centre) / model.scale
    batch_size = min(batch_size, len(designs))
    choice = model.choice(designs)
    unit = torch.as_tensor(designs.unit_coordinates(), dtype=torch.float32)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    per_epoch = len(designs) // batch_size
    epochs = max(epochs, -(-min_steps // per_epoch))
    steps = epochs * per_epoch
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(designs), generator=generator)
        for start in range(0, len(designs) - batch_size + 1, batch_size):
            rows = order[start : start + batch_size]
            loss = torch.mean((model(choice[rows], unit[rows]) - target[rows]) ** 2)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    return model.eval()


def best_by_distilled(
    chunks: Iterable[DesignBatch], model: DistilledReward, keep: int
) -> tuple[DesignBatch | None, np.ndarray, int]:
    """The ``keep`` designs of ``chunks`` the distilled model rates best, in arrival order;
    their positions in the stream; how many designs there were. A running best set: the
    newcomers wait until they are as many as it holds, so never more than twice ``keep``
    plus one chunk are held."""
    held: list[tuple[DesignBatch, np.ndarray, np.ndarray]] = []
    held_rows, seen = 0, 0
    for designs in chunks:
        held.append((designs, model.predict(designs), np.arange(seen, seen + len(designs))))
        seen += len(designs)
        held_rows += len(designs)
        if held_rows >= 2 * keep:
            held = [_best_of(held, keep)]
            held_rows = len(held[0][0])
    if not held:
        return None, np.zeros(0, dtype=np.int64), 0
    pool, _, positions = _best_of(held, keep)
    return pool, positions, seen


def _best_of(
    held: list[tuple[DesignBatch, np.ndarray, np.ndarray]], keep: int
) -> tuple[DesignBatch, np.ndarray, np.ndarray]:
    designs = DesignBatch.concat([h[0] for h in held]) if len(held) > 1 else held[0][0]
    score = np.concatenate([h[1] for h in held])
    positions = np.concatenate([h[2] for h in held])
    best = best_positions(score, keep)
    return designs.take(best), score[best], positions[best]


def in_chunks(designs: DesignBatch | None, chunk_size: int) -> Iterator[DesignBatch]:
    if designs is None:
        return
    for start in range(0, len(designs), chunk_size):
        yield designs.take(slice(start, start + chunk_size))
