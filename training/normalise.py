"""Normalisation as part of the model: fitted on the training split, stored as buffers in the state_dict,
so training, the checkpoint and the exported graph share one implementation (no copy in the service)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

SMALLEST_SCALE = 1e-12  # a constant series' deviation: its steps normalise to 0, its log scale stays finite
CONSTANT = 1e-6  # a deviation under this share of the mean is float32 rounding: the values are one value


def feature_spread(std: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """What a feature is divided by: its deviation at any scale (values of 1e-9 vary as much as values of
    1); 1 for a feature constant in training, so that a value it never took there moves the input by the
    difference, not by a million times it."""
    return torch.where(std <= CONSTANT * mean.abs(), torch.ones_like(std), std)


def target_spread(std: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """What a target is divided by: its deviation at any scale; a constant target's a millionth of its
    value (its forecasts stay that value)."""
    return std.clamp_min(CONSTANT * mean.abs()).clamp_min(1e-30)


class Normaliser(nn.Module):
    """x -> (x / level - mean) / std on the way in; the inverse on forecasts on the way out.

    `level` is each window's mean of feature `scale_feature` when window scaling is on (forecasting of
    trending positive series), else 1.

    Per series (`per_series`, model.normalise=series: training/defaults.py chooses it when the training
    series' scales differ by orders of magnitude): each series and feature is centred on its own mean and
    divided by its own standard deviation over its valid steps, and the log of that deviation (itself
    standardised over the training series) is kept beside each feature as an extra input at every step,
    so the model still sees the scale: (B, T, F) -> (B, T, 2F). A prefix does not know these statistics:
    such a model does not stream (GRUModel.streaming_refusal).
    """

    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    target_mean: torch.Tensor
    target_std: torch.Tensor
    scale_mask: torch.Tensor
    log_scale_mean: torch.Tensor  # per_series only
    log_scale_std: torch.Tensor

    def __init__(self, n_features: int, n_targets: int, window_scaling: bool = False,
                 per_series: bool = False):
        super().__init__()
        self.window_scaling, self.per_series = window_scaling, per_series
        self.width = 2 * n_features if per_series else n_features  # what the model reads per step
        if per_series:  # the log-scale feature's standardisation
            self.register_buffer("log_scale_mean", torch.zeros(n_features))
            self.register_buffer("log_scale_std", torch.ones(n_features))
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.register_buffer("target_mean", torch.zeros(n_targets))
        self.register_buffer("target_std", torch.ones(n_targets))
        self.register_buffer("scale_mask", torch.zeros(n_features))  # 1 on the scaled feature

    def level(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, T, F), lengths: (B,) or None -> (B, 1): the mean over valid steps only
        if not self.window_scaling:
            return torch.ones_like(x[:, :1, 0])
        scaled = (x * self.scale_mask).sum(dim=2)  # (B, T)
        if lengths is None:
            return scaled.mean(dim=1, keepdim=True)
        valid = torch.arange(x.shape[1]).unsqueeze(0) < lengths.long().unsqueeze(1)
        return (scaled * valid).sum(dim=1, keepdim=True) / lengths.unsqueeze(1).to(x.dtype)

    def inputs(self, x: torch.Tensor, level: torch.Tensor,
               lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Raw x (B, T, F) -> normalised (B, T, width); steps past `lengths` are not read."""
        if self.per_series:
            mean, std = self.series_stats(x, lengths)  # (B, 1, F) each
            log_scale = (std.log() - self.log_scale_mean) / self.log_scale_std
            return torch.cat([(x - mean) / std, log_scale.expand_as(x)], dim=2)
        if not self.window_scaling:  # level is 1: no divisor in the exported graph
            return (x - self.feature_mean) / self.feature_std
        divisor = 1.0 + self.scale_mask * (level.unsqueeze(2) - 1.0)  # (B, 1, F)
        return (x / divisor - self.feature_mean) / self.feature_std

    def centre_and_spread(self, x: torch.Tensor,
                          lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and deviation x is normalised by, in raw units: each series' own (B, 1, F), or the
        training split's (F,)."""
        if self.per_series:
            return self.series_stats(x, lengths)
        return self.feature_mean, self.feature_std

    @staticmethod
    def series_stats(x: torch.Tensor, lengths: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Each series' mean and standard deviation per feature over its valid steps: (B, 1, F) each."""
        if lengths is None:
            lengths = torch.full((x.shape[0],), x.shape[1], device=x.device)
        valid = (torch.arange(x.shape[1], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(2)
        count = lengths.to(x.dtype).view(-1, 1, 1)
        mean = (x * valid).sum(dim=1, keepdim=True) / count
        variance = (((x - mean) * valid) ** 2).sum(dim=1, keepdim=True) / count
        return mean, variance.sqrt().clamp_min(SMALLEST_SCALE)

    def targets(self, y: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return (y / level - self.target_mean) / self.target_std

    def outputs(self, y: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        return (y * self.target_std + self.target_mean) * level

    def fit(
        self, X: np.ndarray, y: np.ndarray | None, scale_feature: int = 0,
        lengths: np.ndarray | None = None,
    ) -> None:
        """Fit on the training split only. X: (N, T, F) padded past `lengths` (N,) (None: all valid);
        y: (N, O) regression targets or None. Padded steps never count."""
        with torch.no_grad():
            if self.window_scaling:
                self.scale_mask.zero_()
                self.scale_mask[scale_feature] = 1.0
            x = torch.as_tensor(X, dtype=torch.float32)
            steps = None if lengths is None else torch.as_tensor(lengths)
            level = self.level(x, steps)
            scaled = x / (1.0 + self.scale_mask * (level.unsqueeze(2) - 1.0))  # (N, T, F)
            if steps is not None:
                scaled = scaled[torch.arange(x.shape[1]).unsqueeze(0) < steps.long().unsqueeze(1)]
            scaled = scaled.reshape(-1, x.shape[2])
            self.feature_mean.copy_(scaled.mean(dim=0))
            self.feature_std.copy_(feature_spread(scaled.std(dim=0), self.feature_mean))
            if self.per_series:
                log_scale = self.series_stats(x, steps)[1].log().squeeze(1)  # (N, F)
                self.log_scale_mean.copy_(log_scale.mean(dim=0))
                self.log_scale_std.copy_(log_scale.std(dim=0).nan_to_num(1.0).clamp_min(1e-3))
            if y is not None:
                targets = torch.as_tensor(y, dtype=torch.float32) / level
                self.target_mean.copy_(targets.mean(dim=0))
                self.target_std.copy_(target_spread(targets.std(dim=0), self.target_mean))

    def describe(self) -> dict[str, Any]:
        """Plain numbers for the checkpoint and the bundle manifest."""
        return {
            "window_scaling": self.window_scaling,
            "per_series": self.per_series,
            "scale_feature": int(self.scale_mask.argmax()) if self.window_scaling else None,
            "feature_mean": self.feature_mean.tolist(),
            "feature_std": self.feature_std.tolist(),
            "target_mean": self.target_mean.tolist(),
            "target_std": self.target_std.tolist(),
        }
