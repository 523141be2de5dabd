"""Red team round 3, public data never used before, written as a user would: a weekly file whose empty
weeks were dropped (statsmodels' co2 after dropna()) and a recording whose rare label never reaches the
test part (aeon's KDD-TSAD 135: 12 anomalous steps of 7,501, all before the last 20 %)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.config import DataConfig, load_config
from training.data import load_data


def _weekly(path: Path, weeks: int = 150, drop: int | None = None) -> Path:
    stamps = pd.date_range("1958-03-29", periods=weeks, freq="7D").strftime("%Y-%m-%d")
    frame = pd.DataFrame({"date": stamps, "co2": 315 + 5 * np.sin(np.arange(weeks) / 52 * 2 * np.pi)})
    frame.drop(index=[] if drop is None else [drop]).to_csv(path, index=False)
    return path


def _forecast(path: Path, time: str = "date", target: str = "co2") -> DataConfig:
    return DataConfig(dataset="file", path=str(path), task="forecast", time_column=time, target_column=target)


def test_a_date_missing_inside_a_series_is_refused_with_the_dates_and_the_fix(tmp_path: Path) -> None:
    """Before: the dropped week was read as the next one, silently (co2: a period of 51, not 52)."""
    path = _weekly(tmp_path / "co2.csv", drop=40)
    with pytest.raises(ValueError, match=r"co2\.csv: series '\(the whole file\)' has no row between date "
                                         r"'1958-12-27' and '1959-01-10', though its rows are 7 days "
                                         r"apart elsewhere: add the missing row\(s\).*number the "
                                         r"steps 0, 1, 2"):
        load_data(_forecast(path))
    assert len(load_data(_forecast(_weekly(tmp_path / "whole.csv"))).test) > 0


def test_a_test_file_that_starts_weeks_after_the_training_file_ends_is_refused(tmp_path: Path) -> None:
    """Before: only integer steps were checked between the files; dates only had to come later."""
    frame = pd.read_csv(_weekly(tmp_path / "all.csv"))
    frame.head(100).to_csv(tmp_path / "train.csv", index=False)
    frame.iloc[103:].to_csv(tmp_path / "gap.csv", index=False)
    frame.iloc[100:].to_csv(tmp_path / "next.csv", index=False)
    config = _forecast(tmp_path / "train.csv")
    with pytest.raises(ValueError, match=r"gap\.csv: series '\(the whole file\)' starts at date "
                                         r"'1960-03-19', but .*train\.csv ends it at '1960-02-20'.*none "
                                         r"missing between them"):
        load_data(config.model_copy(update={"test_path": str(tmp_path / "gap.csv")}))
    assert len(load_data(config.model_copy(update={"test_path": str(tmp_path / "next.csv")})).test) > 0


def test_uneven_but_whole_calendars_and_sensor_clocks_still_read(tmp_path: Path) -> None:
    """Months are 28-31 days, quarters 90-92, a 64 Hz clock in ms ticks 15 or 16: none is a gap."""
    months = pd.date_range("2000-01-01", periods=60, freq="MS").strftime("%b %Y")
    pd.DataFrame({"month": months, "v": np.arange(60.0) % 12}).to_csv(tmp_path / "m.csv", index=False)
    assert len(load_data(_forecast(tmp_path / "m.csv", "month", "v")).test) > 0
    ticks = pd.Timestamp("1970-01-01") + pd.to_timedelta(np.arange(300) * 15.625, unit="ms").floor("ms")
    pd.DataFrame({"timestamp": ticks.strftime("%Y-%m-%d %H:%M:%S.%f"), "v": np.sin(np.arange(300) / 5),
                  "state": np.where(np.arange(300) % 40 < 20, "a", "b")}).to_csv(tmp_path / "s.csv",
                                                                               index=False)
    data = load_data(DataConfig(dataset="file", path=str(tmp_path / "s.csv"), task="tagging",
                                time_column="timestamp", target_column="state", window=32))
    assert data.label_names == ["a", "b"]


def test_a_fractional_step_missing_is_refused(tmp_path: Path) -> None:
    """Years written as 1871.0 (pandas writes them so from a float column: statsmodels' nile)."""
    years = np.delete(np.arange(1871.0, 1971.0), 50)
    pd.DataFrame({"year": years, "volume": np.arange(99.0)}).to_csv(tmp_path / "nile.csv", index=False)
    with pytest.raises(ValueError, match=r"has no row between year 1920\.0 and 1922\.0, though its rows are "
                                         r"1 apart elsewhere"):
        load_data(_forecast(tmp_path / "nile.csv", "year", "volume"))


def _rare_early(path: Path, steps: int = 600) -> Path:
    """One recording, 0 everywhere but a burst of 1 at 40 % of it (before validation and test)."""
    rng = np.random.default_rng(0)
    label = np.zeros(steps, dtype=int)
    label[int(0.4 * steps): int(0.4 * steps) + 6] = 1
    pd.DataFrame({"timestamp": np.arange(steps), "value": rng.normal(size=steps) + 4 * label,
                  "is_anomaly": label}).to_csv(path, index=False)
    return path


def test_a_rare_label_absent_from_the_test_steps_is_said_beside_the_majority_baseline(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Before: test accuracy 1.0 and macro_f1 1.0 with nothing else said, on a test with no anomaly."""
    from training.loop import fit

    result = fit(load_config(None, [
        "data.dataset=file", f"data.path={_rare_early(tmp_path / 'kdd.csv')}", "data.task=tagging",
        "data.time_column=timestamp", "data.target_column=is_anomaly", "data.window=32",
        f"run_dir={tmp_path}", "name=kdd", "optim.max_epochs=1", "model.hidden_size=8", "optim.plots=false",
        "optim.tensorboard=false"]))
    metrics = result.test_metrics
    assert metrics["labels_not_in_test"] == ["1"]
    assert metrics["baselines"]["majority"] == {"accuracy": 1.0, "macro_f1": 1.0, "label": "0"}
    assert metrics["versus_baselines"]["best_baseline"] == "majority"
    assert metrics["versus_baselines"]["beaten"] is False  # a tie: nothing told apart
    said = [line for line in result.diagnosis if line.startswith("no test step is labelled '1'")]
    assert said and "'0' at every test step scores accuracy 1.0000" in said[0]
    report = (tmp_path / "kdd" / "report.md").read_text()
    assert "| majority |" in report and "no test step is labelled '1'" in report


def test_a_recording_whose_test_holds_every_label_reports_the_majority_only(tmp_path: Path) -> None:
    from training.loop import fit

    path = _rare_early(tmp_path / "rec.csv", 600)
    frame = pd.read_csv(path)
    frame.loc[560:565, "is_anomaly"] = 1  # in the test part too
    frame.to_csv(path, index=False)
    result = fit(load_config(None, [
        "data.dataset=file", f"data.path={path}", "data.task=tagging", "data.time_column=timestamp",
        "data.target_column=is_anomaly", "data.window=32", f"run_dir={tmp_path}", "name=rec",
        "optim.max_epochs=1", "model.hidden_size=8", "optim.plots=false", "optim.tensorboard=false"]))
    metrics = result.test_metrics
    assert "labels_not_in_test" not in metrics
    assert metrics["baselines"]["majority"]["accuracy"] == pytest.approx(114 / 120)
    assert metrics["baselines"]["majority"]["macro_f1"] == pytest.approx(0.95 / 1.95)  # F1 of '0', 0 of '1'


def test_a_column_without_a_header_name_is_refused_not_read_as_an_input(tmp_path: Path) -> None:
    """aeon's Uschange.csv as pandas wrote it, index first: before, 'Unnamed: 0' (the row number) was an
    input the model read and every request had to send."""
    quarters = [f"{1970 + q // 4} Q{q % 4 + 1}" for q in range(80)]
    frame = pd.DataFrame({"Quarter": quarters, "Consumption": np.sin(np.arange(80.0)), "Income": 1.0})
    frame.to_csv(tmp_path / "us.csv")  # the index too, under an empty header cell
    config = _forecast(tmp_path / "us.csv", "Quarter", "Consumption")
    with pytest.raises(ValueError, match=r"us\.csv: a column has no name in the header \(read as 'Unnamed: "
                                         r"0'\).*df\.to_csv\(path, index=False\)"):
        load_data(config)
    chosen = load_data(config.model_copy(update={"feature_columns": ["Income"]}))
    assert chosen.feature_names == ["Consumption", "Income"]


def test_gru_predict_reads_a_forecast_file_as_training_did_dates_and_no_id(tmp_path: Path) -> None:
    """Train on a weekly file of dates and values (no series id, as statsmodels' co2 comes), export,
    serve, and `gru predict --file` the same layout, rows shuffled. Before: refused, no 'series_id'
    column, and its dates not numbers. The answer is the served answer to the steps in time order."""
    import json
    import subprocess
    import sys

    import httpx

    from tests.helpers import Server, train_tiny
    from training.data.long import ONE_SERIES

    path = _weekly(tmp_path / "co2.csv", weeks=120)
    result = train_tiny(tmp_path / "runs", "co2", "data.dataset=file", f"data.path={path}",
                        "data.task=forecast", "data.time_column=date", "data.target_column=co2",
                        "data.window=8", "data.horizon=2", "optim.max_epochs=1", "model.hidden_size=8",
                        "optim.plots=false", "optim.tensorboard=false")
    from export.bundle import export_checkpoint

    export_checkpoint(result.checkpoint, tmp_path / "models", "co2")
    recent = pd.read_csv(path).tail(10)
    recent.sample(frac=1.0, random_state=0).to_csv(tmp_path / "recent.csv", index=False)
    server = Server(tmp_path / "models").start()
    try:
        out = subprocess.run([sys.executable, "-m", "gru_cli", "predict", "--url", server.url, "--model",
                              "co2", "--file", str(tmp_path / "recent.csv"), "--time-column", "date"],
                             capture_output=True, text=True, timeout=60)
        direct = httpx.post(f"{server.url}/models/co2/predict", timeout=30,
                            json={"sequences": [recent["co2"].tolist()]}).json()["predictions"][0]
        (tmp_path / "text.csv").write_text("date,co2\nDec 2023,1\nJan 2024,2\n")
        refused = subprocess.run([sys.executable, "-m", "gru_cli", "predict", "--url", server.url, "--model",
                                  "co2", "--file", str(tmp_path / "text.csv"), "--time-column", "date"],
                                 capture_output=True, text=True, timeout=60)
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr
    [answer] = json.loads(out.stdout)["predictions"]
    assert answer["series_id"] == ONE_SERIES and answer["forecast"] == direct["forecast"]
    assert refused.returncode == 2
    assert "date 'Dec 2023' ... are neither numbers nor ISO dates" in refused.stderr


def test_a_series_without_season_and_few_validation_windows_answers_the_naive_with_half_its_drift(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Nile-like (100 yearly flows, no season, 9 validation windows): at defaults the dropped correction
    left the mean level (Nile: MASE 1.20 against the naive's 0.95) and `model.seasonal_skip=1` was
    overwritten by the data's 0. Then the default was the naive; now it is the naive plus half the window's
    drift (training/defaults.py: on 400 short series it beat both). A skip (0) or a drift (0) you set is
    kept, and the diagnosis says which setting to try when the naive beats the model."""
    from export.bundle import export_checkpoint
    from training.diagnose import naive_ahead
    from training.loop import fit

    flows = 900 + np.cumsum(np.random.default_rng(0).normal(0, 60, 100))
    pd.DataFrame({"year": np.arange(1871, 1971), "volume": flows}).to_csv(tmp_path / "nile.csv", index=False)
    common = ["data.dataset=file", f"data.path={tmp_path / 'nile.csv'}", "data.task=forecast",
              "data.time_column=year", "data.target_column=volume", f"run_dir={tmp_path}",
              "optim.max_epochs=2", "model.hidden_size=8", "optim.plots=false", "optim.tensorboard=false"]
    unskipped = fit(load_config(None, [*common, "name=unskipped", "model.seasonal_skip=0"]))
    mase, naive = unskipped.test_metrics["mase"], unskipped.test_metrics["baselines"]["naive"]["mase"]
    assert mase > naive and any(line.startswith(f"the naive (the last value, repeated) beats it: MASE "
                                                f"{naive:.4f} against {mase:.4f}") and
                                line.endswith("--set model.seasonal_skip=1 starts it at the naive")
                                for line in unskipped.diagnosis)
    capsys.readouterr()
    result = fit(load_config(None, [*common, "name=skip"]))  # the default: the naive with half the drift
    assert ("model.seasonal_skip=1, model.drift=0.5 (auto: not seasonal, and too few validation windows to "
            "judge a correction to a 12-step forecast (9; 13 needed)") in capsys.readouterr().out
    metrics = result.test_metrics
    assert metrics["seasonal_period"] == 1 and metrics["correction_kept"] == 0.0  # 9 windows: too few
    assert any("so the model answers the naive plus 0.5 of the window's drift;" in line  # named, not listed
               for line in result.diagnosis)
    test = load_data(load_config(None, common).data).test
    last = test.X[np.arange(len(test)), test.lengths - 1, 0]
    slope = (last - test.X[:, 0, 0]) / (test.lengths - 1)
    half_drift = last[:, None] + 0.5 * slope[:, None] * np.arange(1, 13)
    assert metrics["mae"] == pytest.approx(float(np.abs(half_drift - test.y).mean()), rel=1e-5)
    export_checkpoint(result.checkpoint, tmp_path / "models", "nile")  # the drift in the graph: parity holds
    beaten = {**metrics, "mase": metrics["baselines"]["naive"]["mase"] + 0.1}
    assert naive_ahead(beaten, 1, 0.5)[0].endswith("--set model.drift=0 starts it at the naive")
    assert naive_ahead(beaten, 1, 0.0) == naive_ahead(beaten, 4, 0.0) == []  # the naive, a season: no advice
    naive_run = fit(load_config(None, [*common, "name=naive", "model.drift=0"]))
    assert naive_run.test_metrics["mae"] == pytest.approx(metrics["baselines"]["naive"]["mae"], rel=1e-5)
    assert not any(line.startswith("the naive") for line in naive_run.diagnosis)
    with pytest.raises(ValueError, match=r"model.drift=0.5 adds the window's drift to the naive forecast "
                                         r"\(model.seasonal_skip=1\); this run's skip is 0"):
        fit(load_config(None, [*common, "name=refused", "model.seasonal_skip=0", "model.drift=0.5"]))
    with pytest.raises(ValueError, match="model.seasonal_skip adds the seasonal naive to a forecast; this "
                                         "data is classification: drop the setting"):
        fit(load_config(None, ["data.dataset=file", f"data.path={_csv_of_two_classes(tmp_path)}",
                               "data.task=classification", f"run_dir={tmp_path}", "name=cls",
                               "model.seasonal_skip=1"]))


@pytest.mark.parametrize(("shape", "skip", "drift", "start"), [
    ("trend", 1, 1.0, "the naive plus 1 of the window's drift"),
    ("level", 0, 0.0, "the training mean"),
])
def test_where_validation_windows_can_judge_the_start_is_the_one_with_the_lowest_error_on_them(
        tmp_path: Path, shape: str, skip: int, drift: float, start: str) -> None:
    """Enough validation windows (here 28 for a 12-step forecast): the start is chosen on them. Before,
    a series without a season always started at the training mean: macrodata's CPI (203 quarters)
    scored MASE 30.8 there, 2.34 from the drift it now picks (bench/short_series.py)."""
    from training.defaults import resolve

    rng = np.random.default_rng(0)
    values = {"trend": 100 + 2.0 * np.arange(200) + rng.normal(0, 1, 200),  # drifts: the drift wins
              "level": 50 + rng.normal(0, 5, 200)}[shape]  # returns to its level: the mean wins
    pd.DataFrame({"t": np.arange(200), "y": values}).to_csv(tmp_path / "s.csv", index=False)
    config = load_config(None, ["data.dataset=file", f"data.path={tmp_path / 's.csv'}", "data.task=forecast",
                                "data.time_column=t", "data.target_column=y", "data.seasonal_period=1"])
    data = load_data(config.data)
    resolved, lines = resolve(config, data)
    assert (resolved.model.seasonal_skip, resolved.model.drift) == (skip, drift)
    [line] = [line for line in lines if line.startswith("model.seasonal_skip=")]
    assert f"the start with the lowest error on the {len(data.val)} validation windows: mean " in line
    assert line.endswith(start) or f"starts at {start}," in line


def test_a_seasonal_forecasters_start_is_printed(tmp_path: Path) -> None:
    """A seasonal forecast starts at the seasonal naive (model.seasonal_skip = the period). Before, `gru
    train` printed the start of forecasts without a season only, so a newcomer's monthly file (period 12)
    never saw the skip the model answers; a skip you set prints nothing (it is yours)."""
    from training.defaults import resolve

    steps = np.arange(200)
    values = 100 + 15 * np.sin(2 * np.pi * steps / 12) + np.random.default_rng(0).normal(0, 2, 200)
    pd.DataFrame({"t": steps, "y": values}).to_csv(tmp_path / "s.csv", index=False)
    common = ["data.dataset=file", f"data.path={tmp_path / 's.csv'}", "data.task=forecast",
              "data.time_column=t", "data.target_column=y"]
    config = load_config(None, common)
    resolved, lines = resolve(config, load_data(config.data))
    assert resolved.model.seasonal_skip == 12
    assert ("model.seasonal_skip=12 (auto: the seasonal period): the model starts at the seasonal naive "
            "(the last 12 values, repeated) and answers it unless its correction is kept") in lines
    config = load_config(None, [*common, "model.seasonal_skip=0"])
    lines = resolve(config, load_data(config.data))[1]
    assert not any(line.startswith("model.seasonal_skip") for line in lines)


def test_a_forecast_whose_windows_cannot_judge_a_correction_trains_one_epoch(tmp_path: Path) -> None:
    """36 monthly values (2 validation windows for a 7-step forecast): the correction is dropped whatever
    the GRU learns, so the model answers its start. Before, the GRU trained for the whole budget."""
    from training.defaults import resolve

    values = 200 + 5 * np.arange(36) + np.random.default_rng(0).normal(0, 20, 36)
    pd.DataFrame({"t": np.arange(36), "y": values}).to_csv(tmp_path / "s.csv", index=False)
    common = ["data.dataset=file", f"data.path={tmp_path / 's.csv'}", "data.task=forecast",
              "data.time_column=t", "data.target_column=y"]
    data = load_data(load_config(None, common).data)
    resolved, lines = resolve(load_config(None, common), data)
    assert resolved.optim.max_epochs == 1 and (resolved.model.seasonal_skip, resolved.model.drift) == (1, 0.5)
    assert (f"optim.max_epochs=1 (auto: {len(data.val)} validation windows cannot judge a correction to a "
            f"{data.output_size}-step forecast") in "\n".join(lines)
    yours, _ = resolve(load_config(None, [*common, "optim.max_epochs=30"]), data)
    assert yours.optim.max_epochs == 30


def _csv_of_two_classes(tmp_path: Path) -> Path:
    rows = [{"series_id": f"s{s}", "step": t, "a": float(t * (s % 2)), "label": s % 2}
            for s in range(12) for t in range(5)]
    pd.DataFrame(rows).to_csv(tmp_path / "two.csv", index=False)
    return tmp_path / "two.csv"
