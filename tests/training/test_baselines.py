"""Baselines beside the model's figures: a regression run's test_metrics.json and report carry the mean and
ridge on the same test series; value models start from the baseline (the mean, or the seasonal naive);
MAPE is left out, with the reason, where it would mislead."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tests.helpers import train_tiny
from training.config import ResolvedModelConfig
from training.metrics import forecast_metrics
from training.model import GRUModel


def _write_regression_csv(X: np.ndarray, y: np.ndarray, path: Path) -> str:
    frames = []
    for i, (series, target) in enumerate(zip(X, y, strict=True)):  # series: (channels, steps)
        frame = pd.DataFrame(series.T, columns=[f"channel_{c}" for c in range(series.shape[0])])
        frames.append(frame.assign(series_id=f"s{i:03d}", step=np.arange(series.shape[1]), label=target))
    pd.concat(frames).to_csv(path, index=False)
    return str(path)


def test_regression_run_reports_mean_and_ridge_beside_the_model(tmp_path: Path) -> None:
    from aeon.datasets import load_regression

    X_train, y_train = load_regression("CardanoSentiment", split="train")  # 74 x 2 channels x 24 steps
    X_test, y_test = load_regression("CardanoSentiment", split="test")
    run = train_tiny(tmp_path, "cardano", "data.dataset=file", "data.task=regression", "optim.max_epochs=2",
                     f"data.path={_write_regression_csv(X_train, y_train, tmp_path / 'train.csv')}",
                     f"data.test_path={_write_regression_csv(X_test, y_test, tmp_path / 'test.csv')}",
                     "optim.plots=false", "optim.tensorboard=false")
    metrics = json.loads((run.run_dir / "test_metrics.json").read_text())
    assert set(metrics["baselines"]) == {"mean", "ridge"}
    mean_rmse = float(np.sqrt(((y_test - y_train.mean()) ** 2).mean()))  # the official train split's mean
    assert abs(metrics["baselines"]["mean"]["rmse"] - mean_rmse) < 1e-6
    assert metrics["baselines"]["ridge"]["rmse"] < mean_rmse + 0.01  # ridge on raw steps, fitted
    versus = metrics["versus_baselines"]
    assert versus["metric"] == "rmse" and versus["model"] == metrics["rmse"]
    assert versus["best_baseline"] in ("mean", "ridge") and isinstance(versus["beaten"], bool)
    assert "both signs" in metrics["mape_omitted"] and "mape" not in metrics  # sentiment in [-0.5, 0.8]
    report = (run.run_dir / "report.md").read_text()
    assert "## Baselines (same test data, same run)" in report and "| ridge |" in report
    assert "| mean |" in report and "MAPE is not reported: targets are zero or of both signs" in report


def test_an_untrained_value_model_predicts_the_mean_or_the_seasonal_naive() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 10, 2)).astype(np.float32)
    y = rng.normal(3.0, 2.0, size=(20, 1)).astype(np.float32)
    regression = GRUModel(ResolvedModelConfig(input_size=2, hidden_size=8, task="regression", output_size=1,
                                      frontend="none", patch=1))
    regression.normaliser.fit(X, y)
    out = regression.eval().predict(torch.as_tensor(X))[0].detach().numpy()
    np.testing.assert_allclose(out, np.full_like(out, y.mean()), rtol=1e-5)
    forecaster = GRUModel(ResolvedModelConfig(input_size=1, hidden_size=8, task="forecast", output_size=5,
                                      frontend="none", patch=1, seasonal_skip=3))
    forecaster.normaliser.fit(X[:, :, :1], rng.normal(size=(20, 5)))
    lengths = torch.tensor([10, 7])  # ragged: each sequence's own last season
    out = forecaster.eval().predict(torch.as_tensor(X[:2, :, :1]), lengths)[0].detach().numpy()
    np.testing.assert_allclose(out[0], X[0, [7, 8, 9, 7, 8], 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[1], X[1, [4, 5, 6, 4, 5], 0], rtol=1e-5, atol=1e-5)
    drifting = GRUModel(ResolvedModelConfig(input_size=1, hidden_size=8, task="forecast", output_size=5,
                                            frontend="none", patch=1, seasonal_skip=1, drift=0.5,
                                            window_scaling=True))
    positive = X[:, :, :1] + 5  # a window's level divides
    drifting.normaliser.fit(positive, rng.normal(5, 1, size=(20, 5)))
    lengths = torch.tensor([10, 7, 1])  # ragged: each window's own first and last step; one step, no drift
    out = drifting.eval().predict(torch.as_tensor(positive[:3]), lengths)[0].detach().numpy()
    for i, n in enumerate(lengths.tolist()):
        last, slope = positive[i, n - 1, 0], (positive[i, n - 1, 0] - positive[i, 0, 0]) / max(n - 1, 1)
        np.testing.assert_allclose(out[i], last + 0.5 * slope * np.arange(1, 6), rtol=1e-5, atol=1e-5)


def test_mape_only_where_it_means_something() -> None:
    level = np.array([[100.0, 110.0], [90.0, 120.0]])
    assert abs(forecast_metrics(level, level * 1.1)["mape"] - 10.0) < 1e-9
    near = forecast_metrics(np.array([[100.0, 2.0]]), np.array([[100.0, 3.0]]))
    assert "mape" not in near and near["mape_omitted"].startswith("targets come near zero")
    signs = forecast_metrics(np.array([[1.0], [-1.0]]), np.zeros((2, 1)))
    assert "mape" not in signs and "both signs" in signs["mape_omitted"]
    json.dumps(signs, allow_nan=False)


def test_mape_is_decided_per_series_not_per_window() -> None:
    """A window that sits in a series' trough looks fine against its own mean; against its series' level
    it is near zero. Only the series that stay away from zero count, and the others are named."""
    trough = np.array([[1.0, 2.0], [100.0, 90.0], [200.0, 210.0], [190.0, 200.0]])  # series 0, 0, 1, 1
    series = np.array([0, 0, 1, 1])
    assert "mape_omitted" not in forecast_metrics(trough, trough * 1.1)  # per window: every window passes
    per_series = forecast_metrics(trough, trough * 1.1, series=series)
    assert abs(per_series["mape"] - 10.0) < 1e-9  # over series 1 only
    assert per_series["mape_omitted"].startswith("1 of 2 series left out: 1 where targets come near zero")


def test_the_baselines_are_made_once_per_run_and_shared_by_an_ensembles_members(tmp_path: Path,
                                                                               monkeypatch) -> None:
    """ETS and Theta on every test history take seconds: made once, before the budget plans the epochs
    (so it counts them), not once per member and again for the merged model."""
    from aeon.datasets import load_regression

    from training import baselines

    made, make = [], baselines.regression_baselines
    monkeypatch.setattr(baselines, "regression_baselines", lambda *args: made.append(1) or make(*args))
    X_train, y_train = load_regression("CardanoSentiment", split="train")
    X_test, y_test = load_regression("CardanoSentiment", split="test")
    run = train_tiny(tmp_path, "cardano2", "data.dataset=file", "data.task=regression", "optim.max_epochs=2",
                     f"data.path={_write_regression_csv(X_train, y_train, tmp_path / 'train.csv')}",
                     f"data.test_path={_write_regression_csv(X_test, y_test, tmp_path / 'test.csv')}",
                     "optim.members=2", "optim.time_budget=null", "optim.plots=false",
                     "optim.tensorboard=false")
    assert made == [1]
    merged = json.loads((run.run_dir / "test_metrics.json").read_text())
    for i in range(2):
        member = json.loads((run.run_dir / "members" / str(i) / "test_metrics.json").read_text())
        assert member["baselines"] == merged["baselines"]


def test_ets_and_theta_are_fitted_on_a_bounded_sample_and_compared_on_its_windows(tmp_path: Path,
                                                                                monkeypatch) -> None:
    """300 series of 120 steps give 3,900 rolling-origin test windows: ETS and Theta at each took ~400 s,
    more than the whole time budget. They are fitted at MAX_FITTED evenly spaced windows (here 20, to be
    quick), and the verdict compares the model with them on those windows only."""
    from training import baselines
    from training.baselines import forecast_baselines, with_baselines
    from training.config import load_config
    from training.data import load_data

    MAX_FITTED = 20
    monkeypatch.setattr(baselines, "MAX_FITTED", MAX_FITTED)
    rng = np.random.default_rng(0)
    frames = [pd.DataFrame({"series_id": f"s{i}", "step": np.arange(120),
                            "value": np.cumsum(rng.normal(0.2, 1.0, 120)) + 50}) for i in range(10)]
    pd.concat(frames).to_csv(tmp_path / "many.csv", index=False)
    data = load_data(load_config(None, ["data.dataset=file", f"data.path={tmp_path / 'many.csv'}",
                                        "data.task=forecast", "data.target_column=value"]).data)
    windows = len(data.test_history)
    assert windows > MAX_FITTED
    forecasts = forecast_baselines(data)
    fitted = ~np.isnan(forecasts["ets"]).any(axis=1)
    assert fitted.sum() == MAX_FITTED and fitted[0] and fitted[-1]  # evenly spaced, both ends
    # a "model" that answers ETS's forecast where ETS was fitted and the naive one elsewhere
    answers = np.where(fitted[:, None], forecasts["ets"], forecasts["naive"])
    test = forecast_metrics(data.test.y, answers, data.test_mase_scale, data.test_series)
    metrics = with_baselines(test, data, lambda: answers)
    assert metrics["baselines"]["ets"]["windows"] == metrics["baselines"]["theta"]["windows"] == MAX_FITTED
    assert "windows" not in metrics["baselines"]["naive"]
    versus = metrics["versus_baselines"]
    assert versus["best_baseline"] == "theta" and versus["windows"] == MAX_FITTED  # theta beats ETS here
    assert versus["model"] == metrics["baselines"]["ets"]["mase"] != test["mase"]  # on theta's windows
    assert not versus["beaten"]


def test_ets_and_theta_read_a_bounded_recent_history() -> None:
    """One series of 20,000 values: ETS took 3 s per origin on its whole history, 80 s of the 120 s budget
    before training began (the run took 181 s)."""
    from training.baselines import _fitted

    seen: list[np.ndarray] = []
    def record(history: np.ndarray, season: int, horizon: int) -> np.ndarray:
        seen.append(history)
        return np.zeros(horizon)

    for length, season in ((20000, 12), (20000, 100), (300, 12)):
        _fitted(record, np.arange(float(length)), season, 12)
    assert [len(h) for h in seen] == [1000, 2000, 300]
    assert seen[0][-1] == 19999.0  # the most recent values
