"""Sliding windows for forecasting: (window inputs, horizon targets) cut from whole series."""

from __future__ import annotations

import numpy as np

from training.config import DataConfig
from training.data.dataset import SequenceData, Split

MONTHLY = (24, 12, 12)  # window, horizon, season: Airline unless data.* says otherwise


def forecast_settings(config: DataConfig, own: tuple[int, int, int] = MONTHLY) -> tuple[int, int, int]:
    """data.window, data.horizon and data.seasonal_period where set; the dataset's `own` otherwise."""
    given = (config.window, config.horizon, config.seasonal_period)
    return tuple(value if value is not None else default  # type: ignore[return-value]
                 for value, default in zip(given, own, strict=True))


def forecast_data(
    series: list[np.ndarray], target_index: int, window: int, horizon: int,
    season: int, val_fraction: float, feature_names: list[str], source: str,
) -> SequenceData:
    """Each series (T_i, F): its last `horizon` targets are the test window; the windows before are
    train and validation (the latest `val_fraction` of them by time). Scaling is per window."""
    if window < season:
        raise ValueError(f"data.window ({window}) must be at least data.seasonal_period ({season})")
    histories, tests, naive, scale, before = [], [], [], [], []
    for values in series:
        if len(values) < window + 2 * horizon:
            raise ValueError(
                f"a series of length {len(values)} is too short for data.window={window} "
                f"and data.horizon={horizon}; it needs at least {window + 2 * horizon} steps"
            )
        history = values[:-horizon]
        histories.append(history)
        test_x = values[-horizon - window : -horizon]
        tests.append((test_x, values[-horizon:, target_index]))
        naive.append(seasonal_naive(test_x[:, target_index], season, horizon))
        scale.append(seasonal_mae(history[:, target_index], season))
        before.append(history[:, target_index])
    train, val = fit_windows(histories, target_index, window, horizon, val_fraction)
    return SequenceData(
        task="forecast",
        train=train,
        val=val,
        test=Split(
            np.stack([t[0] for t in tests]).astype(np.float32),
            np.stack([t[1] for t in tests]).astype(np.float32),
        ),
        feature_names=feature_names,
        window_scaling=all(float(s[:, target_index].min()) > 0 for s in series),
        seasonal_period=season,
        test_naive=np.stack(naive).astype(np.float32),
        test_mase_scale=np.array(scale, dtype=np.float32),
        test_history=before,
        test_series=np.arange(len(before)),
        source=source,
    )


def fit_windows(histories: list[np.ndarray], target_index: int, window: int, horizon: int,
                val_fraction: float) -> tuple[Split, Split]:
    """Every (window, horizon) pair inside the histories (T_i, F): train, and validation (the latest
    `val_fraction` of them by time, across series)."""
    fit_x, fit_y, fit_end = [], [], []
    for history in histories:
        for start in range(len(history) - window - horizon + 1):
            fit_x.append(history[start : start + window])
            fit_y.append(history[start + window : start + window + horizon, target_index])
            fit_end.append(start + window + horizon)
    order = np.argsort(np.array(fit_end), kind="stable")  # time order across series
    n_val = max(1, round(len(order) * val_fraction))
    train_idx, val_idx = order[:-n_val], order[-n_val:]
    X, y = np.stack(fit_x).astype(np.float32), np.stack(fit_y).astype(np.float32)
    return Split(X[train_idx], y[train_idx]), Split(X[val_idx], y[val_idx])


def seasonal_naive(history: np.ndarray, season: int, horizon: int) -> np.ndarray:
    """Repeat the last full season: y_hat[t + h] = y[t + h - season * ceil(h / season)]."""
    last_season = history[-season:]
    return np.array([last_season[h % season] for h in range(horizon)])


def seasonal_mae(history: np.ndarray, season: int) -> float:
    """The in-sample MAE of the seasonal-naive forecast (naive-1 where the history is one season or
    less): the scale of MASE."""
    lag = season if len(history) > season else 1
    return float(np.abs(history[lag:] - history[:-lag]).mean())
