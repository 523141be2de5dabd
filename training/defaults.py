"""Defaults chosen from the data: the settings left at "auto" are resolved from the training split's
lengths, series count and task before the model is built, and printed, so that a run says what it did.

- model.normalise: "series" for classification when the training series' scales (each series' standard
  deviation, per feature) differ by SCALE_SPREAD× or more between the 5th and 95th percentile (PLAID: 1e-5
  to 461), else "global" (UCR sets come z-normalised: their spread is ~1×);
- model.frontend: "conv" for classification (the measured winner on long and short sets) and for
  regression on series of 128 steps or more; "none" for shorter regression and forecasting windows (M1's
  research figures come from the plain GRU) and for tagging (it answers at every step);
- model.patch: the front end's stride, so that the GRU reads about TARGET_STEPS steps of a median
  sequence (1 for tagging and with no front end), at most MAX_STRIDE: on ACSF1 (1,460 steps) stride 23
  (64 GRU steps) gave 0.78 against 0.85 for stride 12 (122 steps), the conv's windows then spanning 24
  steps instead of 46. Lengths that differ LENGTH_SPREAD× or more (PLAID: 100-1,344): also so that the
  longest tenth reads at most 2·TARGET_STEPS GRU steps (a batch is as long as its longest series, so the
  tail sets the training time, and a gradient through hundreds of steps fades);
- few series per class (classification, fewer than FEW_PER_CLASS training series per label; PigCVP: 2):
  a model that would memorise them, so a smaller one (model.hidden_size 64) with more regularisation
  (model.dropout 0.3, optim.weight_decay 0.05) and stronger augmentation (optim.jitter 0.1, optim.scaling
  0.2): each only where the config leaves it at its default;
- optim.batch_size: a quarter of the series, between 4 and 16 (64 from 2,000 series);
- optim.max_epochs: at least 1,000 optimiser steps (small sets need many epochs), and 100 epochs unless
  that exceeds 10,000 steps (large sets need few); never more than 200 epochs.
"""

from __future__ import annotations

import math

import numpy as np

from training.config import VALUE_TASKS, TrainConfig
from training.data.dataset import Split

TARGET_STEPS, MAX_STRIDE = 64, 12
SCALE_SPREAD, LENGTH_SPREAD = 100.0, 10.0
FEW_PER_CLASS = 5
FEW_SETTINGS = {"model.hidden_size": 64, "model.dropout": 0.3, "optim.weight_decay": 0.05,
                "optim.jitter": 0.1, "optim.scaling": 0.2}
MIN_STEPS, USUAL_EPOCHS, MAX_STEPS, MAX_EPOCHS = 1_000, 100, 10_000, 200
SMALL_VALUE_SET = 1_000  # regression/forecast series (or windows) below which validation is held out


def resolve(config: TrainConfig, train: Split) -> list[str]:
    """Fill in every "auto" setting from the training series (`model.task`, `input_size` and
    `output_size` already set from the data); return what the run will do, as lines to print."""
    model, optim = config.model, config.optim
    median = int(np.median(train.lengths)) if len(train) else 1
    classes = f", {model.output_size} classes" if model.task == "classification" else ""
    if model.head == "sigmoid":  # one output for two classes
        classes = ", 2 classes (one sigmoid output)"
    lines = [f"data: {len(train)} training series, lengths {int(train.lengths.min())}-"
             f"{int(train.lengths.max())} (median {median}), {train.X.shape[2]} feature(s), "
             f"task {model.task}{classes}"]
    if model.normalise == "auto":
        spread = scale_spread(train)
        model.normalise = "series" if model.task == "classification" and spread >= SCALE_SPREAD else "global"
        streams = "" if model.normalise == "global" else "; no streaming"
        lines.append(f"model.normalise={model.normalise} (auto: the series' scales differ {spread:,.0f}× "
                     f"between the 5th and 95th percentile{streams})")
    per_class = len(train) / max(1, model.output_size)
    if model.task == "classification" and per_class < FEW_PER_CLASS:
        lines.append(few_per_class(config, per_class))
    if model.frontend == "auto":
        long = median >= 2 * TARGET_STEPS  # a stride of 2 or more
        conv = model.task == "classification" or (model.task == "regression" and long)
        model.frontend = "conv" if conv else "none"
        why = model.task if model.task != "regression" else f"regression, median length {median}"
        lines.append(f"model.frontend={model.frontend} (auto: {why})")
    if model.patch == "auto":
        per_step = model.task == "tagging" or model.frontend == "none"
        stride, why = 1, ""
        if not per_step:
            stride = max(1, round(median / TARGET_STEPS))
            shortest, longest = int(train.lengths.min()), int(train.lengths.max())
            if longest >= LENGTH_SPREAD * shortest:
                tail = int(np.percentile(train.lengths, 90))
                stride = max(stride, math.ceil(tail / (2 * TARGET_STEPS)))
                why = (f", ~{math.ceil(tail / min(stride, MAX_STRIDE))} for the 90th percentile (lengths "
                       f"differ {longest / shortest:.0f}×)")
            stride = min(MAX_STRIDE, stride)
        model.patch = stride
        lines.append(f"model.patch={stride} (auto: ~{math.ceil(median / stride)} GRU steps "
                     f"for the median length{why})")
    if optim.batch_size == "auto":
        optim.batch_size = 64 if len(train) >= 2000 else min(16, max(4, len(train) // 4))
        lines.append(f"optim.batch_size={optim.batch_size} (auto)")
    batch = int(optim.batch_size)
    if optim.max_epochs == "auto":
        per_epoch = max(1, math.ceil(len(train) / batch))
        usual = min(USUAL_EPOCHS, math.ceil(MAX_STEPS / per_epoch))
        optim.max_epochs = min(MAX_EPOCHS, max(math.ceil(MIN_STEPS / per_epoch), usual))
        lines.append(f"optim.max_epochs={optim.max_epochs} (auto: {optim.max_epochs * per_epoch} steps of "
                     f"batch {optim.batch_size})")
    return lines + [summary(config)]


def resolve_fit(config: TrainConfig, task: str, series: int) -> list[str]:
    """optim.final_fit "auto": a final fit, except for regression and forecasts from fewer than
    SMALL_VALUE_SET series (or windows): those hold the validation split out, which picks the epoch and
    how much of its correction to the baseline the model keeps (training/shrink.py). On CardanoSentiment
    (74 series) and yearly sunspots (212 windows) a final fit lost clearly to the mean and to the seasonal
    naive; on M1 yearly (1,378 windows) holding out lost (MASE 3.83 against 3.69)."""
    if config.optim.final_fit != "auto":
        return []
    held_out = task in VALUE_TASKS and series < SMALL_VALUE_SET
    config.optim.final_fit = not held_out
    why = f"{task}, {series} series" if task in VALUE_TASKS else task
    return [f"optim.final_fit={str(config.optim.final_fit).lower()} (auto: {why})"]


def few_per_class(config: TrainConfig, per_class: float) -> str:
    """FEW_SETTINGS, each where the user left the default; the line that says so."""
    changed = []
    for key, value in FEW_SETTINGS.items():
        section_name, field = key.split(".")
        section = getattr(config, section_name)
        if field not in section.model_fields_set:
            setattr(section, field, value)
            changed.append(f"{key}={value:g}")
    return (f"{', '.join(changed) or 'nothing changed'} (auto: {per_class:.1f} training series per class "
            f"would be memorised: a smaller model, more regularisation and augmentation)")


def scale_spread(train: Split) -> float:
    """The ratio of the 95th to the 5th percentile of the series' standard deviations over their valid
    steps, the largest over the features; constant series do not count (a feature that is mostly
    constant, as an image's border, not at all); 1 when nothing is left to compare."""
    valid = np.arange(train.X.shape[1])[None, :] < train.lengths[:, None]  # (N, T)
    count = np.maximum(train.lengths[:, None], 1).astype(np.float64)
    mean = (train.X * valid[..., None]).sum(axis=1) / count  # (N, F)
    std = np.sqrt((((train.X - mean[:, None]) * valid[..., None]) ** 2).sum(axis=1) / count)
    spreads = [1.0]
    for feature in std.T:
        varying = feature[feature > 1e-12]
        if len(varying) >= max(2, len(feature) / 2):
            low, high = np.percentile(varying, [5, 95])
            spreads.append(high / low)
    return float(max(spreads))


def summary(config: TrainConfig) -> str:
    m, o = config.model, config.optim
    direction = "bidirectional " if m.bidirectional else ""
    kept = "final fit, last epoch kept" if o.final_fit else "best validation epoch kept"
    stride = int(m.patch)
    front = {"conv": f"causal conv (kernel {m.conv_kernel * stride}, stride {stride}) + conv (kernel 3)",
             "patch": f"patches of {stride} step(s)", "none": "no front end"}[str(m.frontend)]
    # the loop augments classification and tagging only: a perturbed window has another forecast
    augmented = "no augmentation" if m.task in VALUE_TASKS else f"jitter {o.jitter:g}, scaling {o.scaling:g}"
    return (f"model: {front} -> {direction}GRU {m.num_layers}x{m.hidden_size} "
            f"(reset {m.reset}) -> readout {'+'.join(m.readout)} -> head; "
            f"optim: {o.optimizer} {o.schedule} lr {o.learning_rate:g}, {o.max_epochs} epochs x batch "
            f"{o.batch_size}, {augmented}, {kept}")
