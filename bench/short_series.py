"""Where a forecast's correction cannot be judged, what its start answers: short series, each alone.

A forecast without a season whose validation windows are too few to judge the GRU's correction
(training/defaults.py, `choose_start`) answers its start. This compares the starts on public series
this project never trained on, each written alone to a long CSV and read by `gru train`'s own loader with
its defaults (window, horizon, rolling-origin test over the last 20 %): the training mean (the start
before the skip: each window's level times the training windows' mean ratio of target to level), the
naive, the naive with half the window's drift (the default, model.drift=0.5) and the whole drift. Test
MASE, the mean over each group's series. Only series the rule applies to are counted. The product's
answer at its defaults equals the "half drift" column where the correction is dropped
(tests/training/test_user_files_round3.py asserts it on a Nile-like series).

    python -m bench.short_series   # M1 yearly, fertility, Danish, Longley, macrodata, Nile, ShampooSales
                                   # (the bench extra), then macrodata and Uschange whole
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from training.starts import DRIFTS, STARTS, forecasts, training_ratio


def series() -> Iterator[tuple[str, np.ndarray]]:
    """(group, values): every series of the groups, each to be forecast alone."""
    from aeon.datasets import load_forecasting
    from statsmodels.datasets import danish_data, fertility, grunfeld, longley, macrodata, nile

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
    firms = grunfeld.load_pandas().data
    for _, firm in firms.groupby("firm"):
        for column in ("invest", "value", "capital"):
            yield "Grunfeld's 11 firms, 20 years", firm.sort_values("year")[column].to_numpy(np.float64)
    yield "Nile", nile.load_pandas().data["volume"].to_numpy(np.float64)
    yield "ShampooSales", _shampoo()


def _shampoo() -> np.ndarray:
    from bench.quality import _series

    return _series("ShampooSales")[1]


def scores(values: np.ndarray, folder: Path) -> dict[str, Any] | None:
    """Each start's test MASE on one series alone, the start `gru train` chose ("chosen") and whether
    its validation windows could judge a correction ("judged"); None where the choice does not apply
    (a season, a final fit)."""
    from training.config import load_config
    from training.data.forecast import forecast_from_files
    from training.defaults import choose_final_fit, choose_start
    from training.shrink import least_to_judge

    path = folder / "series.csv"
    pd.DataFrame({"t": np.arange(len(values)), "y": values}).to_csv(path, index=False)
    config = load_config(None, ["data.dataset=file", f"data.path={path}", "data.task=forecast",
                                "data.time_column=t", "data.target_column=y"])
    data = forecast_from_files(config.data)
    final_fit, _ = choose_final_fit(config, data.task, len(data.train) + len(data.val))
    chosen: dict[str, Any] = {}
    if not choose_start(config, chosen, data, final_fit):
        return None
    scale = np.asarray(data.test_mase_scale).reshape(-1, 1)
    made = forecasts(data.test, training_ratio(data), data.window_scaling)
    row: dict[str, Any] = {name: float((np.abs(f - data.test.y) / scale).mean()) for name, f in made.items()}
    start = next((name for name, drift in DRIFTS.items() if drift == chosen.get("model.drift")), "mean")
    judged = len(data.val) >= least_to_judge(data.output_size - 1)
    return {**row, "chosen": row[start], "start": start, "judged": judged}


def long_series() -> Iterator[tuple[str, np.ndarray]]:
    """Series long enough for validation windows that judge a correction (and so choose the start)."""
    from aeon.datasets import load_uschange
    from statsmodels.datasets import macrodata

    macro = macrodata.load_pandas().data
    for column in ("realgdp", "realcons", "realinv", "realgovt", "realdpi", "cpi", "m1", "tbilrate", "unemp",
                   "pop"):
        yield f"macrodata {column}", macro[column].to_numpy(np.float64)
    for i, row in enumerate(load_uschange(return_array=True)):
        yield f"Uschange row {i}", np.asarray(row, np.float64)


def table(rows: list[dict[str, Any]], key: str) -> None:
    columns = [*STARTS, "chosen"]
    print(f"| {key} | count | " + " | ".join(columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for group, frame in pd.DataFrame(rows).groupby("group", sort=False):
        means = frame[columns].mean()
        best = means[list(STARTS)].idxmin()
        cells = [f"**{means[c]:.3f}**" if c == best else f"{means[c]:.3f}" for c in columns]
        print(f"| {group} | {len(frame)} | " + " | ".join(cells) + " |")


def main() -> None:
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as folder:
        short = [{"group": group, **row} for group, values in series()
                 if (row := scores(values, Path(folder))) is not None and not row["judged"]]
        judged = [{"group": name, **row} for name, values in long_series()
                  if (row := scores(values, Path(folder))) is not None and row["judged"]]
    table(short, "too few validation windows: each alone")
    print()
    table(judged, "validation windows that judge: the start chosen on them")
    print("\nchosen: " + ", ".join(f"{row['group']} {row['start']}" for row in judged))


if __name__ == "__main__":
    main()
