"""Stage 1 surrogates. ``hydrabert``: HYDRA-BERT's polymer encoder fused with patient, tissue,
hydrogel and treatment features, with multi-task heads declared in pipeline.toml.

Registration and settings only; the factory imports torch when a pipeline builds it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, model_validator

from hydraopt import hookimpl
from hydraopt.plugin_types import PluginSettings, SurrogatePlugin


class HeadSettings(PluginSettings):
    """One prediction head; its key in ``heads`` is the dataset output it predicts."""

    kind: Literal["regression", "classification", "sequence"] = Field(
        "regression",
        description="'regression' for a scalar output, 'classification' for a 0/1 label "
        "(is_optimal), 'sequence' for a trajectory output (one value per follow-up time).",
    )
    loss: Literal["huber", "mse", "focal", "bce"] = Field(
        "mse",
        description="'huber' (smooth L1) or 'mse' for regression and sequence heads; "
        "'focal' or 'bce' (cross-entropy) for classification.",
    )
    huber_beta: float = Field(
        2.0, gt=0, description="Huber transition, in the output's own unit (seeds: 2 %-points)."
    )
    focal_gamma: float = Field(2.0, ge=0, description="Focal-loss focusing exponent gamma.")
    weight: float = Field(1.0, gt=0, description="Fixed weight of the task (auxiliary: < 1).")
    hidden: list[int] = Field([128], description="Hidden layer widths of the head's MLP.")
    heteroscedastic: bool = Field(
        True,
        description="Regression and sequence heads predict a mean and a log-variance per row "
        "and train on the Gaussian negative log-likelihood (Huber-tailed with loss='huber').",
    )
    nll_beta: float = Field(
        1.0,
        ge=0,
        le=1,
        description="beta of the beta-NLL (Seitzer et al. 2022) of a heteroscedastic head: 1 "
        "fits the means as the head's loss does and the variance beside them; below 1 a row "
        "weighs less the larger its predicted variance (0: the plain NLL). Below 1 the "
        "largest treatment effects, which a network fits worst, were capped "
        "(docs/surrogate.md).",
    )

    @model_validator(mode="after")
    def _loss_fits_kind(self) -> HeadSettings:
        classification = self.kind == "classification"
        if classification != (self.loss in ("focal", "bce")):
            allowed = "'focal' or 'bce'" if classification else "'huber' or 'mse'"
            raise ValueError(f"a {self.kind} head takes loss {allowed}, not {self.loss!r}")
        return self


def _seeds_heads() -> dict[str, HeadSettings]:
    """seeds/001 section 4.2.6 and 5: the two primary heads and the auxiliary stress head."""
    return {
        "delta_ef_pct": HeadSettings(kind="regression", loss="huber", hidden=[256, 64]),
        "is_optimal": HeadSettings(kind="classification", loss="focal", hidden=[128]),
        "bz_stress_reduction_pct": HeadSettings(
            kind="regression", loss="mse", weight=0.3, hidden=[128]
        ),
    }


class HydraBertSettings(PluginSettings):
    heads: dict[str, HeadSettings] = Field(
        default_factory=_seeds_heads,
        min_length=1,
        description="Prediction heads by the dataset output they predict (is_optimal: the "
        "dataset's label); the seeds' delta_ef_pct, is_optimal and bz_stress_reduction_pct "
        "by default.",
    )
    fusion: Literal["mlp", "transformer"] = Field(
        "mlp",
        description="'mlp': seeds/000's 400 -> 512 -> 512; 'transformer': seeds/001's fusion "
        "transformer over the three modality tokens.",
    )
    pooling: Literal["mean", "task-attention"] = Field(
        "mean",
        description="Transformer fusion: 'mean' of the modality tokens for every head, or "
        "'task-attention' (seeds/002), a learned query per head attending over the tokens.",
    )
    fusion_dim: int = Field(512, ge=8, description="Width of the shared representation.")
    fusion_layers: int = Field(4, ge=1, description="Transformer fusion: encoder layers.")
    fusion_heads: int = Field(8, ge=1, description="Transformer fusion: attention heads.")
    smiles_dim: int = Field(256, ge=1, description="SMILES adapter output width.")
    adapter_hidden: int = Field(384, ge=1, description="SMILES adapter hidden width.")
    design_scale: Literal["linear", "log"] = Field(
        "linear",
        description="How stiffness, degradation half-life and conductivity enter the property "
        "encoder before standardisation: 'linear' as they are, or 'log' as log10 (they span "
        "decades). Linear fitted the reference physics' treatment effects better "
        "(benchmarks/RESULTS.md).",
    )
    feature_embedding: Literal["none", "periodic"] = Field(
        "none",
        description="'periodic': the chosen numeric features also enter as learned periodic "
        "embeddings (Gorishniy et al. 2022), so the property encoder can fit effects that "
        "change steeply within a feature's range; 'none': as scaled numbers only.",
    )
    periodic_features: Literal["design", "all"] = Field(
        "design",
        description="With feature_embedding = 'periodic': 'design' embeds the four continuous "
        "design parameters (stiffness, half-life, conductivity, thickness), 'all' the 11 "
        "patient features as well.",
    )
    periodic_frequencies: int = Field(
        16, ge=1, description="With feature_embedding = 'periodic': frequencies per feature."
    )
    periodic_sigma: float = Field(
        0.3,
        gt=0,
        description="With feature_embedding = 'periodic': standard deviation of the initial "
        "frequencies, in cycles per standard deviation of the feature (0.3 kept the polymer "
        "encoder's gain on held-out polymers that 1 lost: benchmarks/RESULTS.md).",
    )
    periodic_width: int = Field(
        16, ge=1, description="With feature_embedding = 'periodic': embedding width per feature."
    )
    property_hidden: int = Field(64, ge=1, description="Property encoder hidden width.")
    property_dim: int = Field(128, ge=1, description="Property encoder output width.")
    category_dim: int = Field(16, ge=1, description="Polymer category embedding width.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout (also drives MC dropout).")
    task_weighting: Literal["uncertainty", "fixed"] = Field(
        "uncertainty",
        description="'uncertainty': learnable homoscedastic weights (Kendall et al. 2018) "
        "times each head's weight; 'fixed': each head's weight only.",
    )
    epochs: int = Field(15, ge=1, description="Most epochs to train.")
    batch_size: int = Field(8192, ge=1, description="Rows per optimiser step.")
    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate of the surrogate.")
    encoder_learning_rate: float = Field(
        1e-4, gt=0, description="AdamW learning rate of the encoder's trainable part (LoRA)."
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_epochs: float = Field(
        1.0, ge=0, description="Linear warm-up length, then cosine decay to zero."
    )
    gradient_clip: float = Field(1.0, gt=0, description="Largest gradient norm.")
    weight_average_epochs: float = Field(
        0.0,
        ge=0,
        description=(
            "Keep an exponential moving average of the weights over about this many epochs, "
            "and judge, choose and save the average instead of the last weights (0: off)."
        ),
    )
    ensemble_members: int = Field(
        1,
        ge=1,
        description=(
            "Networks trained alike, each from its own seed (the training's seed + 0, 1, "
            "...); predictions average them and their disagreement joins the uncertainty "
            "(a deep ensemble)."
        ),
    )
    patience: int = Field(
        3, ge=1, description="Stop after this many epochs without a better validation loss."
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto",
        description="'auto': fp16 autocast on a GPU without bf16, bf16 on a GPU or CPU with "
        "native bf16, else fp32.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto' takes a GPU when there is one."
    )
    calibration_level: float = Field(
        0.9,
        gt=0.0,
        lt=1.0,
        description="Central probability at which each regression output's standard "
        "deviation is calibrated on the validation patients: the normal interval mean ± "
        "z·std at this level holds this share of their targets.",
    )
    mc_samples: int = Field(
        10,
        ge=1,
        description="Dropout samples per prediction (MC dropout); 1 turns MC dropout off.",
    )
    predict_batch_size: int = Field(65536, ge=1, description="Rows per prediction batch.")
    threads: int = Field(0, ge=0, description="CPU threads for torch; 0 keeps torch's choice.")

    def model_post_init(self, context: Any) -> None:
        if self.pooling == "task-attention" and self.fusion != "transformer":
            raise ValueError("pooling = 'task-attention' needs fusion = 'transformer'")
        if self.fusion == "transformer" and self.fusion_dim % self.fusion_heads:
            raise ValueError(
                f"fusion_dim ({self.fusion_dim}) must be a multiple of fusion_heads "
                f"({self.fusion_heads})"
            )


def make_hydrabert(settings: HydraBertSettings) -> Any:
    from hydraopt_plugins.surrogates.hydrabert.surrogate import HydraBertSurrogate

    return HydraBertSurrogate(settings)


@hookimpl
def hydraopt_surrogates() -> Iterator[SurrogatePlugin]:
    yield SurrogatePlugin(
        name="hydrabert",
        factory=make_hydrabert,
        settings=HydraBertSettings,
        description="HYDRA-BERT: polymer encoder + property and category encoders, fusion, "
        "multi-task heads with uncertainty",
        version="9",
    )
