"""Missing and non-finite input values in the user's files (`data.missing`).

A NaN input would turn the first training loss into NaN, far from its cause, so inputs are checked where
they are read: infinities are always refused; NaN (an empty cell) is refused by default (`error`), or
filled within its series: `ffill` carries the last value forward (steps before the first value take the
first value), `zero` writes 0. Errors name the file, the series, the step and the feature.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MISSING = ("error", "ffill", "zero")
Locate = Callable[[int, int], str]  # (series index, step index) -> "series 'a7', step 12" for messages


def check_finite(
    X: np.ndarray, lengths: np.ndarray, features: list[str], missing: str, where: str, locate: Locate,
) -> np.ndarray:
    """X (N, T, F) zero-padded after each length -> X with NaN filled as `missing` says; raises on
    infinities, and on NaN when `missing` is `error` (or when a series has no value at all to carry)."""
    if missing not in MISSING:
        raise ValueError(f"data.missing must be one of {list(MISSING)}, got {missing!r}")
    valid = np.arange(X.shape[1])[None, :] < lengths[:, None]  # (N, T) steps inside each series
    infinite = np.isinf(X) & valid[:, :, None]
    if infinite.any():
        i, t, f = np.argwhere(infinite)[0]
        raise ValueError(f"{where}: {locate(i, t)}: {features[f]!r} is {X[i, t, f]} (infinite); "
                         "inputs must be finite numbers: fix or drop that row")
    nan = np.isnan(X) & valid[:, :, None]
    if not nan.any():
        return X
    if missing == "error":
        i, t, f = np.argwhere(nan)[0]
        raise ValueError(
            f"{where}: {locate(i, t)}: {features[f]!r} is missing (NaN); {int(nan.sum())} missing "
            "value(s) in all: fill them, or set data.missing to ffill (carry the last value forward) or zero"
        )
    X = X.copy()
    if missing == "zero":
        X[nan] = 0.0
        return X
    return _carry_forward(X, nan, valid, features, where, locate)


def _carry_forward(
    X: np.ndarray, nan: np.ndarray, valid: np.ndarray, features: list[str], where: str, locate: Locate,
) -> np.ndarray:
    """Each NaN takes its series' last earlier value; NaN before a series' first value take that value."""
    empty = ~(valid[:, :, None] & ~nan).any(axis=1)  # (N, F): a series with no value in a feature
    if empty.any():
        i, f = np.argwhere(empty)[0]
        raise ValueError(f"{where}: {locate(i, 0)}: {features[f]!r} has no value in the whole series, "
                         "so there is nothing to carry forward; set data.missing: zero or fill it")
    steps = np.arange(X.shape[1])[None, :, None]
    last = np.maximum.accumulate(np.where(nan, -1, steps), axis=1)  # (N, T, F) index of last value
    first = np.argmax(~nan & valid[:, :, None], axis=1)[:, None, :]  # (N, 1, F) first value's index
    source = np.where(last < 0, first, last)
    filled = np.take_along_axis(X, source, axis=1)
    X[nan] = filled[nan]
    return X
