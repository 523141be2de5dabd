"""M1 yearly (Monash forecasting archive, the .tsf file shipped in aeon): 181 short yearly series
(15 to 58 values), one global model across all of them.

Each series' last `horizon` values are its test target (Monash convention). Validation: each series'
window just before the test window. Training: every window that ends before the validation target.
Series are short, so an input window may reach before the start of its series: it is left-padded with
the series' first value (at least `MIN_OBSERVED` real values per window; shorter series give fewer
training windows, the shortest none, but every series has a validation and a test window).
MASE scale: the in-sample naive-1 MAE of the history before the test window (seasonality 1 for yearly);
the baseline is the naive forecast (the last value repeated), as in the Monash tables.
"""

from __future__ import annotations

import numpy as np

from training.config import DataConfig
from training.data.dataset import SequenceData, Split
from training.data.windows import forecast_settings

MIN_OBSERVED = 3
M1_YEARLY = (8, 6, 1)  # window, horizon (the Monash archive's), season: unless data.* says otherwise


def m1_yearly(config: DataConfig) -> SequenceData:
    from aeon.datasets import load_forecasting

    window, horizon, season = forecast_settings(config, M1_YEARLY)
    if season != 1:
        raise ValueError(f"M1Yearly is yearly: data.seasonal_period must be 1 (or unset), got {season}")
    frame = load_forecasting("m1_yearly_dataset")
    series = [np.asarray(values, dtype=np.float32) for values in frame["series_value"]]
    return padded_windows(series, window, horizon,
                          "M1 yearly (Monash .tsf in aeon), last horizon of each series held out")


def padded_windows(series: list[np.ndarray], window: int, horizon: int, source: str) -> SequenceData:
    train_x, train_y, val_x, val_y, test_x, test_y, naive, scale = ([] for _ in range(8))
    for values in series:
        history = values[:-horizon]
        if len(history) < MIN_OBSERVED + horizon:
            raise ValueError(f"a series of {len(values)} values is too short for data.horizon={horizon}")
        for end in range(MIN_OBSERVED, len(history) - 2 * horizon + 1):  # input ends at `end`
            train_x.append(_left_padded(history[:end], window))
            train_y.append(history[end : end + horizon])
        val_x.append(_left_padded(history[:-horizon], window))
        val_y.append(history[-horizon:])
        test_x.append(_left_padded(history, window))
        test_y.append(values[-horizon:])
        naive.append(np.repeat(history[-1], horizon))
        scale.append(np.abs(np.diff(history)).mean())
    stack = lambda rows: np.stack(rows).astype(np.float32)  # noqa: E731
    return SequenceData(
        task="forecast",
        train=Split(stack(train_x)[:, :, None], stack(train_y)),
        val=Split(stack(val_x)[:, :, None], stack(val_y)),
        test=Split(stack(test_x)[:, :, None], stack(test_y)),
        feature_names=["value"],
        window_scaling=all(float(s.min()) > 0 for s in series),
        seasonal_period=1,
        test_naive=stack(naive),
        test_mase_scale=np.array(scale, dtype=np.float32),
        test_history=[values[:-horizon] for values in series],
        test_series=np.arange(len(series)),
        source=source,
    )


def _left_padded(values: np.ndarray, window: int) -> np.ndarray:
    tail = values[-window:]
    return np.concatenate([np.full(window - len(tail), tail[0], dtype=np.float32), tail])
