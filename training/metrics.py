"""Test metrics: accuracy and macro-F1 for classification; MAE, RMSE, MASE and (where it means
something) MAPE for regression and forecasting."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

NEAR_ZERO = 0.05  # a target below 5 % of its level makes MAPE a measure of that target alone


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
    }


def forecast_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, mase_scale: np.ndarray | None = None
) -> dict[str, Any]:
    """y: (N, horizon) or (N, targets). MASE: each window's MAE over its series' in-sample
    seasonal-naive MAE, averaged over windows (M4 convention). MAPE in percent, or `mape_omitted`
    with the reason where it would mislead (mape_problem)."""
    error = y_pred.astype(np.float64) - y_true.astype(np.float64)
    metrics: dict[str, Any] = {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error**2).mean()))}
    if mase_scale is not None:
        metrics["mase"] = float((np.abs(error).mean(axis=1) / mase_scale).mean())
    problem = mape_problem(y_true)
    if problem:
        metrics["mape_omitted"] = problem
    else:
        metrics["mape"] = float(100.0 * np.abs(error / y_true).mean())
    return metrics


def mape_problem(y_true: np.ndarray) -> str | None:
    """Why MAPE would mislead on these targets, or None: targets of both signs or zero, or some near
    zero (below NEAR_ZERO of their level: the mean |y| of their window, or of all targets for one-value
    regression), whose percentage errors would swamp the rest."""
    y = np.abs(y_true.astype(np.float64))
    if not ((y_true > 0).all() or (y_true < 0).all()):
        return "targets are zero or of both signs: percentage errors are undefined or meaningless"
    level = y.mean(axis=1, keepdims=True) if y.shape[1] > 1 else y.mean(axis=0, keepdims=True)
    near = int((y < NEAR_ZERO * level).sum())
    if near:
        return (f"{near} of {y.size} targets are near zero (below {NEAR_ZERO:.0%} of their level): "
                "their percentage errors would dominate")
    return None
