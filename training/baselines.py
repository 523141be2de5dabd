"""Baselines on the same test data in the same run, reported beside the model's figures (test_metrics.json
and the report): a model that loses to them is not worth serving.

- forecast: naive (the last value repeated), seasonal naive at the data's period, ETS (Holt-Winters:
  damped additive trend, additive season where two periods of history exist) and Theta (statsmodels),
  each refitted at every test origin on the target's history before it (ETS and Theta at most at
  MAX_FITTED origins, evenly spaced: each fit takes ~50 ms, and a few hundred series give thousands of
  origins; such a baseline is compared with the model on the same windows, and says how many), on the
  last FITTED_HISTORY values of the history at most (a fit's time grows with its length: 3 s at 16,000);
- regression: the training mean, and ridge regression on the raw steps (scikit-learn: standardised
  steps, the penalty chosen by leave-one-out on the training series);
- tagging: the training steps' majority label on every test step, compared on macro-F1 (a recording
  whose rare label is 0.2 % of its steps scores accuracy 0.998 with it), with the trained labels that no
  test step holds (`labels_not_in_test`: the test says nothing about them).

MASE is the headline for forecasts, RMSE for regression, macro-F1 for tagging; `versus_baselines` says
which baseline was best and whether the model beat it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from training.data import SequenceData, Split
from training.data.dataset import PAD_LABEL
from training.defaults import merge
from training.metrics import classification_metrics, forecast_metrics

RIDGE_ALPHAS = np.logspace(-3, 4, 15)
OMITTED = ("mape_omitted", "mase_omitted")  # why a metric leaves windows out: said once, by the model's
MAX_FITTED = 200  # test windows ETS and Theta are fitted on: ~10-20 s on one core
FITTED_HISTORY = 1000  # ETS and Theta read at most this many recent values, or 20 periods where more


def with_baselines(test: dict[str, Any], data: SequenceData, predict: Callable[[], np.ndarray]
                   ) -> dict[str, Any]:
    """The model's test metrics plus `baselines` (name -> metrics) and `versus_baselines`; `predict`: the
    model's test predictions, read where a baseline covers only some windows. Classification: unchanged
    (its bar is 1-NN DTW, bench/quality.py)."""
    if data.task == "tagging":
        return test | majority_baseline(test, data)
    forecasts = baseline_forecasts(data)
    if forecasts is None:
        return test
    predict = functools.cache(predict)  # one pass, whichever baselines need it
    metric = "mase" if "mase" in test else "rmse"
    baselines, model_on = {}, {}  # the model's metric on each baseline's windows
    for name, forecast in forecasts.items():
        rows = ~np.isnan(forecast).any(axis=1)
        baselines[name] = _without(OMITTED, _metrics(data, rows, forecast))  # said once
        model_on[name] = test[metric]
        if not rows.all():
            baselines[name]["windows"] = int(rows.sum())
            model_on[name] = _metrics(data, rows, predict())[metric]
    best = max(baselines, key=lambda name: model_on[name] - baselines[name][metric])  # the hardest
    value = baselines[best][metric]
    versus = {"metric": metric, "model": model_on[best], "best_baseline": best, "best_baseline_value": value,
              "beaten": model_on[best] <= value}
    if "windows" in baselines[best]:
        versus["windows"] = baselines[best]["windows"]
    period = {"seasonal_period": data.seasonal_period} if data.task == "forecast" else {}
    return test | period | {"baselines": baselines, "versus_baselines": versus}


def majority_baseline(test: dict[str, Any], data: SequenceData) -> dict[str, Any]:
    """Tagging: the training majority label answered at every test step, beaten only by a higher macro-F1
    (a tie is a model that tells nothing apart), and the trained labels no test step holds."""
    steps = lambda y: y[y != PAD_LABEL]  # noqa: E731
    seen, truth = np.concatenate([steps(data.train.y), steps(data.val.y)]), steps(data.test.y)
    label = int(np.bincount(seen).argmax())
    majority = classification_metrics(truth, np.full_like(truth, label)) | {"label": data.label_names[label]}
    versus = {"metric": "macro_f1", "model": test["macro_f1"], "best_baseline": "majority",
              "best_baseline_value": majority["macro_f1"], "beaten": test["macro_f1"] > majority["macro_f1"]}
    absent = sorted(set(np.unique(seen).tolist()) - set(np.unique(truth).tolist()))
    out = {"baselines": {"majority": majority}, "versus_baselines": versus}
    return out | ({"labels_not_in_test": [data.label_names[i] for i in absent]} if absent else {})


def baseline_forecasts(data: SequenceData) -> dict[str, np.ndarray] | None:
    """Each baseline's test forecasts (None for classification and tagging), made once and kept on `data`:
    fitting ETS and Theta to every test history takes seconds (12 s for M1's 181 series), so `gru train`
    makes them before it plans its epochs (the time budget then counts them) and an ensemble's members
    share them. Regression baselines fit on every training series, the validation split included."""
    if data.baseline_forecasts is None and data.task in ("forecast", "regression"):
        data.baseline_forecasts = forecast_baselines(data) if data.task == "forecast" else \
            regression_baselines(merge(data.train, data.val, data.task), data.test)
    return data.baseline_forecasts


def _metrics(data: SequenceData, rows: np.ndarray, forecast: np.ndarray) -> dict[str, Any]:
    """A forecast's test metrics over the windows `rows`."""
    pick = lambda a: None if a is None else a[rows]  # noqa: E731
    return forecast_metrics(data.test.y[rows], forecast[rows], pick(data.test_mase_scale),
                            pick(data.test_series))


def _without(keys: tuple[str, ...], metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k not in keys}


def forecast_baselines(data: SequenceData) -> dict[str, np.ndarray]:
    """(test windows, horizon) forecasts per baseline."""
    assert data.test_history is not None and data.test_naive is not None, "forecast data carry histories"
    horizon, season = data.test.y.shape[1], data.seasonal_period or 1
    out = {"naive": np.stack([np.repeat(h[-1], horizon) for h in data.test_history])}
    if season > 1:
        out["seasonal_naive"] = data.test_naive  # at data.seasonal_period
    windows = len(data.test_history)
    fitted = np.unique(np.linspace(0, windows - 1, min(windows, MAX_FITTED)).round().astype(int))
    for name, method in (("ets", _ets), ("theta", _theta)):
        out[name] = np.full((windows, horizon), np.nan, np.float32)
        out[name][fitted] = np.stack([_fitted(method, data.test_history[i], season, horizon) for i in fitted])
    return out


def _fitted(method: Callable[[np.ndarray, int, int], np.ndarray], history: np.ndarray, season: int,
            horizon: int) -> np.ndarray:
    """A statsmodels forecast, quiet about convergence; a history too short for the method: naive."""
    recent = history[-max(FITTED_HISTORY, 20 * season):]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return np.asarray(method(recent.astype(np.float64), season, horizon), dtype=np.float32)
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
