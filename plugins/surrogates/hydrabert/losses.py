"""Task losses and their combination.

* Regression and sequence heads: Huber (smooth L1, seeds: beta 2) or MSE; heteroscedastic
  heads predict a log-variance s per row and train on the Gaussian negative log-likelihood
  exp(-s) rho(r) + s / 2 (seeds/003), with rho(r) = r^2 / 2 (MSE) or Huber's rho, equal to
  r^2 / 2 within beta and linear beyond, so outliers pull as in the seeds' Huber loss. Plain
  NLL lets a head explain hard rows away as noise and fit the means poorly; beta-NLL (Seitzer
  et al. 2022) weights each row by its variance to the power beta, held fixed in the
  gradient (beta 0: plain NLL; beta 1, the default: the means learn as under the head's own
  loss, which on deterministic simulations keeps the largest effects from being discounted
  as noise: docs/surrogate.md).
* Classification heads: cross-entropy with the positive weight of the training split, or
  focal loss (Lin et al. 2017, gamma 2), which down-weights rows already classified well.
* Combination (Kendall, Gal & Cipolla 2018): each task's loss L enters as
  w (exp(-eta) L + eta) with a learnable eta, the homoscedastic log-variance, times the head's
  fixed weight w (seeds: 0.3 for the auxiliary stress head). A heteroscedastic head learns
  its noise per row, which subsumes eta; its NLL may be negative, where exp(-eta) L + eta has
  no minimum, so it enters as w L.

Targets are scaled (see scaling.py); Huber's beta is given in the output's unit and scaled
with it. Rows whose target is missing (NaN) do not count.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from hydraopt_plugins.surrogates import HeadSettings

LOG_VARIANCE_BOUND = 10.0  # keeps exp(-s) finite while a head is far from its fit
PLATT_NEWTON_STEPS = 50  # Newton needs a handful on this convex 2-parameter fit; only a guard


def head_loss(
    head: HeadSettings,
    output: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    huber_beta: float,
    pos_weight: float,
    mean_only: bool = False,
) -> torch.Tensor:
    """Mean loss of one head over the valid rows (and steps) of a batch. ``mean_only``: the
    loss of the predicted means alone (Huber or MSE), as if the head were not
    heteroscedastic; the criterion that selects the epoch."""
    output = output.float()
    if head.kind == "classification":
        return _classification_loss(head, output, target, valid, pos_weight)
    heteroscedastic = output.shape[-1] == 2 and output.dim() == target.dim() + 1
    mean = output[..., 0] if heteroscedastic else output
    residual = torch.where(valid, target - mean, torch.zeros_like(mean))
    if head.loss == "huber":
        a = residual.abs()
        rho = torch.where(a < huber_beta, 0.5 * a**2, huber_beta * a - 0.5 * huber_beta**2)
    else:
        rho = 0.5 * residual**2
    if heteroscedastic and not mean_only:
        log_var = output[..., 1].clamp(-LOG_VARIANCE_BOUND, LOG_VARIANCE_BOUND)
        per_row = torch.exp(-log_var) * rho + 0.5 * log_var
        if head.nll_beta:  # beta-NLL: each row weighted by its (fixed) variance ** beta
            per_row = per_row * torch.exp(head.nll_beta * log_var).detach()
    else:
        per_row = rho / huber_beta if head.loss == "huber" else 2 * rho  # smooth L1, MSE
    return _masked_mean(per_row, valid)


def _classification_loss(
    head: HeadSettings,
    logit: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    pos_weight: float,
) -> torch.Tensor:
    label = torch.where(valid, target, torch.zeros_like(target))
    weight = torch.tensor(pos_weight, dtype=logit.dtype, device=logit.device)
    weighted = F.binary_cross_entropy_with_logits(logit, label, pos_weight=weight, reduction="none")
    if head.loss == "focal":
        p_true = torch.exp(-F.binary_cross_entropy_with_logits(logit, label, reduction="none"))
        weighted = (1 - p_true) ** head.focal_gamma * weighted
    return _masked_mean(weighted, valid)


def fit_platt(logit: torch.Tensor, label: torch.Tensor) -> tuple[float, float]:
    """Platt scaling (Platt 1999): the slope a and intercept b of p = sigmoid(a * logit + b)
    that maximise the likelihood of the labels, by Newton's method on the two parameters with
    step halving (the log-loss is convex in them). (1, 0) where the labels hold one class."""
    x = logit.detach().double().flatten()
    y = label.detach().double().flatten()
    if len(x) == 0 or bool((y == y[0]).all()):
        return 1.0, 0.0
    design = torch.stack([x, torch.ones_like(x)], 1)

    def log_loss(theta: torch.Tensor) -> float:
        return float(F.binary_cross_entropy_with_logits(design @ theta, y))

    theta = torch.tensor([1.0, 0.0], dtype=torch.float64)
    loss = log_loss(theta)
    for _ in range(PLATT_NEWTON_STEPS):
        p = torch.sigmoid(design @ theta)
        gradient = design.T @ (p - y)
        # A tiny ridge keeps the step finite where the classes are separable.
        hessian = design.T @ (design * (p * (1 - p))[:, None]) + 1e-9 * torch.eye(2).double()
        step = torch.linalg.solve(hessian, gradient)
        shrink = 1.0
        while shrink > 1e-6 and log_loss(theta - shrink * step) > loss:
            shrink /= 2
        if shrink <= 1e-6:
            break
        theta = theta - shrink * step
        previous, loss = loss, log_loss(theta)
        if previous - loss < 1e-12:
            break
    return float(theta[0]), float(theta[1])


def recalibrated_log_loss(logit: torch.Tensor, label: torch.Tensor) -> float:
    """The mean log-loss of the labels after Platt scaling of the logits: how well the logits
    separate the classes, not counting the overconfidence that the scaling removes."""
    slope, intercept = fit_platt(logit, label)
    scaled = slope * logit.double().flatten() + intercept
    return float(F.binary_cross_entropy_with_logits(scaled, label.double().flatten()))


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    count = valid.sum()
    return (values * valid).sum() / count.clamp(min=1)


class TaskWeighting(nn.Module):
    """The learnable log-variances eta of the tasks that take them, and the combination."""

    def __init__(self, heads: Mapping[str, HeadSettings], uncertainty: bool) -> None:
        super().__init__()
        self.heads = dict(heads)
        learnable = [
            name
            for name, head in heads.items()
            if uncertainty and (head.kind == "classification" or not head.heteroscedastic)
        ]
        self.log_variance = nn.ParameterDict(
            {name: nn.Parameter(torch.zeros(())) for name in learnable}
        )

    def forward(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = torch.zeros((), device=next(iter(losses.values())).device)
        for name, loss in losses.items():
            weight = self.heads[name].weight
            if name in self.log_variance:
                eta = self.log_variance[name]
                total = total + weight * (torch.exp(-eta) * loss + eta)
            else:
                total = total + weight * loss
        return total
