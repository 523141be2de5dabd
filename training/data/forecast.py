"""Forecasting from the user's long-format file(s) (`data.task: forecast`; docs/guides/forecasting.md).

A file needs the step and the target column (`data.target_column`), and the series id where it holds
several series (without an id column the file is one series); nothing else.
any other columns (or those listed in `data.feature_columns`) are extra inputs, read over the same past
window. The model reads the last `window` steps and forecasts the target's next `horizon` values.

Evaluation, by rolling origin: with `data.test_path` the test file holds the later steps of the same
series (the same ids); otherwise the last `data.test_fraction` of each series is held out. Forecasts
start at origins spread over the held-out part (every step, at most MAX_ORIGINS per series, evenly
spaced), each from the actual history before it, `horizon` steps each, all inside the held-out part.
Training and validation windows come from the part before it only. MASE divides each series' errors
by the in-sample seasonal-naive MAE of that part.

Unless set: the seasonal period is found from the part before the test (training/data/season.py), the
horizon is HORIZON and the window max(MIN_WINDOW, 2 periods); a short series gets a shorter horizon (its
held-out part) and window (half of its values before the horizon, where the default leaves it under
MIN_FIT windows), so that it trains rather than fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.config import DataConfig
from training.data.dataset import SequenceData, Split
from training.data.long import (
    MAX_SPACING,
    by_name,
    feature_columns,
    in_time_order,
    long_to_series,
    one_series,
    read_table,
    show,
    spaced,
)
from training.data.season import find_period
from training.data.windows import fit_windows, seasonal_mae, seasonal_naive

MAX_ORIGINS, HORIZON, MIN_WINDOW = 24, 12, 24
MIN_FIT = 10  # windows the shortest series must give before a default window is cut to fit it


def forecast_from_files(config: DataConfig) -> SequenceData:
    path = Path(config.path or "")
    ids, series, inputs, steps, assumed = _read(path, config)
    if config.test_path:
        series, starts = _continued(ids, series, inputs, steps, Path(config.test_path), config)
        held = f"the later steps in {config.test_path}"
    else:
        starts = [len(v) - max(1, round(len(v) * config.test_fraction)) for v in series]
        held = f"the last {config.test_fraction:.0%} of each series"
    before = [values[:start] for values, start in zip(series, starts, strict=True)]
    season, how = _season(before, config)
    horizon, horizon_why = _horizon(config, series, starts)
    window, window_why = _window(config, season, horizon, starts)
    _check_lengths(ids, series, starts, window, horizon,
                   f"data.seasonal_period={season}" if config.window is None and window >= season > 1 else "")
    train, val = fit_windows(before, 0, window, horizon, config.val_fraction)
    test, naive, scale, history, which = _rolling_origin(series, starts, window, horizon, season)
    return SequenceData(
        task="forecast", train=train, val=val, test=test, feature_names=inputs,
        window_scaling=_levels_positive(series, window),
        seasonal_period=season, test_naive=naive, test_mase_scale=scale, test_history=history,
        test_series=which,
        source=f"user file {path}, rolling-origin test over {held}",
        notes=[*assumed,
               f"data.seasonal_period={season} ({how})",
               f"data.window={window}{window_why}, data.horizon={horizon}{horizon_why}",
               f"test: rolling origin, {len(test)} window{'s' * (len(test) != 1)} of {horizon} steps from "
               f"{len(series)} series "
               f"over {held} (at most {MAX_ORIGINS} origins per series)"],
    )


def _read(path: Path, config: DataConfig
          ) -> tuple[np.ndarray, list[np.ndarray], list[str], list[np.ndarray], list[str]]:
    """Series ids, each series' (T_i, F) values with the target first, the input names, each series'
    steps, and what was assumed of the file (long.one_series)."""
    if path.suffix.lower() == ".npz":
        raise ValueError(f"{path}: for data.task forecast write a long-format CSV or Parquet file "
                         "(series id, step, target, optional extra columns)")
    frame = read_table(path, ids=config.id_column)
    assumed = one_series(frame, config, path)
    extra = feature_columns(frame, config, path, needed=False)
    inputs = [config.target_column] + [c for c in extra if c != config.target_column]
    long = long_to_series(frame, config, path, inputs, target=None)
    return (long.ids, [x[:n] for x, n in zip(long.X, long.lengths, strict=True)], inputs, long.steps,
            assumed)


def _continued(ids: np.ndarray, series: list[np.ndarray], inputs: list[str], steps: list[np.ndarray],
               test_path: Path, config: DataConfig) -> tuple[list[np.ndarray], list[int]]:
    """Each series followed by its later steps from the test file; where the test part starts."""
    test_ids, later, test_inputs, test_steps, _ = _read(test_path, config)
    order = by_name(test_inputs, inputs)
    if order is not None:
        later, test_inputs = [values[:, order] for values in later], inputs
    if test_inputs != inputs:
        raise ValueError(f"{test_path} has columns {test_inputs} but {config.path} has {inputs}; the "
                         "test file needs the same columns")
    position = {key: i for i, key in enumerate(ids.tolist())}
    unknown = [key for key in test_ids.tolist() if key not in position]
    if unknown:
        raise ValueError(f"{test_path}: series {show(unknown[0])} is not in {config.path}; for forecasting "
                         "the test file holds the later steps of the training file's series (same ids)")
    joined, starts = list(series), [len(values) for values in series]
    for key, values, first in zip(test_ids.tolist(), later, test_steps, strict=True):
        i = position[key]
        _check_follows(steps[i], first[0], key, test_path, config)
        joined[i] = np.concatenate([series[i], values])
    return joined, starts


def _check_follows(steps: np.ndarray, first: object, key: object, test_path: Path,
                   config: DataConfig) -> None:
    """The test file's first step of a series is the training file's next one: after its last (no step
    twice), and for integer steps at the series' spacing (no step missing between the files)."""
    last = steps[-1]
    order = in_time_order(pd.Series([last, first], name=config.time_column)).to_numpy()
    whole = all(isinstance(v, (int, np.integer)) for v in (last, first))
    spacing = int(np.diff(steps.astype(np.int64)).min()) if whole and len(steps) > 1 else None
    if order[1] > order[0] and (spacing is None or first == last + spacing) and _near(steps, first, config):
        return
    expected = f"{show(last + spacing)}, " if spacing is not None else "a step "
    raise ValueError(f"{test_path}: series {show(key)} starts at {config.time_column} {show(first)}, but "
                     f"{config.path} ends it at {show(last)}; the test file holds the steps after the "
                     f"training file's, from {expected}with no step in both and none missing between them")


def _near(steps: np.ndarray, first: object, config: DataConfig) -> bool:
    """Dates and fractional steps: the test file's first within MAX_SPACING x the training steps' spacing
    of their last, as within a file (long._check_spacing). Before, a month missing between a training file
    and its test file went unseen."""
    values = spaced(in_time_order(pd.Series([*steps, first], name=config.time_column)))
    if values is None or len(steps) < 2 or all(isinstance(v, (int, np.integer)) for v in (steps[-1], first)):
        return True
    return bool(values[-1] - values[-2] <= MAX_SPACING * np.diff(values[:-1]).min())


def _horizon(config: DataConfig, series: list[np.ndarray], starts: list[int]) -> tuple[int, str]:
    """data.horizon, or HORIZON where every held-out part is that long, else the shortest of them."""
    if config.horizon:
        return config.horizon, ""
    held = [len(values) - start for values, start in zip(series, starts, strict=True) if start < len(values)]
    if not held or min(held) >= HORIZON:
        return HORIZON, " (auto)"
    return max(1, min(held)), f" (auto: the shortest held-out part; {HORIZON} where each is that long)"


def _window(config: DataConfig, season: int, horizon: int, starts: list[int]) -> tuple[int, str]:
    """data.window, or max(MIN_WINDOW, 2 periods); where that leaves the shortest series fewer than
    MIN_FIT windows to learn from, half of its values before the horizon (at least one period)."""
    if config.window:
        return config.window, ""
    window, shortest = max(MIN_WINDOW, 2 * season), min(starts)
    if shortest - horizon - window + 1 >= MIN_FIT:
        return window, f" (auto: max({MIN_WINDOW}, 2 x period))"
    cut = max(season, (shortest - horizon) // 2, 1)
    return cut, (f" (auto: max({MIN_WINDOW}, 2 x period) = {window} leaves the shortest series, {shortest} "
                 f"values before its test part, under {MIN_FIT} windows: half of its values before the "
                 "horizon)")


def _season(before: list[np.ndarray], config: DataConfig) -> tuple[int, str]:
    if config.seasonal_period is not None:
        return config.seasonal_period, "data.seasonal_period, as set"
    period, how = find_period([values[:, 0] for values in before])
    return period, f"auto: {how}"


def _levels_positive(series: list[np.ndarray], window: int) -> bool:
    """Window scaling (each window divided by its mean level: a series whose swings grow with its level,
    like sunspots' cycles) where that level is positive in every window: no negative target and no
    `window` zeros in a row."""
    def lowest_level(target: np.ndarray) -> float:
        return float(np.convolve(target, np.ones(window) / window, mode="valid").min())

    return all(float(v[:, 0].min()) >= 0 and lowest_level(v[:, 0]) > 0 for v in series)


def _check_lengths(ids: np.ndarray, series: list[np.ndarray], starts: list[int], window: int,
                   horizon: int, window_from: str) -> None:
    """`window_from`: the setting the default window was derived from, if one ("": none)."""
    for key, values, start in zip(ids.tolist(), series, starts, strict=True):
        if start < window + horizon:
            derived = f" (the window {window} follows from {window_from})" if window_from else ""
            settings = "data.window, data.horizon or data.seasonal_period" if window_from else \
                "data.window or data.horizon"
            raise ValueError(f"series {show(key)} has {start} values before its test part, fewer than "
                             f"data.window + data.horizon = {window + horizon}{derived}; lower {settings}, "
                             "or give longer series")
        if start < len(values) and len(values) - start < horizon:
            raise ValueError(f"series {show(key)} has {len(values) - start} held-out values, fewer than "
                             f"data.horizon = {horizon}; raise data.test_fraction or lower data.horizon")
    if all(start == len(values) for values, start in zip(series, starts, strict=True)):
        raise ValueError("no series has a test part: the test file holds no later steps")


def _rolling_origin(
    series: list[np.ndarray], starts: list[int], window: int, horizon: int, season: int
) -> tuple[Split, np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """The test windows (inputs, targets), their seasonal-naive forecasts, MASE scales, the target's
    history before each origin and each window's series."""
    xs, ys, naive, scale, history, which = [], [], [], [], [], []
    for i, (values, start) in enumerate(zip(series, starts, strict=True)):
        last = len(values) - horizon  # the last origin whose horizon ends inside the series
        if last < start:
            continue
        origins = np.unique(np.linspace(start, last, min(MAX_ORIGINS, last - start + 1)).round().astype(int))
        in_sample = seasonal_mae(values[:start, 0], season)
        for origin in origins:
            xs.append(values[origin - window : origin])
            ys.append(values[origin : origin + horizon, 0])
            naive.append(seasonal_naive(values[:origin, 0], season, horizon))
            scale.append(in_sample)
            history.append(values[:origin, 0])
            which.append(i)
    stack = lambda rows: np.stack(rows).astype(np.float32)  # noqa: E731
    return Split(stack(xs), stack(ys)), stack(naive), np.array(scale, np.float32), history, np.array(which)
