"""Forecasting from user files: target-only files, the rolling-origin test, a test file that continues
the series, the period found from the data (or set), and the errors that say what to change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.config import DataConfig
from training.data import load_data
from training.data.season import find_period


def _sunspots() -> np.ndarray:
    from statsmodels.datasets import sunspots

    return sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(np.float32)  # as training reads it


def _write(path: Path, series: dict[str, np.ndarray], start: int = 0, **extra: np.ndarray) -> Path:
    frames = [pd.DataFrame({"series_id": key, "step": np.arange(start, start + len(values)), "value": values,
                            **{name: column[key] for name, column in extra.items()}})
              for key, values in series.items()]
    pd.concat(frames).to_csv(path, index=False)
    return path


def _config(path: Path, **changes) -> DataConfig:
    return DataConfig(dataset="file", path=str(path), task="forecast", target_column="value", **changes)


def test_periods_found_from_the_data() -> None:
    from aeon.datasets import load_airline

    assert find_period([_sunspots()[:247]])[0] == 11  # the solar cycle, on the first 80 %
    assert find_period([np.asarray(load_airline(), np.float64)])[0] == 12
    rng = np.random.default_rng(0)
    assert find_period([rng.normal(size=300)])[0] == 1  # noise: not seasonal
    assert find_period([np.cumsum(rng.normal(size=300))])[0] == 1  # a random walk neither


def test_a_daily_cycle_whose_second_turn_lies_past_a_third_of_the_series() -> None:
    """Half-hourly output of a solar panel over 4.8 days (zero at night): a strong daily cycle of 48 steps
    whose second turn (lag 96) lies past the longest period considered (77); Bartlett's error hides the
    first turn, so the cycle rule must see the second."""
    rng = np.random.default_rng(0)
    steps = np.arange(231)
    day = np.clip(np.sin(2 * np.pi * steps / 48), 0, None) * np.repeat(rng.uniform(0.7, 1.3, 5), 48)[:231]
    period, why = find_period([day + 0.05 * rng.normal(size=231)])
    assert period == 48 and why.startswith("a cycle:") and "again at lag 9" in why


def _wandering_cycle(rng: np.random.Generator, n: int = 91) -> np.ndarray:
    """Turns of 8-12 steps and random heights, plus noise: a cycle without a fixed season (as lynx's)."""
    turns = []
    while sum(len(t) for t in turns) < n:
        steps = int(rng.integers(8, 13))
        turns.append(rng.uniform(0.5, 1.5) * np.sin(2 * np.pi * np.arange(steps) / steps))
    return np.concatenate(turns)[:n] + 0.3 * rng.normal(size=n)


def test_a_wandering_cycle_is_found_and_noise_never_makes_one() -> None:
    rng = np.random.default_rng(0)
    found = [find_period([_wandering_cycle(rng)]) for _ in range(20)]
    assert sum(9 <= p <= 11 for p, _ in found) >= 10 and all(p == 1 or 8 <= p <= 12 for p, _ in found)
    assert any(why.startswith("a cycle: autocorrelation") for _, why in found)
    for n in (60, 91, 300):  # white noise, random walks, AR(1): no cycle, whatever the length
        for _ in range(20):
            noise = rng.normal(size=n)
            ar1 = np.zeros(n)
            for t in range(1, n):
                ar1[t] = 0.8 * ar1[t - 1] + noise[t]
            assert [find_period([x])[0] for x in (noise, np.cumsum(noise), ar1)] == [1, 1, 1]


def test_target_only_file_gives_a_rolling_origin_test_over_the_last_part(tmp_path: Path) -> None:
    values = _sunspots()
    data = load_data(_config(_write(tmp_path / "sun.csv", {"sun": values})))
    assert data.task == "forecast" and data.feature_names == ["value"] and data.seasonal_period == 11
    assert data.test.X.shape == (24, 24, 1) and data.test.y.shape == (24, 12)  # 51 origins, 24 kept
    held = len(values) - round(0.2 * len(values))  # 247: nothing after it is trained on
    assert max(data.train.y.max(), data.val.y.max()) <= values[:held].max()
    np.testing.assert_array_equal(data.test.y[0], values[held : held + 12])  # the first origin
    np.testing.assert_array_equal(data.test.y[-1], values[-12:])  # the last one ends the series
    np.testing.assert_array_equal(data.test.X[-1, :, 0], values[-36:-12])  # the actual history before it
    assert data.test_history is not None and len(data.test_history[-1]) == len(values) - 12
    assert any("data.seasonal_period=11 (auto" in note for note in data.notes)


def test_the_period_can_be_set_and_extra_columns_are_inputs(tmp_path: Path) -> None:
    values = _sunspots()
    path = _write(tmp_path / "sun.csv", {"sun": values}, year=pd.Series({"sun": np.arange(len(values))}))
    data = load_data(_config(path, seasonal_period=12, window=30, horizon=6))
    assert data.seasonal_period == 12 and data.feature_names == ["value", "year"]
    assert data.test.X.shape[1:] == (30, 2) and data.test.y.shape[1] == 6


def test_test_file_holds_the_later_steps_of_the_same_series(tmp_path: Path) -> None:
    values = _sunspots()
    train = _write(tmp_path / "train.csv", {"sun": values[:250]})
    test = _write(tmp_path / "test.csv", {"sun": values[250:]}, start=250)
    data = load_data(_config(train, test_path=str(test)))
    np.testing.assert_array_equal(data.test.y[0], values[250:262])
    np.testing.assert_array_equal(data.test.X[0, :, 0], values[226:250])
    assert "later steps in" in data.source and max(data.train.y.max(), data.val.y.max()) <= values[:250].max()
    stranger = _write(tmp_path / "other.csv", {"moon": values[250:]}, start=250)
    with pytest.raises(ValueError, match=r"series 'moon' is not in .*later steps of the training file"):
        load_data(_config(train, test_path=str(stranger)))


@pytest.mark.parametrize(("changes", "message"), [
    ({"window": 240}, r"series 'sun' has 247 values before its test part, fewer than data.window \+ data"),
    ({"horizon": 70}, r"series 'sun' has 62 held-out values, fewer than data.horizon = 70; raise data.test_"),
    ({"seasonal_period": 300},
     r"data.horizon = 312 \(the window 300 follows from data.seasonal_period=300\); lower data.window, "
     r"data.horizon or data.seasonal_period"),
])
def test_series_too_short_for_the_settings_say_what_to_change(tmp_path: Path, changes: dict,
                                                              message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_data(_config(_write(tmp_path / "sun.csv", {"sun": _sunspots()}), **changes))


def test_a_short_series_gets_a_horizon_and_window_that_fit_it(tmp_path: Path) -> None:
    """36 monthly values (as shampoo sales): the defaults (window 24, horizon 12) need more than the 29
    values before the test part; they shrink to fit, with the reason, instead of refusing the file."""
    values = 100 + np.cumsum(np.random.default_rng(0).normal(size=36)).astype(np.float32)
    data = load_data(_config(_write(tmp_path / "short.csv", {"shop": values})))
    assert data.test.X.shape[1:] == (11, 1) and data.test.y.shape[1] == 7  # half of 29 - 7; the last 7
    np.testing.assert_array_equal(data.test.y[-1], values[-7:])
    assert len(data.train) + len(data.val) == 29 - 7 - 11 + 1
    notes = " ".join(data.notes)
    assert "data.window=11 (auto: max(24, 2 x period) = 24 leaves the shortest series, 29 values" in notes
    assert "data.horizon=7 (auto: the shortest held-out part" in notes
    set_by_user = load_data(_config(tmp_path / "short.csv", window=6, horizon=3))
    assert set_by_user.test.X.shape[1:] == (6, 1) and set_by_user.test.y.shape[1] == 3


def test_a_file_without_an_id_column_is_one_series(tmp_path: Path) -> None:
    """Most forecasting data comes as one series per file: timestamps and values, no id column."""
    values = _sunspots()
    stamps = pd.date_range("1700-01-01", periods=len(values), freq="YS").astype(str)
    path = tmp_path / "sun.csv"
    pd.DataFrame({"year": stamps, "value": values}).to_csv(path, index=False)
    data = load_data(_config(path, time_column="year"))
    assert data.seasonal_period == 11 and data.test.y.shape == (24, 12)
    np.testing.assert_array_equal(data.test.y[-1], values[-12:])
    assert "data: no 'series_id' column in sun.csv: the file is one series" in data.notes
