"""M1 yearly from the Monash .tsf file in aeon: windows, padding, and the naive baseline's MASE."""

from __future__ import annotations

import numpy as np

from training.config import DataConfig
from training.data import load_data
from training.metrics import forecast_metrics


def test_m1_yearly_naive_mase_matches_the_published_4_894() -> None:
    data = load_data(DataConfig(dataset="M1Yearly", window=8, horizon=6, seasonal_period=1))
    assert data.test.X.shape == (181, 8, 1) and data.test.y.shape == (181, 6)  # one test window per series
    assert len(data.val) == 181 and len(data.train) > 181
    naive = forecast_metrics(data.test.y, data.test_naive, data.test_mase_scale)
    assert abs(naive["mase"] - 4.894) < 5e-4  # Monash archive's naive baseline for M1 yearly
    # left padding repeats a series' first value; the last input step is the last observed value
    assert np.all(data.test.X[:, -1, 0] == data.test_naive[:, 0])
