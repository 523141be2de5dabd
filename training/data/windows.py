"""Sliding windows for forecasting: (window inputs, horizon targets) cut from whole series."""

from __future__ import annotations

import numpy as np

from training.config import DataConfig
from training.data.dataset import SequenceData, Split

MONTHLY = (24, 12, 12)  # window, horizon, season: Airline and user files unless data.* says otherwise


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
    fit_x, fit_y, fit_end, tests, naive, scale = [], [], [], [], [], []
    for values in series:
        if len(values) < window + 2 * horizon:
            raise ValueError(
                f"a series of length {len(values)} is too short for data.window={window} "
                f"and data.horizon={horizon}; it needs at least {window + 2 * horizon} steps"
            )
        history = values[:-horizon]
        for start in range(len(history) - window - horizon + 1):
            fit_x.append(history[start : start + window])
            fit_y.append(history[start + window : start + window + horizon, target_index])
            fit_end.append(start + window + horizon)
        test_x = values[-horizon - window : -horizon]
        tests.append((test_x, values[-horizon:, target_index]))
        naive.append(seasonal_naive(test_x[:, target_index], season, horizon))
        target_history = history[:, target_index]
        scale.append(np.abs(target_history[season:] - target_history[:-season]).mean())
    order = np.argsort(np.array(fit_end), kind="stable")  # time order across series
    n_val = max(1, round(len(order) * val_fraction))
    train_idx, val_idx = order[:-n_val], order[-n_val:]
    X, y = np.stack(fit_x).astype(np.float32), np.stack(fit_y).astype(np.float32)
    return SequenceData(
        task="regression",
        train=Split(X[train_idx], y[train_idx]),
        val=Split(X[val_idx], y[val_idx]),
        test=Split(
            np.stack([t[0] for t in tests]).astype(np.float32),
            np.stack([t[1] for t in tests]).astype(np.float32),
        ),
        feature_names=feature_names,
        window_scaling=all(float(s[:, target_index].min()) > 0 for s in series),
        seasonal_period=season,
        test_naive=np.stack(naive).astype(np.float32),
        test_mase_scale=np.array(scale, dtype=np.float32),
        source=source,
    )


def seasonal_naive(history: np.ndarray, season: int, horizon: int) -> np.ndarray:
    """Repeat the last full season: y_hat[t + h] = y[t + h - season * ceil(h / season)]."""
    last_season = history[-season:]
    return np.array([last_season[h % season] for h in range(horizon)])
