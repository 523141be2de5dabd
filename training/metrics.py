"""Test metrics: accuracy and macro-F1 for classification; MAE, RMSE, MAPE and MASE for forecasting."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, f1_score


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
    }


def forecast_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, mase_scale: np.ndarray | None = None
) -> dict[str, float]:
    """y: (N, horizon). MAPE in percent, over the targets that are not 0 (none: no MAPE; a zero target
    would make it infinite, which JSON cannot hold). MASE: each window's MAE over its series' in-sample
    seasonal-naive MAE, averaged over windows (M4 convention)."""
    error = y_pred.astype(np.float64) - y_true.astype(np.float64)
    metrics = {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error**2).mean()))}
    nonzero = y_true != 0
    if nonzero.any():
        metrics["mape"] = float(100.0 * np.abs(error[nonzero] / y_true[nonzero]).mean())
    if mase_scale is not None:
        metrics["mase"] = float((np.abs(error).mean(axis=1) / mase_scale).mean())
    return metrics
