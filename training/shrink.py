"""How far a value model (regression, forecast) moves from its baseline, chosen on held-out series.

A value model's head starts at zero (training/model.py): its answer is the baseline (the training mean,
the seasonal-naive forecast, the linear path) plus the head's correction. On a small or noisy set the
correction learnt on the training series is partly noise. The head is scaled by the factor in [0, 1]
that fits the validation series best (least squares, in normalised units): 1 keeps the model, 0 leaves
the baseline. A factor less than SIGMAS standard errors from 0 is noise: the head is scaled by 0. On
CardanoSentiment (15 validation series) factors of 0.6-1.0 at 1.4-2.1 standard errors each lost to
ridge on the test series; sunspots' (10 standard errors) won.
The factor is folded into the head's weights, so the checkpoint and the exported graph hold it.
"""

from __future__ import annotations

import torch

from training.data import Split
from training.model import GRUModel

SIGMAS = 3.0  # how clear of 0 the fitted factor must be, in standard errors, to keep any correction


@torch.no_grad()
def shrink_to_baseline(model: GRUModel, val: Split) -> tuple[float, str]:
    """Scale the head by the factor that fits `val` best, or by 0 where that factor is not clear of
    noise; return the factor and a line that says why."""
    model.eval()
    x, lengths = torch.as_tensor(val.X), torch.as_tensor(val.lengths)
    out, _, level = model(x, lengths)
    base = model.baseline(x, lengths, level)
    correction, wanted = out - base, model.normaliser.targets(torch.as_tensor(val.y), level) - base
    power = float((correction**2).sum())
    fitted = min(1.0, max(0.0, float((correction * wanted).sum()) / power)) if power > 0 else 0.0
    noise = float(((wanted - fitted * correction) ** 2).sum()) / max(1, wanted.numel() - 1)
    errors = fitted / max(1e-12, (noise / max(power, 1e-12)) ** 0.5)  # standard errors from 0
    factor = fitted if errors >= SIGMAS else 0.0
    model.head.weight.mul_(factor)
    model.head.bias.mul_(factor)
    why = "" if factor else f" (not clear of noise: under {SIGMAS:g}; the baseline is kept)"
    return factor, (f"correction to the baseline kept: {factor:.3f} (fitted on the validation series: "
                    f"{fitted:.3f}, {errors:.1f} standard errors from 0{why})")
