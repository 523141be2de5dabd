"""Test metrics: accuracy and macro-F1 for classification; MAE, RMSE, MASE and (where it means
something) MAPE for regression and forecasting."""

from __future__ import annotations

from collections import Counter
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
    y_true: np.ndarray, y_pred: np.ndarray, mase_scale: np.ndarray | None = None,
    series: np.ndarray | None = None,
) -> dict[str, Any]:
    """y: (N, horizon) or (N, targets). MASE: each window's MAE over its series' in-sample
    seasonal-naive MAE, averaged over windows (M4 convention). MAPE in percent over the series where it
    means something (mape_rows; `series`: each row's series, None: see mape_rows), and `mape_omitted`
    with the reason where a series is left out."""
    error = y_pred.astype(np.float64) - y_true.astype(np.float64)
    metrics: dict[str, Any] = {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error**2).mean()))}
    if mase_scale is not None:
        scaled = mase_scale > 0  # a constant (or exactly repeating) series: its naive error is 0
        if scaled.any():
            metrics["mase"] = float((np.abs(error).mean(axis=1)[scaled] / mase_scale[scaled]).mean())
        if not scaled.all():
            metrics["mase_omitted"] = (f"{int((~scaled).sum())} of {len(scaled)} test windows left out: "
                                       "their series' in-sample seasonal-naive error is 0 (constant, or "
                                       "repeating exactly), and MASE divides by it")
    kept, problem = mape_rows(y_true, series)
    if kept.any():
        metrics["mape"] = float(100.0 * np.abs(error[kept] / y_true[kept]).mean())
    if problem:
        metrics["mape_omitted"] = problem
    return metrics


def mape_rows(y_true: np.ndarray, series: np.ndarray | None = None) -> tuple[np.ndarray, str | None]:
    """The rows MAPE may read, and why the others are left out (None: none is). A series is left out
    where its targets are zero or of both signs, or some are near zero: below NEAR_ZERO of its level (the
    mean |y| of all its targets), where their percentage errors would swamp the rest. `series` (N,):
    each row's series; None: each row is one (forecasts), or all rows one (one-value regression)."""
    if series is None:
        series = np.arange(len(y_true)) if y_true.shape[1] > 1 else np.zeros(len(y_true), np.int64)
    keys = np.unique(series)
    problems = {key: _mape_problem(y_true[series == key]) for key in keys}
    kept = np.array([problems[key] is None for key in series], dtype=bool)
    left = Counter(p for p in problems.values() if p)
    if not left:
        return kept, None
    if len(keys) == 1:
        return kept, next(iter(left))
    return kept, (f"{left.total()} of {len(keys)} series left out: "
                  + "; ".join(f"{n} where {problem}" for problem, n in left.items()))


def _mape_problem(y: np.ndarray) -> str | None:
    if not ((y > 0).all() or (y < 0).all()):
        return "targets are zero or of both signs: percentage errors are undefined or meaningless"
    magnitude = np.abs(y.astype(np.float64))
    if (magnitude < NEAR_ZERO * magnitude.mean()).any():
        return (f"targets come near zero (below {NEAR_ZERO:.0%} of the series' level): their percentage "
                "errors would dominate")
    return None
