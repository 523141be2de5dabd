"""Forecast metrics stay finite (and the report valid JSON) when some targets are 0."""

from __future__ import annotations

import json

import numpy as np

from training.metrics import forecast_metrics


def test_mape_leaves_out_zero_targets() -> None:
    y_true = np.array([[0.0, 2.0], [4.0, 0.0]])
    y_pred = np.array([[1.0, 3.0], [2.0, 0.0]])
    metrics = forecast_metrics(y_true, y_pred)
    assert metrics["mape"] == 100.0 * (0.5 + 0.5) / 2
    assert metrics["mae"] == 1.0
    json.dumps(metrics, allow_nan=False)  # raises on inf/NaN
    assert "mape" not in forecast_metrics(np.zeros((1, 2)), np.ones((1, 2)))
