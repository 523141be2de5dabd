"""The seasonal period of a set of series, found from their autocorrelation (statsmodels' `acf`).

Each series loses its linear trend (a trend makes every lag look alike), then the autocorrelations of
all series are averaged, weighted by each series' length. The period is the lag of the highest local
peak from lag 2 on that stands clear of noise: above MIN_PEAK and above SIGMAS standard errors of an
autocorrelation at that lag (Bartlett's formula, n the values of all series together); where a shorter
lag peaks almost as high (HARMONIC of the best), that one: a peak at 22 is usually the second turn of
a period of 11.

A cycle whose length wanders (lynx trappings, ~10 years) spreads its peak over several lags and rings
for many turns, so Bartlett's error, which sums every earlier squared autocorrelation, hides it (lynx:
0.43 at lag 10 against 3 errors of 0.58). Where no seasonal peak stands out, the first local peak p is
taken as a cycle if the autocorrelation swings through a full turn: below -T between lag 1 and p, above T
at p, and again a local peak above T near 2p (within a tenth of p, at least 1 lag), with
T = max(MIN_PEAK, SIGMAS / sqrt(n)) (white noise's standard error). That second turn is looked for up to
half the series' length, beyond the longest period considered: half-hourly solar output over 4.8 days
(a daily cycle of 47-48 steps, 0.59 there, -0.57 at half a day, 0.37 again at 96) has its second turn
past a third of its length. The period is then the lag within a tenth of p whose autocorrelations at
one and two turns sum highest (a broad hump's first peak may sit a lag early: solar's at 47, 48 fits
both turns best). Slow decay (a random walk, a trend) has no such swing. Neither rule: period 1
(not seasonal). Yearly sunspots: 11; monthly airline: 12; lynx: 10; half-hourly solar: 48.
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
    reach = max(max_lag, int(np.median(lengths)) // 2)  # where a cycle's second turn is looked for
    total, weight = np.zeros(reach + 1), np.zeros(reach + 1)
    for values in series:
        lags = min(reach, len(values) // 2)
        if lags < 2 or np.ptp(values) == 0:
            continue
        steps = np.arange(len(values))
        detrended = values - np.polyval(np.polyfit(steps, values, 1), steps)
        total[: lags + 1] += len(values) * acf(detrended, nlags=lags, fft=True)
        weight[: lags + 1] += len(values)
    r = np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)
    # Bartlett: var r_k = (1 + 2 sum_{j<k} r_j^2) / n
    error = np.sqrt((1 + 2 * np.r_[0.0, 0.0, np.cumsum(r[1:max_lag] ** 2)]) / max(1, int(lengths.sum())))
    clear = (r[: max_lag + 1] > MIN_PEAK) & (r[: max_lag + 1] > SIGMAS * error)
    peaks = [lag for lag in range(2, max_lag) if clear[lag] and r[lag - 1] < r[lag] >= r[lag + 1]]
    if not peaks:
        return _cycle(r, max_lag, int(lengths.sum()))
    best = max(r[lag] for lag in peaks)
    period = min(lag for lag in peaks if r[lag] >= HARMONIC * best)
    return period, f"autocorrelation {r[period]:.2f} at lag {period}, its highest peak in 2-{max_lag - 1}"


def _cycle(r: np.ndarray, max_lag: int, n: int) -> tuple[int, str]:
    """A cycle's period (at most max_lag - 1) from autocorrelations r of n values, or 1: see the module's
    doc. r reaches past max_lag, to where the second turn is looked for."""
    clear = max(MIN_PEAK, SIGMAS / np.sqrt(max(n, 1)))
    peaks = [lag for lag in range(2, len(r) - 1) if r[lag - 1] < r[lag] >= r[lag + 1]]
    p = peaks[0] if peaks else max_lag
    near = max(1, round(p / 10))  # how far from 2p the second turn may peak: a tenth of the period
    if p >= max_lag or 2 * p + near > len(r) - 2:
        return 1, f"no clear autocorrelation peak at lags 2-{max_lag - 1}: not seasonal"
    again = [lag for lag in peaks if abs(lag - 2 * p) <= near and r[lag] > clear]
    if r[p] <= clear or r[1:p].min() >= -clear or not again:
        return 1, (f"no clear autocorrelation peak at lags 2-{max_lag - 1}, and no cycle (first peak "
                   f"{r[p]:.2f} at lag {p}; {clear:.2f} needed, a trough below -{clear:.2f} before it and "
                   "a peak again near twice the lag): not seasonal")
    # the first peak of a broad hump may sit a lag early: the lag near it whose two turns fit best
    nearby = range(max(2, p - near), min(max_lag - 1, p + near, (len(r) - 1) // 2) + 1)
    period = max(nearby, key=lambda lag: r[lag] + r[2 * lag])
    return period, (f"a cycle: autocorrelation {r[p]:.2f} at lag {p}, {r[1:p].min():.2f} before it and "
                    f"{r[again[0]]:.2f} again at lag {again[0]} (above {clear:.2f}); period {period}, whose "
                    f"two turns fit best ({r[period]:.2f} and {r[2 * period]:.2f})")
