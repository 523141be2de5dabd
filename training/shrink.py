"""How far a value model (regression, forecast) moves from its baseline, chosen on held-out series.

A value model's head starts at zero (training/model.py): its answer is the baseline (the training mean,
or the seasonal-naive forecast) plus the head's correction. On a small or noisy set the correction
learnt on the training series is partly noise. The head is scaled by the factor in [0, 1] that fits the
validation series best (least squares, in normalised units): 1 keeps the model, 0 leaves the baseline.
The factor is folded into the head's weights, so the checkpoint and the exported graph hold it.
"""

from __future__ import annotations

import torch

from training.data import Split
from training.model import GRUModel


@torch.no_grad()
def shrink_to_baseline(model: GRUModel, val: Split) -> float:
    """Scale the head by the factor that fits `val` best; return it."""
    model.eval()
    x, lengths = torch.as_tensor(val.X), torch.as_tensor(val.lengths)
    out, _, level = model(x, lengths)
    base = model.seasonal_naive(x, lengths, level) if model.config.seasonal_skip else torch.zeros_like(out)
    correction, wanted = out - base, model.normaliser.targets(torch.as_tensor(val.y), level) - base
    power = float((correction**2).sum())
    factor = min(1.0, max(0.0, float((correction * wanted).sum()) / power)) if power > 0 else 0.0
    model.head.weight.mul_(factor)
    model.head.bias.mul_(factor)
    return factor
