"""HYDRA-BERT's network (seeds/000 sections 3-6, seeds/001 section 4).

polymer embedding -> SMILES adapter (E -> 384 -> 256, LayerNorm + GELU)
19 features       -> property encoder (19 -> 64 -> 128)
category          -> embedding (9 x 16)
concatenated (400) -> fusion (MLP 400 -> 512 -> 512, or a transformer over the three
modality tokens, mean-pooled or pooled per task by attention) -> one head per declared output.

With no polymer encoder (embedding width 0) the adapter is left out and the fusion sees 144.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
from torch import nn

from hydraopt.domain import DEFAULT_PARAMETERS, PATIENT_FEATURES, POLYMER_CATEGORIES
from hydraopt.domain.training import DATASET_FEATURE_NAMES
from hydraopt_plugins.lane_dropout import use_lane_dropout
from hydraopt_plugins.surrogates import HeadSettings, HydraBertSettings
from hydraopt_plugins.surrogates.hydrabert.numeric_embedding import PeriodicEmbedding


def _block(width_in: int, width_out: int, dropout: float) -> list[nn.Module]:
    return [nn.Linear(width_in, width_out), nn.LayerNorm(width_out), nn.GELU(), nn.Dropout(dropout)]


class MlpFusion(nn.Module):
    """seeds/000 section 5.2: two Linear + LayerNorm + GELU + Dropout blocks."""

    def __init__(self, widths: list[int], settings: HydraBertSettings) -> None:
        super().__init__()
        d = settings.fusion_dim
        self.layers = nn.Sequential(
            *_block(sum(widths), d, settings.dropout), *_block(d, d, settings.dropout)
        )

    def forward(self, parts: list[torch.Tensor]) -> torch.Tensor:
        return self.layers(torch.cat(parts, dim=-1))


class TransformerFusion(nn.Module):
    """seeds/001 section 4.2.5, with one token per modality (SMILES, properties, category):
    over the seeds' single token, attention would reduce to a linear map."""

    def __init__(self, widths: list[int], settings: HydraBertSettings) -> None:
        super().__init__()
        d = settings.fusion_dim
        self.projections = nn.ModuleList(nn.Linear(w, d) for w in widths)
        layer = nn.TransformerEncoderLayer(
            d_model=d,
            nhead=settings.fusion_heads,
            dim_feedforward=4 * d,
            dropout=settings.dropout,
            activation="gelu",
            batch_first=True,
        )
        self.transformer = nn.TransformerEncoder(
            layer, settings.fusion_layers, enable_nested_tensor=False
        )
        self.norm = nn.LayerNorm(d)

    def forward(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The fused tokens, ``[B, modalities, d]``."""
        tokens = torch.stack([p(x) for p, x in zip(self.projections, parts, strict=True)], 1)
        return self.norm(self.transformer(tokens))


class TaskAttentionPooling(nn.Module):
    """seeds/002's task-attention pooling: each head's learned query attends over the fused
    tokens, so every task weighs the modalities its own way."""

    def __init__(self, tasks: list[str], width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.tasks = tasks
        self.queries = nn.Parameter(torch.randn(len(tasks), width) / width**0.5)
        self.attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        queries = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        pooled, _ = self.attention(queries, tokens, tokens, need_weights=False)
        return {task: pooled[:, k] for k, task in enumerate(self.tasks)}


class Head(nn.Module):
    """An MLP from the shared representation: per row, one logit (classification), a mean and
    optionally a log-variance (regression), or those at each of ``steps`` times (sequence,
    through a GRU that reads the representation and the time)."""

    def __init__(self, settings: HeadSettings, width: int, steps: int, dropout: float) -> None:
        super().__init__()
        self.kind = settings.kind
        self.steps = steps
        self.outputs = 2 if settings.heteroscedastic and settings.kind != "classification" else 1
        layers: list[nn.Module] = []
        for hidden in settings.hidden:
            layers += _block(width, hidden, dropout)
            width = hidden
        self.trunk = nn.Sequential(*layers)
        if settings.kind == "sequence":
            self.rnn = nn.GRU(width + 1, width, batch_first=True)
            self.register_buffer("times", torch.linspace(0.0, 1.0, steps))
        self.out = nn.Linear(width, self.outputs)

    def forward(self, shared: torch.Tensor) -> torch.Tensor:
        h = self.trunk(shared)
        if self.kind == "sequence":
            times = self.times.to(h.dtype).expand(h.shape[0], self.steps).unsqueeze(-1)
            h, _ = self.rnn(torch.cat([h.unsqueeze(1).expand(-1, self.steps, -1), times], -1))
        out = self.out(h)
        return out.squeeze(-1) if self.outputs == 1 else out


def _periodic_embedding(settings: HydraBertSettings, n_features: int) -> PeriodicEmbedding:
    names = [p.name for p in DEFAULT_PARAMETERS]
    if settings.periodic_features == "all":
        names += [f.name for f in PATIENT_FEATURES]
    columns = sorted(DATASET_FEATURE_NAMES.index(name) for name in names)
    return PeriodicEmbedding(
        n_features,
        columns,
        settings.periodic_frequencies,
        settings.periodic_sigma,
        settings.periodic_width,
    )


class HydraBertNetwork(nn.Module):
    """Everything after the polymer encoder."""

    def __init__(
        self,
        settings: HydraBertSettings,
        n_features: int,
        embedding_dim: int,
        steps: Mapping[str, int],
    ) -> None:
        super().__init__()
        p = settings.dropout
        self.adapter = (
            nn.Sequential(
                *_block(embedding_dim, settings.adapter_hidden, p),
                nn.Linear(settings.adapter_hidden, settings.smiles_dim),
                nn.LayerNorm(settings.smiles_dim),
                nn.GELU(),
            )
            if embedding_dim
            else None
        )
        self.numeric_embedding = (
            _periodic_embedding(settings, n_features)
            if settings.feature_embedding == "periodic"
            else None
        )
        property_in = (
            n_features if self.numeric_embedding is None else self.numeric_embedding.out_features
        )
        self.properties = nn.Sequential(
            *_block(property_in, settings.property_hidden, p),
            nn.Linear(settings.property_hidden, settings.property_dim),
            nn.LayerNorm(settings.property_dim),
            nn.GELU(),
        )
        self.category = nn.Embedding(len(POLYMER_CATEGORIES), settings.category_dim)
        widths = [settings.property_dim, settings.category_dim]
        if embedding_dim:
            widths.insert(0, settings.smiles_dim)
        fusion = TransformerFusion if settings.fusion == "transformer" else MlpFusion
        self.fusion = fusion(widths, settings)
        self.pooling = (
            TaskAttentionPooling(
                list(settings.heads), settings.fusion_dim, settings.fusion_heads, p
            )
            if settings.pooling == "task-attention"
            else None
        )
        self.heads = nn.ModuleDict(
            {
                name: Head(head, settings.fusion_dim, steps.get(name, 1), p)
                for name, head in settings.heads.items()
            }
        )
        # Training masks drawn cheaply (a quarter of a CPU step otherwise); evaluation and MC
        # dropout's sampled networks (mc_dropout.py) are unchanged.
        use_lane_dropout(self)

    def forward(
        self,
        features: torch.Tensor,
        polymer_embedding: torch.Tensor,
        polymer: torch.Tensor,
        category: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """``features [B, 19]`` (scaled), ``polymer_embedding [P, E]`` of the batch's P
        polymers, ``polymer [B]`` each row's polymer in it, ``category [B]``. The adapter runs
        once per polymer (P is a few dozen, B thousands), its dropout shared by the polymer's
        rows in the batch."""
        smiles = None if self.adapter is None else self.adapter(polymer_embedding)[polymer]
        return self.from_parts(features, smiles, self.category(category))

    def encode_properties(self, features: torch.Tensor) -> torch.Tensor:
        """The property encoder's output ``[B, property_dim]`` from the scaled ``features``."""
        if self.numeric_embedding is not None:
            features = self.numeric_embedding(features)
        return self.properties(features)

    def from_parts(
        self,
        features: torch.Tensor,
        smiles: torch.Tensor | None,
        category: torch.Tensor,
        heads: Collection[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The outputs of ``heads`` (all by default) from the scaled ``features [B, 19]``,
        each row's adapted polymer embedding ``smiles [B, smiles_dim]`` (None without an
        encoder) and its category embedding ``category [B, category_dim]``: what a frozen
        model may compute once per polymer and reuse."""
        wanted = {n: h for n, h in self.heads.items() if heads is None or n in heads}
        parts = [self.encode_properties(features), category]
        if smiles is not None:
            parts.insert(0, smiles)
        fused = self.fusion(parts)
        if self.pooling is not None:
            pooled = self.pooling(fused)
            return {name: head(pooled[name]) for name, head in wanted.items()}
        shared = fused.mean(dim=1) if fused.dim() == 3 else fused
        return {name: head(shared) for name, head in wanted.items()}
