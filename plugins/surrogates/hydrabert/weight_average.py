"""An exponential moving average of the trainable weights (averaged iterates: Polyak &
Juditsky 1992; the exponential form in deep learning: Morales-Brotons et al. 2024, TMLR).

Each optimiser step moves the average towards the current weights by 1/horizon, or by 1/n
over the first n < horizon steps, so that it starts as the plain mean of the weights so far
and the random initial weights are not carried. Only trainable parameters are averaged: a
frozen polyBERT base never changes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, horizon_steps: float) -> None:
        if horizon_steps < 1:
            raise ValueError(f"a weight average over {horizon_steps} steps: at least one is needed")
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.averaged = [p.detach().clone() for p in self.params]
        self.horizon_steps = horizon_steps
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        """Fold the current weights in; call after each optimiser step."""
        self.updates += 1
        weight = max(1.0 / self.horizon_steps, 1.0 / self.updates)
        for param, averaged in zip(self.params, self.averaged, strict=True):
            averaged.lerp_(param.detach(), weight)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own again after it."""
        self._swap()
        try:
            yield
        finally:
            self._swap()

    @torch.no_grad()
    def _swap(self) -> None:
        for param, averaged in zip(self.params, self.averaged, strict=True):
            current = param.detach().clone()
            param.copy_(averaged)
            averaged.copy_(current)

    def state_dict(self) -> dict[str, Any]:
        return {"averaged": [a.detach().cpu() for a in self.averaged], "updates": self.updates}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        for averaged, saved in zip(self.averaged, state["averaged"], strict=True):
            averaged.copy_(saved)
        self.updates = int(state["updates"])
