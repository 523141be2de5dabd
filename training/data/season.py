"""The seasonal period of a set of series, found from their autocorrelation (statsmodels' `acf`).

Each series loses its linear trend (a trend makes every lag look alike), then the autocorrelations of
all series are averaged, weighted by each series' length. The period is the lag of the highest local
peak from lag 2 on that stands clear of noise: above MIN_PEAK and above SIGMAS standard errors of an
autocorrelation at that lag (Bartlett's formula, n the values of all series together); where a shorter
lag peaks almost as high (HARMONIC of the best), that one: a peak at 22 is usually the second turn of
a period of 11. No such peak: period 1 (not seasonal). Yearly sunspots: 11; monthly airline: 12.
"""

from __future__ import annotations

import numpy as np

MIN_PEAK, SIGMAS, HARMONIC = 0.2, 3.0, 0.9


def find_period(series: list[np.ndarray], max_lag: int | None = None) -> tuple[int, str]:
    """The period of 1-D `series` and a line saying how it was found. `max_lag`: the longest period
    considered (default: a third of the median length, so that a window of two periods fits)."""
    from statsmodels.tsa.stattools import acf

    lengths = np.array([len(s) for s in series])
    max_lag = max_lag or int(np.median(lengths)) // 3
    if max_lag < 2:
        return 1, "series too short to look for a season"
    total, weight = np.zeros(max_lag + 1), np.zeros(max_lag + 1)
    for values in series:
        lags = min(max_lag, len(values) // 2)
        if lags < 2 or np.ptp(values) == 0:
            continue
        steps = np.arange(len(values))
        detrended = values - np.polyval(np.polyfit(steps, values, 1), steps)
        total[: lags + 1] += len(values) * acf(detrended, nlags=lags, fft=True)
        weight[: lags + 1] += len(values)
    r = np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)
    # Bartlett: var r_k = (1 + 2 sum_{j<k} r_j^2) / n
    error = np.sqrt((1 + 2 * np.r_[0.0, 0.0, np.cumsum(r[1:-1] ** 2)]) / max(1, int(lengths.sum())))
    clear = (r > MIN_PEAK) & (r > SIGMAS * error)
    peaks = [lag for lag in range(2, max_lag) if clear[lag] and r[lag - 1] < r[lag] >= r[lag + 1]]
    if not peaks:
        return 1, f"no clear autocorrelation peak at lags 2-{max_lag - 1}: not seasonal"
    best = max(r[lag] for lag in peaks)
    period = min(lag for lag in peaks if r[lag] >= HARMONIC * best)
    return period, f"autocorrelation {r[period]:.2f} at lag {period}, its highest peak in 2-{max_lag - 1}"
