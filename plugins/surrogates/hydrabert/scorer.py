"""The fitted network's outputs as predictions, and the frozen surrogate as a function on
torch tensors for the agents that call it thousands of times per second (Stage 2).

A regression output's standard deviation combines the heteroscedastic head's predicted
variance with the spread of the MC-dropout means, times the factor calibrated on the
validation patients; a label's probability is the mean of its Platt-scaled draws, and its
spread theirs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from hydraopt.domain import PATIENT_FEATURES, OutputSpec, PolymerInput
from hydraopt.domain.training import DATASET_FEATURE_NAMES
from hydraopt_plugins.surrogates import HeadSettings
from hydraopt_plugins.surrogates.hydrabert.losses import LOG_VARIANCE_BOUND
from hydraopt_plugins.surrogates.hydrabert.network import HydraBertNetwork
from hydraopt_plugins.surrogates.hydrabert.scaling import LOG_FEATURES


def summarise(
    draws: Sequence[Mapping[str, torch.Tensor]],
    heads: Mapping[str, HeadSettings],
    network: HydraBertNetwork,
    meta: Mapping[str, Any],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per output, the predicted mean (a label's probability) and its standard deviation in
    the output's unit, from one or more forward passes (MC-dropout draws)."""
    summary = {}
    for name, head in heads.items():
        stacked = torch.stack([d[name].float() for d in draws])  # [S, B, ...]
        if head.kind == "classification":
            slope, intercept = meta.get("platt", {}).get(name, (1.0, 0.0))
            probability = torch.sigmoid(slope * stacked + intercept)
            summary[name] = (probability.mean(0), _spread(probability))
            continue
        target = meta["targets"][name]
        scale = torch.as_tensor(target["std"], dtype=torch.float32, device=stacked.device)
        centre = torch.as_tensor(target["mean"], dtype=torch.float32, device=stacked.device)
        heteroscedastic = network.heads[name].outputs == 2
        mean = stacked[..., 0] if heteroscedastic else stacked
        variance = _spread(mean) ** 2
        if heteroscedastic:
            log_var = stacked[..., 1].clamp(-LOG_VARIANCE_BOUND, LOG_VARIANCE_BOUND)
            variance = variance + torch.exp(log_var).mean(0)
        calibration = meta.get("std_scale", {}).get(name, 1.0)
        summary[name] = (mean.mean(0) * scale + centre, variance.sqrt() * scale * calibration)
    return summary


def _spread(samples: torch.Tensor) -> torch.Tensor:
    if samples.shape[0] < 2:
        return torch.zeros_like(samples[0])
    return samples.std(0, unbiased=False)


class HydraBertScorer:
    """The fitted network in evaluation mode, dropout off (the heteroscedastic variance and
    the calibration give each prediction its spread), on the surrogate's device, with the
    polymers' embeddings computed once."""

    def __init__(
        self,
        network: HydraBertNetwork,
        heads: Mapping[str, HeadSettings],
        meta: Mapping[str, Any],
        outputs: tuple[OutputSpec, ...],
        polymers: Sequence[PolymerInput],
        embeddings: np.ndarray,
        device: torch.device,
        dtype: torch.dtype | None,
    ) -> None:
        self.outputs = outputs
        self.device = device
        self._network = network.eval()
        self._heads, self._meta, self._dtype = dict(heads), meta, dtype
        # In evaluation mode the adapted polymer embeddings and the category embeddings are
        # fixed: computed once per polymer here, gathered per row in every call.
        with torch.inference_mode():
            embedding = torch.from_numpy(embeddings).to(device)
            category = torch.tensor([p.category_index for p in polymers], device=device)
            adapter = self._network.adapter
            self._smiles = None if adapter is None else adapter(embedding).float()
            self._category = self._network.category(category).float()
        scaler = meta["features"]
        self._mean = torch.tensor(scaler["mean"], dtype=torch.float32, device=device)
        self._std = torch.tensor(scaler["std"], dtype=torch.float32, device=device)
        self._log = torch.tensor(
            [name in LOG_FEATURES for name in DATASET_FEATURE_NAMES], device=device
        )

    def _scaled(self, features: torch.Tensor) -> torch.Tensor:
        logged = torch.where(self._log, torch.log10(features.clamp_min(1e-30)), features)
        return (logged - self._mean) / self._std

    @torch.inference_mode()
    def __call__(
        self,
        features: torch.Tensor,
        polymer_index: torch.Tensor,
        outputs: Collection[str] | None = None,
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Every output's (mean, std), or only those named in ``outputs``: an agent whose
        reward reads two outputs need not run the trajectory head."""
        heads = (
            self._heads
            if outputs is None
            else {n: h for n, h in self._heads.items() if n in outputs}
        )
        context = (
            torch.autocast(self.device.type, dtype=self._dtype) if self._dtype else nullcontext()
        )
        with context:
            polymer = polymer_index.to(self.device)
            out = self._network.from_parts(
                self._scaled(features.to(self.device, torch.float32)),
                None if self._smiles is None else self._smiles[polymer],
                self._category[polymer],
                heads,
            )
        return summarise([out], heads, self._network, self._meta)

    @torch.inference_mode()
    def patient_encoding(self, patient_features: torch.Tensor) -> torch.Tensor:
        """The property encoder's output for the patients with every design feature at its
        training mean (scaled 0): what the surrogate makes of the patient alone."""
        n = len(patient_features)
        scaled = torch.zeros((n, len(DATASET_FEATURE_NAMES)), device=self.device)
        columns = [DATASET_FEATURE_NAMES.index(f.name) for f in PATIENT_FEATURES]
        raw = patient_features.to(self.device, torch.float32)
        scaled[:, columns] = (raw - self._mean[columns]) / self._std[columns]
        return self._network.properties(scaled).float()
