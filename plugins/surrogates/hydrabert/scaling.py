"""Scaling of the features and targets, fitted on the training split and saved with the model.

Features: the design parameters that span decades (stiffness, half-life, conductivity) enter
as they are (``design_scale = "linear"``, the default) or as log10 (``"log"``), then every
feature is standardised. On the seeds-scale dataset's validation patients linear inputs fit
the treatment effects better (benchmarks/RESULTS.md; measured, not derived). Regression and
sequence targets are standardised per output (per step for a trajectory), so that the tasks'
losses start on one scale and Huber's beta, given in the output's unit, becomes beta / std.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hydraopt.domain import DEFAULT_PARAMETERS
from hydraopt.domain.training import DATASET_FEATURE_NAMES

LOG_FEATURES = frozenset(p.name for p in DEFAULT_PARAMETERS if p.scale == "log")
SMALLEST_STD = 1e-8  # a constant column is centred, not blown up


@dataclass(frozen=True)
class Standardiser:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Standardiser:
        mean = np.nanmean(values, axis=0)
        std = np.nanstd(values, axis=0)
        return cls(mean, np.where(std > SMALLEST_STD, std, 1.0))

    def forward(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        return scaled * self.std + self.mean

    def to_json(self) -> dict[str, Any]:
        return {"mean": np.asarray(self.mean).tolist(), "std": np.asarray(self.std).tolist()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Standardiser:
        return cls(np.asarray(data["mean"]), np.asarray(data["std"]))


def logged_features(design_scale: str) -> frozenset[str]:
    """The features that enter as log10 under the surrogate's ``design_scale``."""
    return LOG_FEATURES if design_scale == "log" else frozenset()


def log_features(features: np.ndarray, logged: frozenset[str]) -> np.ndarray:
    """The features with those named in ``logged`` as log10."""
    out = np.array(features, dtype=np.float64)
    for column, name in enumerate(DATASET_FEATURE_NAMES):
        if name in logged:
            out[:, column] = np.log10(out[:, column])
    return out
