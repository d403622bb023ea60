"""Periodic embeddings of numeric features (Gorishniy, Rubachev & Babenko 2022, "On
embeddings for numerical features in tabular deep learning", NeurIPS; their PLR form).

An MLP fed a scalar fits smooth functions of it first (the spectral bias of Rahaman et al.
2019), and a treatment effect that rises steeply at one end of a design parameter's range is
what gradient boosting's splits fit and an MLP underfits. Each selected feature x (already
standardised) becomes [sin(2 pi c x), cos(2 pi c x)] over k learned frequencies c, initialised
from N(0, sigma^2), then a per-feature linear map and a ReLU. The scaled features themselves
are kept alongside, so the network can still extrapolate linearly in them: a new patient
beyond the training range is the common case here (benchmarks/RESULTS.md). A periodic
function says nothing sound outside the range it was fitted on, so a value beyond the
training split's range enters the embedding clamped to that range, and only the linear path
carries how far beyond it lies. (A guard, not a measured gain: with PEDOT:PSS held out, whose
conductivity reaches 2000 S/m against at most 0.5 S/m for the other polymers, clamping
changed its group's error by nothing measurable; benchmarks/RESULTS.md.)
"""

from __future__ import annotations

import math

import torch
from torch import nn


class PeriodicEmbedding(nn.Module):
    """``[B, F]`` scaled features to ``[B, F + len(columns) * width]``: the features, then the
    periodic embedding of each of ``columns``."""

    def __init__(
        self, n_features: int, columns: list[int], frequencies: int, sigma: float, width: int
    ) -> None:
        super().__init__()
        self.n_features = n_features
        self.register_buffer("columns", torch.tensor(columns, dtype=torch.long))
        n = len(columns)
        self.frequencies = nn.Parameter(torch.randn(n, frequencies) * sigma)
        # nn.Linear's initialisation, one map per feature (PLR rather than PLR-lite: the
        # design parameters act in unlike ways).
        bound = 1.0 / math.sqrt(2 * frequencies)
        self.weight = nn.Parameter(torch.empty(n, 2 * frequencies, width).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n, width).uniform_(-bound, bound))
        # The training split's range of each embedded column (scaled), saved with the weights.
        self.register_buffer("low", torch.full((n,), -math.inf))
        self.register_buffer("high", torch.full((n,), math.inf))

    def fit_range(self, features: torch.Tensor) -> None:
        """Record the range of the embedded columns over the training rows ``features``."""
        selected = features[:, self.columns]
        self.low.copy_(selected.amin(0))
        self.high.copy_(selected.amax(0))

    @property
    def out_features(self) -> int:
        return self.n_features + self.weight.shape[0] * self.weight.shape[2]

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        selected = torch.clamp(features[:, self.columns], self.low, self.high)  # [B, n]
        angle = 2 * math.pi * self.frequencies * selected.unsqueeze(-1)  # [B, n, k]
        periodic = torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)  # [B, n, 2k]
        embedded = torch.relu(torch.einsum("bnk,nkw->bnw", periodic, self.weight) + self.bias)
        return torch.cat([features, embedded.flatten(1)], dim=-1)
