"""Where a forecast's correction cannot be judged, what its start answers: short series, each alone.

A forecast without a season whose validation windows are too few to judge the GRU's correction
(training/defaults.py, `choose_naive_skip`) answers its start. This compares the starts on public series
this project never trained on, each written alone to a long CSV and read by `gru train`'s own loader with
its defaults (window, horizon, rolling-origin test over the last 20 %): the training mean (the start
before the skip: each window's level times the training windows' mean ratio of target to level), the
naive, the naive with half the window's drift (the default, model.drift=0.5) and the whole drift. Test
MASE, the mean over each group's series. Only series the rule applies to are counted. The product's
answer at its defaults equals the "half drift" column where the correction is dropped
(tests/training/test_user_files_round3.py asserts it on a Nile-like series).

    python -m bench.short_series            # M1 yearly, fertility, Danish, Longley, macrodata, Nile, shampoo
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

STARTS = ("mean", "naive", "half drift", "drift")


def series() -> Iterator[tuple[str, np.ndarray]]:
    """(group, values): every series of the groups, each to be forecast alone."""
    from aeon.datasets import load_forecasting
    from statsmodels.datasets import danish_data, fertility, longley, macrodata, nile

    for values in load_forecasting("m1_yearly_dataset")["series_value"]:
        yield "M1 yearly", np.asarray(values, np.float64)
    rates = fertility.load_pandas().data
    years = [c for c in rates.columns if c.isdigit()]
    for row in rates[years].to_numpy(np.float64):
        if np.isfinite(row).sum() >= 15:
            yield "fertility", row[np.isfinite(row)]
    for name, frame in (("Danish", danish_data.load_pandas().data), ("Longley", longley.load_pandas().data)):
        for column in frame.columns.drop("YEAR", errors="ignore"):
            yield name, frame[column].to_numpy(np.float64)
    macro = macrodata.load_pandas().data
    for column in ("realgdp", "realcons", "realinv", "cpi", "m1", "pop", "unemp"):
        yield "macrodata, last 60 quarters", macro[column].to_numpy(np.float64)[-60:]
    yield "Nile", nile.load_pandas().data["volume"].to_numpy(np.float64)
    yield "ShampooSales", _shampoo()


def _shampoo() -> np.ndarray:
    from bench.quality import _series

    return _series("ShampooSales")[1]


def starts(X: np.ndarray, lengths: np.ndarray, ratio: np.ndarray, scaled: bool) -> dict[str, np.ndarray]:
    """Each start's forecasts (N, H) from windows X (N, T, F), target first."""
    last = X[np.arange(len(X)), lengths - 1, 0]
    level = np.array([X[i, :n, 0].mean() for i, n in enumerate(lengths)]) if scaled else np.ones(len(X))
    ahead = np.arange(1, len(ratio) + 1)
    drift = ((last - X[:, 0, 0]) / np.maximum(lengths - 1, 1))[:, None] * ahead
    naive = np.repeat(last[:, None], len(ratio), axis=1)
    return {"mean": level[:, None] * ratio, "naive": naive, "half drift": naive + drift / 2,
            "drift": naive + drift}


def scores(values: np.ndarray, folder: Path) -> dict[str, float] | None:
    """Each start's test MASE on one series alone, or None where the rule does not apply."""
    from training.config import load_config
    from training.data.forecast import forecast_from_files
    from training.defaults import choose_final_fit, choose_naive_skip

    path = folder / "series.csv"
    pd.DataFrame({"t": np.arange(len(values)), "y": values}).to_csv(path, index=False)
    config = load_config(None, ["data.dataset=file", f"data.path={path}", "data.task=forecast",
                                "data.time_column=t", "data.target_column=y"])
    data = forecast_from_files(config.data)
    final_fit, _ = choose_final_fit(config, data.task, len(data.train) + len(data.val))
    if not choose_naive_skip(config, {}, data, final_fit):
        return None
    train, test = data.train, data.test
    level = starts(train.X, train.lengths, np.ones(train.y.shape[1]), data.window_scaling)["mean"][:, :1]
    ratio = (train.y / level).mean(axis=0)
    scale = np.asarray(data.test_mase_scale).reshape(-1, 1)
    forecasts = starts(test.X, test.lengths, ratio, data.window_scaling)
    return {name: float((np.abs(f - test.y) / scale).mean()) for name, f in forecasts.items()}


def main() -> None:
    warnings.simplefilter("ignore")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for group, values in series():
            if (row := scores(values, Path(folder))) is not None:
                rows.append({"group": group, **row})
    table = pd.DataFrame(rows).groupby("group", sort=False)
    print("| series, each alone | count | " + " | ".join(STARTS) + " |")
    print("|---|---:|" + "---:|" * len(STARTS))
    for group, frame in table:
        means = frame[list(STARTS)].mean()
        best = means.idxmin()
        cells = [f"**{means[s]:.3f}**" if s == best else f"{means[s]:.3f}" for s in STARTS]
        print(f"| {group} | {len(frame)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
