"""Polymer encoders: polyBERT (with LoRA), RDKit Morgan count fingerprints, and none.

Registration only: the settings models and factories live here, and each factory imports its
heavy library (transformers, rdkit) when a pipeline builds the encoder.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from hydraopt import hookimpl
from hydraopt.plugin_types import EncoderPlugin, NoSettings, PluginSettings

POLYBERT_ID = "kuelumbus/polyBERT"
# LoRA on the attention's query, key and value projections and its output projection
# (DeBERTa-v2 module names), as seeds/000 section 3.2 configures it.
LORA_TARGETS = ("query_proj", "key_proj", "value_proj", "attention.output.dense")


class PolyBertSettings(PluginSettings):
    model: str = Field(
        POLYBERT_ID,
        description="Hugging Face id (read from the local Hugging Face cache, never downloaded "
        "at run time) or a local folder holding config.json, the weights and the tokenizer.",
    )
    pooling: Literal["mean", "cls"] = Field(
        "mean",
        description="Fingerprint from the last hidden states: 'mean' over the tokens (how "
        "polyBERT's authors pool) or the first token's state 'cls' (the seeds' choice).",
    )
    lora: bool = Field(
        True, description="Train LoRA adapters with the surrogate (base weights frozen)."
    )
    lora_rank: int = Field(16, ge=1, description="LoRA rank r.")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA scaling alpha (update scale alpha/r).")
    lora_dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA input.")
    lora_targets: list[str] = Field(
        list(LORA_TARGETS),
        min_length=1,
        description="Module names (suffixes) that get LoRA adapters.",
    )
    token_packing: bool = Field(
        True,
        description="Run the encoder's token-wise layers on the batch's tokens laid end to end, "
        "without padding, and pad only inside the attention (DeBERTa-v2 without relative "
        "attention; other models run transformers' padded forward pass).",
    )
    # With token_packing the groups pad only the attention; without it each group is a pass
    # through every layer. Measured on the bundled library's 21 PSMILES (10-107 tokens) on 2
    # CPU cores: benchmarks/RESULTS.md.
    padding_waste: float = Field(
        0.5,
        ge=0,
        description="The attention (every layer, without token_packing) runs the polymers "
        "in groups of similar token length; a group's longest sequence is at most 1 + this "
        "times its shortest, bounding the padding.",
    )


class MorganSettings(PluginSettings):
    radius: int = Field(2, ge=0, le=6, description="Morgan radius (2 is ECFP4-like).")
    fp_size: int = Field(1024, ge=16, le=16384, description="Folded fingerprint length.")


def make_polybert(settings: PolyBertSettings) -> Any:
    from hydraopt_plugins.encoders.polybert import PolyBertEncoder

    return PolyBertEncoder(settings)


def make_morgan(settings: MorganSettings) -> Any:
    from hydraopt_plugins.encoders.morgan import MorganEncoder

    return MorganEncoder(settings)


def module_fingerprints(module: Any, psmiles: Sequence[str]) -> np.ndarray:
    """A trainable encoder module's fingerprints of ``psmiles``, ``float32 [n, dim]``, in
    evaluation mode (no dropout) and without gradients; the module's mode is left as it was."""
    import torch

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return module(psmiles).float().cpu().numpy()
    finally:
        module.train(was_training)


class NoEncoder:
    """No polymer encoder: the surrogate sees only the polymer's category."""

    embedding_dim = 0
    fingerprint = "none"

    def __init__(self, settings: NoSettings) -> None:
        self.settings = settings

    def encode(self, psmiles: Sequence[str]) -> np.ndarray:
        return np.zeros((len(psmiles), 0), dtype=np.float32)

    def trainable_module(self) -> None:
        return None


@hookimpl
def hydraopt_encoders() -> Iterator[EncoderPlugin]:
    yield EncoderPlugin(
        name="polybert",
        factory=make_polybert,
        settings=PolyBertSettings,
        description="polyBERT (DeBERTa-v2) fingerprints of the PSMILES, LoRA-tuned with the "
        "surrogate",
        version="5",
    )
    yield EncoderPlugin(
        name="morgan",
        factory=make_morgan,
        settings=MorganSettings,
        description="RDKit count-based Morgan fingerprint of the repeat unit, offline",
        version="1",
    )
    yield EncoderPlugin(
        name="none",
        factory=NoEncoder,
        settings=NoSettings,
        description="no polymer encoder (the baseline that shows what an encoder is worth)",
        version="1",
    )
