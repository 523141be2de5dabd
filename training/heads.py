"""The torch side of service/heads.py: each head's loss, activation and metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from service.heads import Head
from training.data.dataset import PAD_LABEL  # tagging's padded steps: ignored by the loss and the metrics
from training.metrics import classification_metrics, forecast_metrics

_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "cross_entropy": lambda out, y: nn.functional.cross_entropy(out, y, ignore_index=PAD_LABEL),
    "binary_cross_entropy": lambda out, y: nn.functional.binary_cross_entropy_with_logits(out[:, 0],
                                                                                          y.float()),
    "mse": nn.functional.mse_loss,
}
_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": lambda out: torch.softmax(out, dim=-1),
    "sigmoid": torch.sigmoid,
}


def loss(head: Head, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The head's loss of the network's output against labels, or targets in normalised units."""
    out = out.float()
    if head.per_step:  # (B, T, C) vs (B, T): every step is one case
        out, y = out.flatten(0, 1), y.flatten()
    return _LOSSES[head.loss](out, y)


def activate(head: Head, out: torch.Tensor) -> torch.Tensor:
    """Logits -> probabilities (a value head's output is mapped back to original units by the normaliser)."""
    return _ACTIVATIONS[head.activation](out)


def scores(
    head: Head, y: np.ndarray, predicted: np.ndarray, mase_scale: np.ndarray | None = None,
    series: np.ndarray | None = None,
) -> dict[str, Any]:
    """Metrics of `predict`'s answers against the truth: forecast errors for values (`series`: each row's
    series, for MAPE; see metrics.forecast_metrics); accuracy and the like for labels, where every valid
    step of every sequence counts once for a per-step head."""
    if head.values:
        return forecast_metrics(y, predicted, mase_scale, series)
    if head.per_step:
        valid = y != PAD_LABEL
        return classification_metrics(y[valid], predicted.argmax(axis=2)[valid])
    return classification_metrics(y, predicted_labels(predicted))


def predicted_labels(probabilities: np.ndarray) -> np.ndarray:
    """(N, labels) -> the likeliest; (N, 1) from a sigmoid head -> 1 where P(the second label) > 0.5."""
    if probabilities.shape[1] == 1:
        return (probabilities[:, 0] > 0.5).astype(np.int64)
    return probabilities.argmax(axis=1)
