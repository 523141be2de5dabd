"""Defaults chosen from the data: the settings left at "auto" are resolved from the training split's
lengths, series count and task before the model is built, and printed, so that a run says what it did.
`resolve` returns them in a new, frozen ResolvedConfig; the config it is given stays as it was.

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
  (model.dropout 0.3, optim.weight_decay 0.05), stronger augmentation (optim.jitter 0.1, optim.scaling
  0.2), each series read as random windows of 80% of it (optim.crop 0.8) and at a speed that drifts
  (optim.time_warp 0.2: what 1-NN DTW reads through, and two or four series of a class cannot teach;
  +0.012 on the mean of seven such sets, PigCVP -0.02, cylinder-bell-funnel +0.05) and a head that
  reads only the maximum over the GRU's steps (model.readout [max]): the last state, and where in the
  series a shape sits, let the model tell two series apart by heart (PigCVP: 0.28 -> 0.74); each only
  where the config leaves it at its default;
- optim.crop: otherwise 1 (no crops), except where the loop compares both by cross-validation first
  (training/selection.py: classification, long series);
- optim.mixup: MIXUP for classification normalised globally (each training series mixed with another of
  its batch: +0.012 on the mean of 15 such sets, +0.03 to +0.07 on the three that memorise most), none
  where each series is normalised by its own scale (choose_mixup);
- model.linear_steps: regression with a validation split held out (optim.final_fit false) gets a linear
  path, ridge on the last LINEAR_STEPS steps at most (training/linear.py): the model starts at ridge and
  the GRU learns the residual, which early stopping and the shrink factor check on the validation
  series. On CardanoSentiment and Covid3Month the GRU alone lost to ridge on raw steps. With a final fit
  nothing checks the GRU's correction, so no path. Not for forecasts: on sunspots the validation windows
  preferred the path (seasonal naive + ridge) and the test windows the GRU (MASE 1.28 against 1.17);
- optim.batch_size: a quarter of the series, between 4 and 16 (64 from 2,000 series);
- optim.max_epochs: at least 1,000 optimiser steps (small sets need many epochs), and 100 epochs unless
  that exceeds 10,000 steps (large sets need few); never more than 200 epochs. Few series per class: at
  least 2,000 steps, up to 400 epochs, since their augmentation makes each step a harder one (PigCVP, 7
  steps an epoch: 143 epochs gave 0.74 over seeds 0-2, 300 epochs 0.80).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.heads import VALUE_TASKS
from training.config import ResolvedConfig, TrainConfig
from training.data.dataset import PAD_LABEL, SequenceData, Split
from training.shrink import least_to_judge
from training.starts import DRIFTS, validation_errors

TARGET_STEPS, MAX_STRIDE = 64, 12
SCALE_SPREAD, LENGTH_SPREAD = 100.0, 10.0
FEW_PER_CLASS = 5
FEW_SETTINGS: dict[str, float | list[str]] = {
    "model.hidden_size": 64, "model.dropout": 0.3, "optim.weight_decay": 0.05, "optim.jitter": 0.1,
    "optim.scaling": 0.2, "optim.crop": 0.8, "optim.time_warp": 0.2, "model.readout": ["max"]}
MIN_STEPS, USUAL_EPOCHS, MAX_STEPS, MAX_EPOCHS = 1_000, 100, 10_000, 200
FEW_MIN_STEPS, FEW_MAX_EPOCHS = 2_000, 400  # few series per class: stronger augmentation, more steps
SMALL_VALUE_SET = 1_000  # regression/forecast series (or windows) below which validation is held out
LINEAR_STEPS = 256  # the most steps the linear path reads
MIXUP = 0.2  # optim.mixup "auto" for classification normalised globally (choose_mixup)


def resolve(config: TrainConfig, data: SequenceData) -> tuple[ResolvedConfig, list[str]]:
    """The config a run trains with: the shapes from the data, every "auto" setting chosen from the
    training series; and what the run will do, as lines to print. `config` is left as it was."""
    chosen = from_data(config, data)
    final_fit, lines = choose_final_fit(config, data.task, len(data.train) + len(data.val))
    chosen["optim.final_fit"] = final_fit
    lines += choose_start(config, chosen, data, final_fit)
    lines += one_epoch_where_nothing_judges(config, chosen, data, final_fit)
    train = training_split(data, final_fit)
    lines += choose(config, chosen, train, counted(data.task, data.recordings is not None))
    lines += choose_linear(config, chosen, data, final_fit)
    lines += choose_mixup(config, chosen)
    if config.optim.members == "auto":  # the loop decides, from a timed step (training/ensemble.py)
        chosen["optim.members"] = 1
    resolved = ResolvedConfig.from_dict(config.with_values(chosen).to_dict())
    check_drift(resolved)
    return resolved, lines + [summary(resolved)]


def choose_mixup(config: TrainConfig, chosen: dict[str, Any]) -> list[str]:
    """optim.mixup "auto": MIXUP for classification whose series are normalised globally. None where
    each series is normalised by its own scale: the model reads that scale, and a mix of two shapes at a
    scale between belongs to neither label (PLAID 0.93 -> 0.91, Covid3Month_disc 0.60 -> 0.57 with it;
    docs/results/quality.md "Mixup"); other tasks read no mixup."""
    if config.optim.mixup != "auto":
        return []
    task, normalise = chosen["model.task"], chosen.get("model.normalise", config.model.normalise)
    chosen["optim.mixup"] = MIXUP if task == "classification" and normalise == "global" else 0.0
    if task != "classification":
        return []
    why = ("each series is normalised by its own scale, which the model reads: a mix belongs to neither "
           "label" if normalise == "series" else "classification, series normalised globally")
    return [f"optim.mixup={chosen['optim.mixup']:g} (auto: {why})"]


def from_data(config: TrainConfig, data: SequenceData) -> dict[str, Any]:
    """The data decides the shapes; the config decides the rest."""
    refuse_unread(config, data)
    output_size = data.output_size
    if config.model.head == "sigmoid":  # one output: P(label_names[1])
        if data.task != "classification" or data.output_size != 2:
            raise ValueError(f"model.head=sigmoid is for binary classification; this data is {data.task} "
                             f"with {data.output_size} output(s): use model.head=softmax")
        output_size = 1
    return {"model.input_size": data.train.X.shape[2], "model.task": data.task,
            "model.output_size": output_size, "model.window_scaling": data.window_scaling,
            "model.seasonal_skip": _skip(config, data)}


def refuse_unread(config: TrainConfig, data: SequenceData) -> None:
    """data.* settings this data never reads are refused, not ignored: before, ItalyPowerDemand trained
    as classification with data.task=regression, and data.horizon=5 or data.path=... set on it did
    nothing, without a word."""
    setting, source = config.data, config.data.dataset
    if source != "file":
        for key in ("path", "test_path"):
            if getattr(setting, key) is not None:
                raise ValueError(f"data.{key} is read only with data.dataset=file; {source} is built in: "
                                 f"drop data.{key}, or set data.dataset=file to train on your file")
        if setting.task is not None and setting.task != data.task:
            raise ValueError(f"data.task={setting.task}: {source} is a {data.task} set (a built-in knows "
                             "its task); drop data.task, or train on a file of yours with data.dataset=file")
    unread = ["horizon", "seasonal_period"] if data.task != "forecast" else []
    if data.task != "forecast" and data.recordings is None:  # tagging split in time: its windows' length
        unread.insert(0, "window")
    for key in unread:
        if getattr(setting, key) is not None:
            raise ValueError(f"data.{key} is read for forecasts"
                             f"{' and tagging split in time' if key == 'window' else ''}; this data is "
                             f"{data.task}: drop data.{key}")


def _skip(config: TrainConfig, data: SequenceData) -> int:
    """model.seasonal_skip: the found period, for seasonal forecasts (at period 1, choose_start); a
    value you set is kept. Before, it was overwritten: a skip at lag 1, the naive, could not be asked for
    (Nile: not seasonal, the model answered the mean level, MASE 1.20 against the naive's 0.95)."""
    period = data.seasonal_period or 1
    if "seasonal_skip" not in config.model.model_fields_set:
        return period if data.task == "forecast" and period > 1 else 0
    if config.model.seasonal_skip and data.task != "forecast":
        raise ValueError(f"model.seasonal_skip adds the seasonal naive to a forecast; this data is "
                         f"{data.task}: drop the setting")
    return config.model.seasonal_skip


def choose_start(config: TrainConfig, chosen: dict[str, Any], data: SequenceData,
                 final_fit: bool) -> list[str]:
    """Where a forecast without a season starts (training/starts.py): model.seasonal_skip=1 and a
    model.drift for the naive's starts, no skip for the training mean.

    Where the validation windows are too few to judge the GRU's correction (training/shrink.py: under
    horizon + 1, every two sharing targets), the model answers its start, and they are too few to choose
    one: the naive plus half the window's drift (the Theta method's forecast at smoothing weight 1).
    Each of these, alone in a file, is such a series (bench/short_series.py; test MASE, the mean over the
    series, the training mean / the naive / the half drift): M1 yearly's 181 series 5.93 / 4.35 / 3.47,
    fertility rates of 200 countries 8.71 / 4.79 / 3.65, Danish money demand's 5 series 10.15 / 3.55 /
    2.85; only Nile, a level without a trend, prefers the naive (0.95 against 1.02).

    Where the windows can judge it, the start with the lowest validation error: macrodata's ten quarterly
    series (203 values, 25 windows) pick the drift for GDP, consumption, income, prices and population,
    the naive for rates (test MASE of the picks 3.77 on average, the training mean 9.80: CPI 30.8 -> 2.34);
    Uschange's five series (23 windows) pick the mean, their best (0.75 against 0.76 for the naive).
    Not with a final fit: its correction is always kept, and on M1 yearly the naive under it cost 0.2."""
    horizon, windows = data.output_size, len(data.val)
    if "seasonal_skip" in config.model.model_fields_set or data.task != "forecast":
        return []
    if (data.seasonal_period or 1) > 1:  # before, a seasonal forecaster's start was not printed at all
        return [seasonal_start(data.seasonal_period or 1, final_fit)]
    if final_fit:
        return []
    if windows < least_to_judge(horizon - 1):
        start = "half drift"
        why = (f"too few validation windows to judge a correction to a {horizon}-step forecast "
               f"({windows}; {least_to_judge(horizon - 1)} needed)")
    else:
        errors = validation_errors(data)
        start = min(errors, key=errors.__getitem__)
        why = (f"the start with the lowest error on the {windows} validation windows: "
               + ", ".join(f"{name} {error:.3g}" for name, error in errors.items()))
    if "drift" in config.model.model_fields_set:  # a drift you set: the naive with it
        start, drift = "", config.model.drift
    elif start != "mean":
        drift = chosen["model.drift"] = DRIFTS[start]
    if start == "mean":
        return [f"model.seasonal_skip=0 (auto: not seasonal, and {why}): the model starts at the training "
                "mean"]
    chosen["model.seasonal_skip"] = 1
    return [f"model.seasonal_skip=1, model.drift={drift:g} (auto: not seasonal, and {why}): the model "
            f"starts at the naive plus {drift:g} of the window's drift, and answers it unless its correction "
            "is kept"]


def seasonal_start(period: int, final_fit: bool) -> str:
    """The line that says a seasonal forecaster starts at the seasonal naive (from_data's skip)."""
    kept = "learns a correction to it" if final_fit else "answers it unless its correction is kept"
    return (f"model.seasonal_skip={period} (auto: the seasonal period): the model starts at the seasonal "
            f"naive (the last {period} values, repeated) and {kept}")


def one_epoch_where_nothing_judges(config: TrainConfig, chosen: dict[str, Any], data: SequenceData,
                                   final_fit: bool) -> list[str]:
    """optim.max_epochs=1 for a forecast whose validation windows are too few to judge the GRU's
    correction (under horizon + 1, training/shrink.py): it is dropped whatever the GRU learns, so the
    model answers its start. Before, the GRU trained for the whole budget for nothing."""
    horizon, windows = data.output_size, len(data.val)
    if (config.optim.max_epochs != "auto" or data.task != "forecast" or final_fit
            or windows >= least_to_judge(horizon - 1)):
        return []
    chosen["optim.max_epochs"] = 1
    return [f"optim.max_epochs=1 (auto: {windows} validation windows cannot judge a correction to a "
            f"{horizon}-step forecast ({least_to_judge(horizon - 1)} needed), so the model answers its start "
            "whatever the GRU learns: one epoch, not the time budget)"]


def check_drift(config: ResolvedConfig) -> None:
    """model.drift extends the naive (seasonal_skip 1) only."""
    if config.model.drift and config.model.seasonal_skip != 1:
        raise ValueError(f"model.drift={config.model.drift:g} adds the window's drift to the naive forecast "
                         f"(model.seasonal_skip=1); this run's skip is {config.model.seasonal_skip}: set "
                         "model.seasonal_skip=1 or drop model.drift")


def choose(config: TrainConfig, chosen: dict[str, Any], train: Split, unit: str = "series") -> list[str]:
    """Add to `chosen` a value for every "auto" setting, from the training series (`model.task` and
    `output_size` already chosen from the data); return the lines that say what and why. `unit`: what
    the training split holds (counted())."""
    model = config.model
    task, output_size = chosen["model.task"], chosen["model.output_size"]
    median = int(np.median(train.lengths)) if len(train) else 1
    classes = f", {output_size} classes" if task == "classification" else ""
    if model.head == "sigmoid":  # one output for two classes
        classes = ", 2 classes (one sigmoid output)"
    lines = [f"data: {len(train)} training {unit}, lengths {int(train.lengths.min())}-"
             f"{int(train.lengths.max())} (median {median}), {train.X.shape[2]} feature(s), "
             f"task {task}{classes}"]
    lines += _one_step_each(train, unit)
    if model.normalise == "auto":
        spread = scale_spread(train)
        normalise = "series" if task == "classification" and spread >= SCALE_SPREAD else "global"
        chosen["model.normalise"] = normalise
        streams = "" if normalise == "global" else "; no streaming"
        lines.append(f"model.normalise={normalise} (auto: the series' scales differ {spread:,.0f}× "
                     f"between the 5th and 95th percentile{streams})")
    per_class = len(train) / max(1, output_size)
    few = task == "classification" and per_class < FEW_PER_CLASS
    if few:
        lines.append(few_per_class(config, chosen, per_class))
    if config.optim.crop == "auto":  # where not compared (training/selection.py) nor few per class
        chosen.setdefault("optim.crop", 1.0)
    frontend = model.frontend
    if frontend == "auto":
        long = median >= 2 * TARGET_STEPS  # a stride of 2 or more
        frontend = "conv" if task == "classification" or (task == "regression" and long) else "none"
        chosen["model.frontend"] = frontend
        why = task if task != "regression" else f"regression, median length {median}"
        lines.append(f"model.frontend={frontend} (auto: {why})")
    if model.patch == "auto":
        stride, why = _stride(train, median) if task != "tagging" and frontend != "none" else (1, "")
        chosen["model.patch"] = stride
        lines.append(f"model.patch={stride} (auto: ~{math.ceil(median / stride)} GRU steps "
                     f"for the median length{why})")
    return lines + _batches(config, chosen, len(train), few, unit)


def _stride(train: Split, median: int) -> tuple[int, str]:
    """The front end's stride, and why, when the lengths differ widely."""
    stride, why = max(1, round(median / TARGET_STEPS)), ""
    shortest, longest = int(train.lengths.min()), int(train.lengths.max())
    if longest >= LENGTH_SPREAD * shortest:
        tail = int(np.percentile(train.lengths, 90))
        stride = max(stride, math.ceil(tail / (2 * TARGET_STEPS)))
        why = (f", ~{math.ceil(tail / min(stride, MAX_STRIDE))} for the 90th percentile (lengths "
               f"differ {longest / shortest:.0f}×)")
    return min(MAX_STRIDE, stride), why


def _batches(config: TrainConfig, chosen: dict[str, Any], series: int, few: bool, unit: str) -> list[str]:
    """optim.batch_size and optim.max_epochs where "auto"; `few`: few series per class; `unit`: what the
    training split holds."""
    lines, batch, epochs = [], config.optim.batch_size, config.optim.max_epochs
    if batch == "auto":
        batch = chosen["optim.batch_size"] = 64 if series >= 2000 else min(16, max(4, series // 4))
        lines.append(f"optim.batch_size={batch} (auto)")
    elif batch > series:  # before: "batch 100000" printed for 67 series, each epoch one batch of 67
        lines.append(f"optim.batch_size={batch} is more than the {series} training {unit}: each epoch is "
                     f"one batch of all {series}")
    if epochs == "auto" and "optim.max_epochs" not in chosen:  # not one_epoch_where_nothing_judges
        per_epoch = max(1, math.ceil(series / int(batch)))
        usual = min(USUAL_EPOCHS, math.ceil(MAX_STEPS / per_epoch))
        least, most = (FEW_MIN_STEPS, FEW_MAX_EPOCHS) if few else (MIN_STEPS, MAX_EPOCHS)
        epochs = chosen["optim.max_epochs"] = min(most, max(math.ceil(least / per_epoch), usual))
        why = f", at least {FEW_MIN_STEPS:,} for few series per class" if few else ""
        lines.append(f"optim.max_epochs={epochs} (auto: {epochs * per_epoch} steps of batch {batch}{why})")
    return lines


def counted(task: str, recordings: bool = False) -> str:
    """What a forecast, or tagging split in time, trains on: windows cut from its series. Before, a file
    of one series was described as "551 series" and "441 training series, lengths 24-24" (tagging: "28000
    training series, lengths 32-32"), which a user reads as a misread file."""
    return "windows" if task == "forecast" or recordings else "series"


def choose_final_fit(config: TrainConfig, task: str, series: int) -> tuple[bool, list[str]]:
    """optim.final_fit "auto": a final fit, except for regression and forecasts from fewer than
    SMALL_VALUE_SET series (or windows): those hold the validation split out, which picks the epoch and
    how much of its correction to the baseline the model keeps (training/shrink.py). On CardanoSentiment
    (74 series) and yearly sunspots (212 windows) a final fit lost clearly to the mean and to the seasonal
    naive; on M1 yearly (1,378 windows) holding out lost (MASE 3.83 against 3.69)."""
    if config.optim.final_fit != "auto":
        return config.optim.final_fit, []
    final_fit = not (task in VALUE_TASKS and series < SMALL_VALUE_SET)
    why = f"{task}, {series} {counted(task)}" if task in VALUE_TASKS else task
    return final_fit, [f"optim.final_fit={str(final_fit).lower()} (auto: {why})"]


def choose_linear(config: TrainConfig, chosen: dict[str, Any], data: SequenceData,
                  final_fit: bool) -> list[str]:
    """model.linear_steps: refused where it cannot work; "auto": on for regression that holds a
    validation split out (it checks what the GRU adds to the path), reading the longest series."""
    steps, task = config.model.linear_steps, data.task
    if steps != "auto":
        if steps and (task not in VALUE_TASKS or data.sharded):
            raise ValueError(f"model.linear_steps={steps}: the linear path is for regression and forecast "
                             f"without data.sharded; this run is {task}{' sharded' if data.sharded else ''}: "
                             "set model.linear_steps=0")
        _check_summary(config, steps)
        return []
    longest = max(data.train.X.shape[1], data.val.X.shape[1])
    on = task == "regression" and not final_fit and not data.sharded
    chosen["model.linear_steps"] = min(LINEAR_STEPS, longest) if on else 0
    if "linear_summary" not in config.model.model_fields_set:
        chosen["model.linear_summary"] = on
    _check_summary(config, chosen["model.linear_steps"])
    if task not in VALUE_TASKS:
        return []
    why = ("ridge on the last steps and their summary, the GRU learns the residual; no streaming" if on
           else "forecast: measured on sunspots, the path lost to the GRU alone" if task == "forecast"
           else "a final fit or sharded data: nothing would check the GRU's correction to the path")
    return [f"model.linear_steps={chosen['model.linear_steps']} (auto: {why})"]


def _check_summary(config: TrainConfig, steps: int) -> None:
    if config.model.linear_summary and not steps:
        raise ValueError("model.linear_summary summarises the linear path's steps, and this run has none "
                         "(model.linear_steps 0): set model.linear_steps, or drop model.linear_summary")


def _one_step_each(train: Split, unit: str) -> list[str]:
    """A warning where every series is one step of many features: most often a series' steps written as
    columns beside a step column of one value (a file without a step column is refused), which trains
    but reads no sequence (cylinder-bell-funnel written so: 0.75 against 0.90 read as 128 steps)."""
    features = train.X.shape[2]
    if unit != "series" or len(train) == 0 or int(train.lengths.max()) != 1 or features < 8:
        return []
    return [f"warning: every series is 1 step of {features} features. If each series' values are its "
            "steps, write one row per step (series_id, step, value, label): docs/guides/data.md, "
            "\"CSV or Parquet, long format\""]


def few_per_class(config: TrainConfig, chosen: dict[str, Any], per_class: float) -> str:
    """FEW_SETTINGS into `chosen`, each where the user left the default; the line that says so."""
    changed = []
    for key, value in FEW_SETTINGS.items():
        section_name, field = key.split(".")
        if field not in getattr(config, section_name).model_fields_set:
            chosen[key] = value
            changed.append(f"{key}={_shown(value)}")
    return (f"{', '.join(changed) or 'nothing changed'} (auto: {per_class:.1f} training series per class "
            f"would be memorised: a smaller model, more regularisation and augmentation)")


def _shown(value: float | list[str]) -> str:
    """A value as --set takes it."""
    return f"[{','.join(value)}]" if isinstance(value, list) else f"{value:g}"


def training_split(data: SequenceData, final_fit: bool) -> Split:
    """What the model trains on: the training series, and with a final fit the validation ones too."""
    return merge(data.train, data.val, data.task) if final_fit else data.train


def merge(a: Split, b: Split, task: str) -> Split:
    """Two splits as one (the validation series joining the training ones), padded to the longer."""
    steps = max(a.X.shape[1], b.X.shape[1])

    def padded(split: Split) -> tuple[np.ndarray, np.ndarray]:
        extra = steps - split.X.shape[1]
        y = np.pad(split.y, ((0, 0), (0, extra)), constant_values=PAD_LABEL) if task == "tagging" else split.y
        return np.pad(split.X, ((0, 0), (0, extra), (0, 0))), y

    (xa, ya), (xb, yb) = padded(a), padded(b)
    return Split(np.concatenate([xa, xb]), np.concatenate([ya, yb]), np.concatenate([a.lengths, b.lengths]))


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


def summary(config: ResolvedConfig) -> str:
    m, o = config.model, config.optim
    direction = "bidirectional " if m.bidirectional else ""
    kept = "final fit, last epoch kept" if o.final_fit else "best validation epoch kept"
    if o.final_fit and o.average:  # training/loop.py _Average
        kept = f"final fit, the mean of the weights over its last {o.average:.0%} of epochs kept"
    stride = m.patch
    front = {"conv": f"causal conv (kernel {m.conv_kernel * stride}, stride {stride}) + conv (kernel 3)",
             "patch": f"patches of {stride} step(s)", "none": "no front end"}[m.frontend]
    return (f"model: {front} -> {direction}GRU {m.num_layers}x{m.hidden_size} "
            f"(reset {m.reset}) -> readout {'+'.join(m.readout)} -> head; "
            f"optim: {o.optimizer} {o.schedule} lr {o.learning_rate:g}, {o.max_epochs} epochs x batch "
            f"{o.batch_size}, {augmentation(config)}, {kept}")


def augmentation(config: ResolvedConfig) -> str:
    """The augmentation a run trains with, as the summary line and the run report say it (the loop's
    _augmented: classification and tagging only, as a perturbed window has another forecast; crops, time
    warping and mixup for classification only)."""
    m, o = config.model, config.optim
    if m.task in VALUE_TASKS:
        return "no augmentation"
    augmented = f"jitter {o.jitter:g}, scaling {o.scaling:g}"
    if m.task == "classification" and o.crop < 1:
        augmented += f", crop {o.crop:g}"
    if m.task == "classification" and o.time_warp:
        augmented += f", time warp {o.time_warp:g}"
    if m.task == "classification" and o.mixup:
        augmented += f", mixup {o.mixup:g}"
    return augmented
