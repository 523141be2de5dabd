"""The linear path of a value model (model.linear_steps): ridge regression on each sequence's last L
normalised steps, fitted in closed form on the training series before the GRU trains and then held fixed.

The head starts at zero, so the untrained model answers exactly what the ridge answers (plus the seasonal
naive, where there is a seasonal skip: the ridge then fits what the seasonal naive leaves). The GRU learns
the residual; early stopping and the shrink factor on the validation series (training/shrink.py) keep
only as much of its correction as helps there. The path is a MatMul on the last L steps of the exported
graph, picked per sequence through `lengths`, so ragged batches stay exact; a carried state does not
hold those steps, so such a model does not stream.
"""

from __future__ import annotations

import torch

from training.baselines import fit_ridge
from training.data import Split
from training.model import GRUModel


@torch.no_grad()
def fit_linear_path(model: GRUModel, split: Split) -> str:
    """Fit the model's linear path on `split` (its normaliser already fitted); the line that says so."""
    x, lengths = torch.as_tensor(split.X), torch.as_tensor(split.lengths)
    level = model.normaliser.level(x, lengths)
    wanted = model.normaliser.targets(torch.as_tensor(split.y), level)
    if model.config.seasonal_skip:
        wanted = wanted - model.seasonal_naive(x, lengths, level)
    weight, bias, alpha = fit_ridge(model.last_steps(x, lengths, level).numpy(), wanted.numpy())
    model.linear.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
    model.linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
    on = "what the seasonal naive leaves" if model.config.seasonal_skip else "the targets"
    summary = " and their summary (each feature's mean, std, min, max, slope)" * model.config.linear_summary
    return (f"linear path: ridge of {on} on the last {model.config.linear_steps} steps{summary}, penalty "
            f"{alpha:.3g} (leave-one-out over the {len(split)} training sequences)")
