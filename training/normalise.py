"""Normalisation as part of the model: fitted on the training split, stored as buffers in the state_dict,
so training, the checkpoint and the exported graph share one implementation (no copy in the service)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class Normaliser(nn.Module):
    """x -> (x / level - mean) / std on the way in; the inverse on forecasts on the way out.

    `level` is each window's mean of feature `scale_feature` when window scaling is on (forecasting of
    trending positive series), else 1.
    """

    feature_mean: torch.Tensor
    feature_std: torch.Tensor
    target_mean: torch.Tensor
    target_std: torch.Tensor
    scale_mask: torch.Tensor

    def __init__(self, n_features: int, n_targets: int, window_scaling: bool = False):
        super().__init__()
        self.window_scaling = window_scaling
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

    def inputs(self, x: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        if not self.window_scaling:  # level is 1: no divisor in the exported graph
            return (x - self.feature_mean) / self.feature_std
        divisor = 1.0 + self.scale_mask * (level.unsqueeze(2) - 1.0)  # (B, 1, F)
        return (x / divisor - self.feature_mean) / self.feature_std

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
            self.feature_std.copy_(scaled.std(dim=0).clamp_min(1e-6))
            if y is not None:
                targets = torch.as_tensor(y, dtype=torch.float32) / level
                self.target_mean.copy_(targets.mean(dim=0))
                self.target_std.copy_(targets.std(dim=0).clamp_min(1e-6))

    def describe(self) -> dict[str, Any]:
        """Plain numbers for the checkpoint and the bundle manifest."""
        return {
            "window_scaling": self.window_scaling,
            "scale_feature": int(self.scale_mask.argmax()) if self.window_scaling else None,
            "feature_mean": self.feature_mean.tolist(),
            "feature_std": self.feature_std.tolist(),
            "target_mean": self.target_mean.tolist(),
            "target_std": self.target_std.tolist(),
        }
