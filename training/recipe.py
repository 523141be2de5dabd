"""The training recipe's pieces: the learning-rate schedule, augmentation for time series, and the plan
of optimiser steps that fits the time budget."""

from __future__ import annotations

import math

import torch

from training.frontend import gather_steps, step_mask
from training.normalise import Normaliser

WARM_UP = 0.3  # onecycle: the share of the steps that warm the learning rate up


def make_schedule(
    optimizer: torch.optim.Optimizer, name: str, learning_rate: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """"onecycle": warm up to `learning_rate` over the first WARM_UP of the steps, then anneal to ~0 (Smith &
    Topin 2019): a fixed budget that ends on settled weights, so the last epoch is a fair choice even
    without a validation split. "constant": `learning_rate` throughout."""
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, pct_start=WARM_UP,
                                                   total_steps=max(total_steps, 2))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def may_stop(name: str, epoch: int, max_epochs: int) -> bool:
    """Whether early stopping may end the run after `epoch`: not while onecycle still warms up. A value
    model starts at its baseline (the linear path), and the first epochs at a rising learning rate
    seldom beat it: patience counted from there stopped sunspots before the GRU learnt anything."""
    return name != "onecycle" or epoch >= WARM_UP * max_epochs


def augment(
    x: torch.Tensor, lengths: torch.Tensor | None, normaliser: Normaliser, jitter: float, scaling: float
) -> torch.Tensor:
    """Training inputs, perturbed in normalised units: each series and feature scaled by 1 + N(0,
    scaling²) about the mean it is normalised by (the feature's, or the series' own), plus N(0, jitter²)
    noise per step. Raw units in and out; steps past `lengths` stay zero."""
    if not (jitter or scaling):
        return x
    batch, steps, features = x.shape
    mean, std = normaliser.centre_and_spread(x, lengths)
    factor = 1.0 + scaling * torch.randn(batch, 1, features, device=x.device)
    noise = jitter * torch.randn(batch, steps, features, device=x.device)
    perturbed = mean + (x - mean) * factor + noise * std
    if lengths is None:
        return perturbed
    return perturbed * step_mask(lengths.to(x.device), steps).unsqueeze(2).to(x.dtype)


def crop(x: torch.Tensor, lengths: torch.Tensor | None, share: float
         ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Window slicing (Le Guennec et al. 2016): each series replaced by a random window of `share` of its
    valid steps, moved to the start, its length the window's. The label must not hinge on where in the
    series a pattern sits: with two series per class the model otherwise learns each series' positions
    by heart. share 1: unchanged. lengths (on the CPU, as packing wants them) out: the windows'."""
    if share >= 1:
        return x, lengths
    batch, steps, _ = x.shape
    full = torch.full((batch,), steps) if lengths is None else lengths.long()
    kept = (full * share).ceil().long().clamp(min=1)
    start = (torch.rand(batch) * (full - kept + 1)).long()  # the windows inside each series' valid steps
    index = (start.unsqueeze(1) + torch.arange(int(kept.max())).unsqueeze(0)).clamp(max=steps - 1)
    windows = gather_steps(x, index.to(x.device))
    return windows * step_mask(kept.to(x.device), windows.shape[1]).unsqueeze(2).to(x.dtype), kept


def soft_targets(y: torch.Tensor, classes: int) -> torch.Tensor:
    """Labels as the loss's probability targets, which mixup mixes: (B, classes) for a softmax head,
    P(label 1) (B,) for a sigmoid's (classes 1)."""
    return y.float() if classes == 1 else torch.nn.functional.one_hot(y, classes).float()


def mixup(x: torch.Tensor, lengths: torch.Tensor | None, target: torch.Tensor, normaliser: Normaliser,
          alpha: float) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Mixup (Zhang et al. 2018): each series of the batch mixed with another, lam * a + (1 - lam) * b,
    and its soft target likewise, lam ~ Beta(alpha, alpha) once per batch. The mix is taken in normalised
    units, each series' own where the model normalises per series: there the model also reads each
    series' scale, so the mix's scale is mixed too (geometrically: scales 1e-5 and 400 mix in log units,
    as the model reads them); its length is the longer one's."""
    if not alpha or len(x) < 2:
        return x, lengths, target
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    other = torch.randperm(len(x)).to(x.device)
    mean, std = normaliser.centre_and_spread(x, lengths)
    z = (x - mean) / std
    if lengths is not None:  # past its end a series is at its mean
        z = z * step_mask(lengths.to(x.device), x.shape[1]).unsqueeze(2).to(x.dtype)
    if normaliser.per_series:  # (B, 1, F): each series' own
        std = std**lam * std[other] ** (1 - lam)
    mixed = mean + std * (lam * z + (1 - lam) * z[other])
    if lengths is not None:
        lengths = torch.maximum(lengths, lengths[other.to(lengths.device)])
        mixed = mixed * step_mask(lengths.to(x.device), x.shape[1]).unsqueeze(2).to(x.dtype)
    return mixed, lengths, lam * target + (1 - lam) * target[other.to(target.device)]


WARP_KNOTS = 4  # time warping: the speed curve's random values, spread over each series


def time_warp(x: torch.Tensor, lengths: torch.Tensor | None, strength: float) -> torch.Tensor:
    """Time warping (Um et al. 2017): each series read at a speed that drifts smoothly, 1 + N(0,
    strength²) at WARP_KNOTS points linearly between, so its shapes stretch and shrink in time while its
    start and end stay where they were. strength 0: unchanged. Valid steps only; the rest stay zero."""
    if not strength:
        return x
    batch, steps, _ = x.shape
    full = (torch.full((batch,), steps) if lengths is None else lengths.long()).to(x.device)
    speed = (1 + strength * torch.randn(batch, 1, WARP_KNOTS, device=x.device)).clamp(min=0.1)
    speed = torch.nn.functional.interpolate(speed, size=steps, mode="linear", align_corners=True)[:, 0]
    position = speed.cumsum(1) - speed[:, :1]  # 0 at the first step
    end = position.gather(1, (full - 1).clamp(min=0).unsqueeze(1)).clamp(min=1e-6)
    index = (position / end * (full - 1).unsqueeze(1)).round().long()
    index = torch.minimum(index, (full - 1).clamp(min=0).unsqueeze(1))
    warped = gather_steps(x, index)
    return warped if lengths is None else warped * step_mask(full, steps).unsqueeze(2).to(x.dtype)


# What the end of a run needs after the last epoch (test evaluation, checkpoint, report, plots): a share
# of the budget, at least a few seconds.
END_SHARE, END_SECONDS = 0.1, 5.0


def plan_epochs(budget: float | None, spent: float, step_seconds: float, steps_per_epoch: int,
                epochs: int, after: float = 0.0) -> tuple[int, str]:
    """The epochs that fit `budget` seconds (None: no limit) after `spent` seconds already, each epoch
    `steps_per_epoch` optimiser steps of `step_seconds` (measured on this machine, now), keeping `after`
    seconds (the final evaluations) and a share for the rest of the end; at most `epochs` (the rule's),
    at least 1. Returns the epochs and the line `gru train` prints."""
    per_epoch = steps_per_epoch * step_seconds
    planned = (f"a step takes ~{1000 * step_seconds:.0f} ms, so {epochs} epochs take "
               f"~{epochs * per_epoch:.0f} s")
    if budget is None:
        return epochs, f"time budget: none; {planned}"
    left = budget - spent - end_reserve(budget, after)
    fit = max(1, math.floor(left / per_epoch)) if per_epoch > 0 else epochs
    if fit >= epochs:
        return epochs, f"time budget {budget:g} s: {planned}, which fits"
    return fit, (f"optim.max_epochs={fit} (time budget {budget:g} s: {planned}; {fit} epochs, "
                 f"{fit * steps_per_epoch} steps, fit in the {max(left, 0):.0f} s left; "
                 "raise optim.time_budget / --time-budget for more)")


def end_reserve(budget: float, after: float) -> float:
    """Seconds kept for the end of a run: `after` (the final evaluations) and a share for the rest."""
    return after + max(END_SECONDS, END_SHARE * budget)
