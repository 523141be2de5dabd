"""A forecaster from a user's file, end to end: yearly sunspots (statsmodels, 309 values) written as a
target-only long CSV -> `gru train` (the period found from the data, rolling-origin test, baselines)
-> `gru export` -> `gru serve` -> every rolling-origin test window in one request: served as task
`forecast` everywhere, and the served forecasts score what training reported."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from gru_cli import main
from tests.helpers import Server
from training.config import DataConfig
from training.data import load_data


def _sunspots_csv(path: Path) -> Path:
    from statsmodels.datasets import sunspots

    frame = sunspots.load_pandas().data
    pd.DataFrame({"series_id": "sun", "step": frame["YEAR"].astype(int),
                  "sunactivity": frame["SUNACTIVITY"]}).to_csv(path, index=False)
    return path


def test_target_only_forecast_csv_trains_exports_serves_as_forecast(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture) -> None:
    data = ["--set", "data.dataset=file", "--set", f"data.path={_sunspots_csv(tmp_path / 'sun.csv')}",
            "--set", "data.task=forecast", "--set", "data.target_column=sunactivity"]
    code = main(["train", "--name", "sun", "--run-dir", str(tmp_path / "runs"), "--no-progress",
                 "--max-epochs", "3", *data, "--set", "model.hidden_size=16", "--set", "optim.plots=false",
                 "--set", "optim.tensorboard=false"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "data.seasonal_period=11 (auto: autocorrelation" in printed and "task forecast" in printed
    assert "test: rolling origin, 24 windows of 12 steps" in printed
    reported = json.loads((tmp_path / "runs" / "sun" / "test_metrics.json").read_text())
    assert set(reported["baselines"]) == {"naive", "seasonal_naive", "ets", "theta"}
    assert reported["seasonal_period"] == 11 and "mape" not in reported  # sunspot minima are near 0
    assert "near zero" in reported["mape_omitted"]
    assert main(["export", "--checkpoint", str(tmp_path / "runs" / "sun" / "checkpoint.pt"),
                 "--repository", str(tmp_path / "models"), "--name", "sun"]) == 0
    test = load_data(DataConfig.model_validate({"dataset": "file", "path": str(tmp_path / "sun.csv"),
                                                "task": "forecast", "target_column": "sunactivity"})).test
    server = Server(tmp_path / "models").start()
    try:
        body = {"sequences": test.X.tolist()}  # every test window, one request
        answer = httpx.post(f"{server.url}/models/sun/predict", json=body, timeout=30)
        listed = httpx.get(f"{server.url}/models").json()["models"]
        config = httpx.get(f"{server.url}/v2/models/sun/config").json()
        short = httpx.post(f"{server.url}/models/sun/predict", json={"sequences": [test.X[0, 12:].tolist()]})
        v2_short = httpx.post(f"{server.url}/v2/models/sun/infer", json={"inputs": [
            {"name": "x", "shape": [1, 12, 1], "datatype": "FP32", "data": test.X[0, 12:, 0].tolist()}]})
    finally:
        server.stop()
    assert answer.status_code == 200, answer.text
    assert listed == [{"name": "sun", "version": 1, "task": "forecast", "provider": "CPUExecutionProvider"}]
    assert config["parameters"]["task"] == {"string_value": "forecast"}
    served = np.array([p["forecast"] for p in answer.json()["predictions"]])
    assert served.shape == (24, 12)
    assert np.abs(served - test.y).mean() == pytest.approx(reported["mae"], rel=1e-5)
    manifest = json.loads((tmp_path / "models" / "sun" / "1" / "manifest.json").read_text())
    assert manifest["task"] == "forecast" and manifest["inputs"]["features"] == ["sunactivity"]
    assert manifest["streaming"]["supported"] is False and manifest["streaming"]["reason"]
    # it reads windows of 24 (max(24, 2 x 11)): 12 values are refused, not answered from nothing learnt
    assert manifest["inputs"]["min_length"] == 24 and test.X.shape[1] == 24
    assert short.status_code == 422 and short.json()["error"]["field"] == "sequences[0]"
    assert "sequences[0] has 12 steps; this model accepts 24 to" in short.json()["error"]["message"]
    assert v2_short.status_code == 400
    assert "x has 12 steps; this model accepts 24 to" in v2_short.json()["error"]
