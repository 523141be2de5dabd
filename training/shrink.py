"""How far a value model (regression, forecast) moves from its baseline, chosen on held-out series.

A value model's head starts at zero (training/model.py): its answer is the baseline (the training mean,
the seasonal-naive forecast, the linear path) plus the head's correction. On a small or noisy set the
correction learnt on the training series is partly noise. The head is scaled by the factor in [0, 1]
that fits the validation series best (least squares, in normalised units): 1 keeps the model, 0 leaves
the baseline. The correction is kept only where the validation sequences' gain in squared error (each
sequence one observation: a sequence's outputs are not independent) is at least SIGMAS standard errors
above 0; otherwise the head is scaled by 0. CardanoSentiment (15 validation series, 3 seeds: factors
0.6-1.0 at 0.7-1.0 standard errors) lost to ridge on the test series with the correction.

Neighbouring forecast windows share targets, so they are not independent either: their standard error
counts the correlation of horizon - 1 neighbours (Newey-West, as in the Diebold-Mariano test of forecast
accuracy; never below the error of independent sequences), and fewer than horizon + 1 windows (every two
sharing targets) tell nothing. Counted as independent, half-hourly solar output (25 windows over 18 hours)
kept corrections 2.2-2.5 "errors" clear of 0 that lost to the seasonal naive on test (MASE 1.18-1.77
against 0.58); with the overlap counted they read 1.0-1.1. Airline passengers (19 windows, 3.5-3.7) and
monthly road casualties (24, 5.6-6.4) keep theirs and win; sunspots' (42 windows, 2.2-3.0 counted as
independent) read 1.0-1.7 and are dropped, although they won on test.
"""

from __future__ import annotations

import torch

from training.data import Split
from training.model import GRUModel

SIGMAS = 2.0  # how clear of 0 the mean gain per validation sequence must be, in standard errors


@torch.no_grad()
def shrink_to_baseline(model: GRUModel, val: Split, overlap: int = 0) -> tuple[float, str]:
    """Scale the head by the factor that fits `val` best, or by 0 where the gain it brings is not clear
    of noise; return the factor and a line that says why. `overlap`: how many neighbours (in `val`'s
    order) share targets with each validation sequence (a forecast's windows: horizon - 1)."""
    model.eval()
    x, lengths = torch.as_tensor(val.X), torch.as_tensor(val.lengths)
    out, _, level = model(x, lengths)
    base = model.baseline(x, lengths, level)
    correction, wanted = out - base, model.normaliser.targets(torch.as_tensor(val.y), level) - base
    power = float((correction**2).sum())
    fitted = min(1.0, max(0.0, float((correction * wanted).sum()) / power)) if power > 0 else 0.0
    gain = (wanted**2).sum(dim=1) - ((wanted - fitted * correction) ** 2).sum(dim=1)  # (B,) squared error
    enough = len(gain) >= least_to_judge(overlap)
    errors = float(gain.mean() / standard_error(gain, overlap).clamp_min(1e-12)) if enough else 0.0
    factor = fitted if errors >= SIGMAS else 0.0
    model.head.weight.mul_(factor)
    model.head.bias.mul_(factor)
    verdict = f"its gain {errors:.1f} standard errors from 0" + ("" if factor else ": not clear of noise")
    if not enough:
        verdict = f"too few to tell: under {least_to_judge(overlap)}, so every two share targets"
    kept = "" if factor else ", the baseline is kept"
    return factor, (f"correction to the baseline kept: {factor:.3f} (fitted on the {len(gain)} validation "
                    f"sequences: {fitted:.3f}, {verdict}{kept})")


def least_to_judge(overlap: int) -> int:
    """The fewest validation sequences that can judge a correction, each sharing targets with `overlap`
    neighbours: the first and the last must share none (a forecast's windows: horizon + 1)."""
    return overlap + 2


def standard_error(gain: torch.Tensor, overlap: int) -> torch.Tensor:
    """The standard error of gain's mean where each value is correlated with its `overlap` neighbours
    (Newey-West, Bartlett weights, as the Diebold-Mariano test of forecast accuracy): neighbouring
    forecast windows share their targets and are not independent observations."""
    n, d = len(gain), gain - gain.mean()
    alone = (d @ d) / (n - 1)
    var = alone
    for k in range(1, min(overlap, n - 1) + 1):
        var = var + 2 * (1 - k / (overlap + 1)) * (d[k:] @ d[:-k]) / (n - 1)
    return (torch.maximum(var, alone) / n).sqrt()  # sharing targets makes neighbours alike, never apart
