"""Forecast metrics stay finite (and the report valid JSON) when some targets are 0."""

from __future__ import annotations

import json

import numpy as np

from training.metrics import forecast_metrics


def test_zero_targets_leave_mape_out_with_the_reason() -> None:
    y_true = np.array([[0.0, 2.0], [4.0, 0.0]])
    y_pred = np.array([[1.0, 3.0], [2.0, 0.0]])
    metrics = forecast_metrics(y_true, y_pred)
    assert "mape" not in metrics and "zero" in metrics["mape_omitted"]
    assert metrics["mae"] == 1.0
    json.dumps(metrics, allow_nan=False)  # raises on inf/NaN
