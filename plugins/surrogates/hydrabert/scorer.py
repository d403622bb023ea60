"""The fitted network's outputs as predictions, and the frozen surrogate as a function on
torch tensors for the agents that call it thousands of times per second (Stage 2).

A regression output's standard deviation combines the heteroscedastic head's predicted
variance with the spread of the MC-dropout means, times the factor calibrated on the
validation patients; a label's probability is the mean of its Platt-scaled draws, and its
spread theirs. An ensemble's members are draws too: their means' spread is their disagreement.
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
from hydraopt_plugins.surrogates.hydrabert.network import HydraBertNetwork, MlpFusion


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


ROWS_PER_BLOCK = 4096


class HydraBertScorer:
    """The fitted network in evaluation mode, dropout off (the heteroscedastic variance, an
    ensemble's disagreement and the calibration give each prediction its spread), on the
    surrogate's device, with the polymers' embeddings computed once. An ensemble's members
    each score every row, at as many times the cost.

    With the MLP fusion, the fusion's first layer is split by what its inputs depend on: the
    adapted polymer embedding and the category embedding are fixed per polymer, so their
    share of the layer (272 of its 400 input columns, seeds' widths) folds into one bias per
    polymer, and each row multiplies only its 128 property columns. The arithmetic is the
    same up to float rounding; a candidate costs about 1.2 MFLOP instead of 1.5.
    """

    def __init__(
        self,
        networks: Sequence[HydraBertNetwork],
        heads: Mapping[str, HeadSettings],
        meta: Mapping[str, Any],
        outputs: tuple[OutputSpec, ...],
        polymers: Sequence[PolymerInput],
        embeddings: Sequence[np.ndarray],
        device: torch.device,
        dtype: torch.dtype | None,
    ) -> None:
        """``networks``: the ensemble's members (one network, most often); ``embeddings``:
        each member's fingerprints of ``polymers``."""
        self.outputs = outputs
        self.device = device
        self._heads, self._meta, self._dtype = dict(heads), meta, dtype
        category = torch.tensor([p.category_index for p in polymers], device=device)
        self._members = [
            _FrozenMember(network, torch.from_numpy(embedding).to(device), category)
            for network, embedding in zip(networks, embeddings, strict=True)
        ]
        self._network = self._members[0].network
        scaler = meta["features"]
        self._mean = torch.tensor(scaler["mean"], dtype=torch.float32, device=device)
        self._std = torch.tensor(scaler["std"], dtype=torch.float32, device=device)
        self._log = torch.tensor(
            [name in meta["log10_features"] for name in DATASET_FEATURE_NAMES], device=device
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
        reward reads two outputs need not run the trajectory head. On a CPU, rows go through
        in blocks of :data:`ROWS_PER_BLOCK`: the layer norms and GELUs are bound by memory,
        and a block's 512-wide activations (8 MB) stay in cache where a batch of 65,536 rows
        (128 MB) does not (three times the rows per second here)."""
        if self.device.type == "cpu" and len(features) > ROWS_PER_BLOCK:
            blocks = [
                self._block(
                    features[i : i + ROWS_PER_BLOCK], polymer_index[i : i + ROWS_PER_BLOCK], outputs
                )
                for i in range(0, len(features), ROWS_PER_BLOCK)
            ]
            return {
                name: (
                    torch.cat([b[name][0] for b in blocks]),
                    torch.cat([b[name][1] for b in blocks]),
                )
                for name in blocks[0]
            }
        return self._block(features, polymer_index, outputs)

    def _block(
        self,
        features: torch.Tensor,
        polymer_index: torch.Tensor,
        outputs: Collection[str] | None,
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
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
            scaled = self._scaled(features.to(self.device, torch.float32))
            out = [member(scaled, polymer, heads) for member in self._members]
        return summarise(out, heads, self._network, self._meta)

    @torch.inference_mode()
    def patient_encoding(self, patient_features: torch.Tensor) -> torch.Tensor:
        """The property encoder's output for the patients with every design feature at its
        training mean (scaled 0): what the surrogate makes of the patient alone (an
        ensemble's first member: each member encodes in its own coordinates)."""
        n = len(patient_features)
        scaled = torch.zeros((n, len(DATASET_FEATURE_NAMES)), device=self.device)
        columns = [DATASET_FEATURE_NAMES.index(f.name) for f in PATIENT_FEATURES]
        raw = patient_features.to(self.device, torch.float32)
        scaled[:, columns] = (raw - self._mean[columns]) / self._std[columns]
        return self._network.encode_properties(scaled).float()


class _FrozenMember:
    """One network of the scorer, with what is fixed per polymer computed once: in
    evaluation mode the adapted polymer embeddings and the category embeddings, gathered per
    row in every call, and the fold of the fusion's first layer."""

    def __init__(
        self, network: HydraBertNetwork, embedding: torch.Tensor, category: torch.Tensor
    ) -> None:
        self.network = network.eval()
        with torch.inference_mode():
            adapter = network.adapter
            self._smiles = None if adapter is None else adapter(embedding).float()
            self._category = network.category(category).float()
            self._fold = _FoldedFirstLayer.of(network, self._smiles, self._category)

    def __call__(
        self, scaled: torch.Tensor, polymer: torch.Tensor, heads: Mapping[str, HeadSettings]
    ) -> dict[str, torch.Tensor]:
        """The named heads' raw outputs for scaled features and polymer positions."""
        network = self.network
        if self._fold is not None:
            shared = self._fold(network.encode_properties(scaled), polymer)
            return {name: network.heads[name](shared) for name in heads}
        return network.from_parts(
            scaled,
            None if self._smiles is None else self._smiles[polymer],
            self._category[polymer],
            heads,
        )


class _FoldedFirstLayer:
    """The MLP fusion with its first layer's per-polymer share precomputed (see
    :class:`HydraBertScorer`): ``__call__(properties [B, property_dim], polymer [B])`` gives
    the shared representation, equal to ``fusion([smiles, properties, category])``."""

    def __init__(self, bias: torch.Tensor, weight: torch.Tensor, rest: torch.nn.Module) -> None:
        self._bias, self._weight, self._rest = bias, weight, rest

    @classmethod
    def of(
        cls, network: HydraBertNetwork, smiles: torch.Tensor | None, category: torch.Tensor
    ) -> _FoldedFirstLayer | None:
        """The fold of ``network``'s fusion, or None where it does not apply (a transformer
        fusion, task-attention pooling)."""
        if not isinstance(network.fusion, MlpFusion) or network.pooling is not None:
            return None
        first = network.fusion.layers[0]
        width_smiles = 0 if smiles is None else smiles.shape[1]
        width_properties = first.in_features - width_smiles - category.shape[1]
        weight = first.weight.detach()
        bias = first.bias.detach() + category @ weight[:, width_smiles + width_properties :].T
        if smiles is not None:
            bias = bias + smiles @ weight[:, :width_smiles].T
        properties = weight[:, width_smiles : width_smiles + width_properties]
        return cls(bias.contiguous(), properties.contiguous(), network.fusion.layers[1:])

    def __call__(self, properties: torch.Tensor, polymer: torch.Tensor) -> torch.Tensor:
        first = torch.nn.functional.linear(properties, self._weight.to(properties.dtype))
        return self._rest(first + self._bias[polymer].to(first.dtype))
