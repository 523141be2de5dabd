"""The training recipe's pieces: the learning-rate schedule and augmentation for time series."""

from __future__ import annotations

import torch

from training.frontend import step_mask
from training.normalise import Normaliser


def make_schedule(
    optimizer: torch.optim.Optimizer, name: str, learning_rate: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """"onecycle": warm up to `learning_rate` over the first 30% of the steps, then anneal to ~0 (Smith &
    Topin 2019): a fixed budget that ends on settled weights, so the last epoch is a fair choice even
    without a validation split. "constant": `learning_rate` throughout."""
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate,
                                                   total_steps=max(total_steps, 2))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def augment(
    x: torch.Tensor, lengths: torch.Tensor | None, normaliser: Normaliser, jitter: float, scaling: float
) -> torch.Tensor:
    """Training inputs, perturbed in normalised units: each series and feature scaled by 1 + N(0,
    scaling²) about the feature mean, plus N(0, jitter²) noise per step. Raw units in and out; steps past
    `lengths` stay zero."""
    if not (jitter or scaling):
        return x
    batch, steps, features = x.shape
    std, mean = normaliser.feature_std, normaliser.feature_mean
    factor = 1.0 + scaling * torch.randn(batch, 1, features, device=x.device)
    noise = jitter * torch.randn(batch, steps, features, device=x.device)
    perturbed = mean + (x - mean) * factor + noise * std
    if lengths is None:
        return perturbed
    return perturbed * step_mask(lengths.to(x.device), steps).unsqueeze(2).to(x.dtype)
