"""Baselines on the same test data in the same run, reported beside the model's figures (test_metrics.json
and the report): a model that loses to them is not worth serving.

- forecast: naive (the last value repeated), seasonal naive at the data's period, ETS (Holt-Winters:
  damped additive trend, additive season where two periods of history exist) and Theta (statsmodels),
  each refitted at every test origin on the target's history before it;
- regression: the training mean, and ridge regression on the raw steps (scikit-learn: standardised
  steps, the penalty chosen by leave-one-out on the training series).

MASE is the headline for forecasts, RMSE for regression; `versus_baselines` says which baseline was best
and whether the model beat it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from training.data import SequenceData, Split
from training.metrics import forecast_metrics

RIDGE_ALPHAS = np.logspace(-3, 4, 15)


def with_baselines(test: dict[str, Any], data: SequenceData, train: Split) -> dict[str, Any]:
    """The model's test metrics plus `baselines` (name -> metrics) and `versus_baselines`; `train`:
    every training series (the validation split included). Classification and tagging: unchanged."""
    forecasts = baseline_forecasts(data, train)
    if forecasts is None:
        return test
    scale, series = data.test_mase_scale, data.test_series
    baselines = {name: _without("mape_omitted", forecast_metrics(data.test.y, f, scale, series))  # said once
                 for name, f in forecasts.items()}
    metric = "mase" if "mase" in test else "rmse"
    best = min(baselines, key=lambda name: baselines[name][metric])
    value = baselines[best][metric]
    versus = {"metric": metric, "model": test[metric], "best_baseline": best, "best_baseline_value": value,
              "beaten": test[metric] <= value}
    period = {"seasonal_period": data.seasonal_period} if data.task == "forecast" else {}
    return test | period | {"baselines": baselines, "versus_baselines": versus}


def baseline_forecasts(data: SequenceData, train: Split) -> dict[str, np.ndarray] | None:
    """Each baseline's test forecasts (None for classification and tagging), made once and kept on `data`:
    fitting ETS and Theta to every test history takes seconds (12 s for M1's 181 series), so `gru train`
    makes them before it plans its epochs (the time budget then counts them) and an ensemble's members
    share them."""
    if data.baseline_forecasts is None and data.task in ("forecast", "regression"):
        data.baseline_forecasts = forecast_baselines(data) if data.task == "forecast" else \
            regression_baselines(train, data.test)
    return data.baseline_forecasts


def _without(key: str, metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != key}


def forecast_baselines(data: SequenceData) -> dict[str, np.ndarray]:
    """(test windows, horizon) forecasts per baseline."""
    assert data.test_history is not None and data.test_naive is not None, "forecast data carry histories"
    horizon, season = data.test.y.shape[1], data.seasonal_period or 1
    out = {"naive": np.stack([np.repeat(h[-1], horizon) for h in data.test_history])}
    if season > 1:
        out["seasonal_naive"] = data.test_naive  # at data.seasonal_period
    for name, method in (("ets", _ets), ("theta", _theta)):
        out[name] = np.stack([_fitted(method, h, season, horizon) for h in data.test_history])
    return out


def _fitted(method: Callable[[np.ndarray, int, int], np.ndarray], history: np.ndarray, season: int,
            horizon: int) -> np.ndarray:
    """A statsmodels forecast, quiet about convergence; a history too short for the method: naive."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return np.asarray(method(history.astype(np.float64), season, horizon), dtype=np.float32)
        except (ValueError, np.linalg.LinAlgError):
            return np.repeat(history[-1], horizon).astype(np.float32)


def _ets(history: np.ndarray, season: int, horizon: int) -> np.ndarray:
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    seasonal = season > 1 and len(history) >= 2 * season
    model = ExponentialSmoothing(history, trend="add", damped_trend=True,
                                 seasonal="add" if seasonal else None,
                                 seasonal_periods=season if seasonal else None,
                                 initialization_method="estimated")
    return model.fit().forecast(horizon)


def _theta(history: np.ndarray, season: int, horizon: int) -> np.ndarray:
    from statsmodels.tsa.forecasting.theta import ThetaModel

    seasonal = season > 1 and len(history) >= 2 * season
    model = ThetaModel(history, period=season if seasonal else 1, deseasonalize=seasonal)
    return model.fit().forecast(horizon)


def regression_baselines(train: Split, test: Split) -> dict[str, np.ndarray]:
    steps = max(train.X.shape[1], test.X.shape[1])
    flat = lambda split: np.pad(split.X, ((0, 0), (0, steps - split.X.shape[1]), (0, 0))).reshape(  # noqa: E731
        len(split), -1)
    weight, bias, _ = fit_ridge(flat(train), train.y)
    mean = np.repeat(train.y.mean(axis=0, keepdims=True), len(test), axis=0)
    ridge = flat(test).astype(np.float64) @ weight.T + bias
    return {"mean": mean, "ridge": ridge.astype(np.float32).reshape(test.y.shape)}


def fit_ridge(features: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Ridge regression of targets (N, O) on features (N, D), each feature standardised, the penalty
    chosen by leave-one-out on these rows (scikit-learn's RidgeCV): the weight (O, D) and bias (O,) on
    the unstandardised features, and the penalty. The ridge baseline, and the model's linear path
    (training/linear.py)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    features, targets = features.astype(np.float64), targets.astype(np.float64).reshape(len(targets), -1)
    scaler = StandardScaler().fit(features)
    ridge = RidgeCV(alphas=RIDGE_ALPHAS).fit(scaler.transform(features), targets)
    weight = np.atleast_2d(ridge.coef_) / scaler.scale_  # folded: w·(x - mean)/scale + b = (w/scale)·x + b'
    bias = np.atleast_1d(ridge.intercept_) - weight @ scaler.mean_
    return weight, bias, float(ridge.alpha_)
