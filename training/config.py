"""Training configuration: pydantic models for data, model and optimisation; YAML/TOML plus overrides.

Every key is validated where it is read (types, ranges, choices), and an error names the key and what it
accepts. YAML 1.1 reads `1e-3` as a string: numbers written that way (in files or `--set`) are numbers.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
)

from service.heads import Task  # the one task vocabulary, the bundle's (training may import the schema)

Readout = Literal["last", "mean", "max"]
READOUTS: tuple[Readout, ...] = ("last", "mean", "max")


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"must be a number, got {value!r}") from None
    # inf and nan are floats: optim.learning_rate=inf trained until the loss was nan, and
    # optim.time_budget=.inf failed with 'cannot convert float NaN to integer'
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return value


def _seconds(value: Any) -> float:
    """optim.time_budget: seconds above 0; no limit is null, not inf, 0 or -1."""
    try:
        seconds = float(_number(value))
    except (TypeError, ValueError):
        seconds = math.nan
    if not seconds > 0:
        raise ValueError(f"must be a number of seconds above 0, or null for no time limit, got {value!r}")
    return seconds


def _whole(value: Any) -> Any:
    value = _number(value)
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"must be a whole number, got {value!r}")
        return int(value)
    return value


def _whole_or_auto(value: Any, least: int = 1) -> int | str:
    if value == "auto":
        return "auto"
    try:
        whole = _whole(value)
    except ValueError:
        whole = None
    if not isinstance(whole, int) or whole < least:
        raise ValueError(f"must be a whole number of at least {least} or 'auto' (from the data), "
                         f"got {value!r}")
    return whole


def _number_or_auto(value: Any, valid: Callable[[float], bool], rule: str) -> float | str:
    if value == "auto":
        return "auto"
    try:
        number = float(_number(value))
    except ValueError:
        number = math.nan
    if not valid(number):
        raise ValueError(f"must be {rule} or 'auto' (from the data), got {value!r}")
    return number


def _share_or_auto(value: Any) -> float | str:
    return _number_or_auto(value, lambda share: 0 < share <= 1, "a share above 0 and at most 1,")


def _amount_or_auto(value: Any) -> float | str:
    return _number_or_auto(value, lambda amount: math.isfinite(amount) and amount >= 0,
                           "a number of at least 0")


Number = Annotated[float, BeforeValidator(_number)]
Share = Annotated[Number, Field(gt=0, le=1)]  # a share of something: above 0, at most 1
Whole = Annotated[int, BeforeValidator(_whole)]
WholeOrAuto = Annotated[int | Literal["auto"], PlainValidator(_whole_or_auto)]
ShareOrAuto = Annotated[float | Literal["auto"], PlainValidator(_share_or_auto)]
CountOrAuto = Annotated[int | Literal["auto"], PlainValidator(lambda value: _whole_or_auto(value, least=0))]
AmountOrAuto = Annotated[float | Literal["auto"], PlainValidator(_amount_or_auto)]


class _Section(BaseModel):
    """Frozen: a config is read, never changed; `with_values` makes a changed copy."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Section):
    dataset: str = "ItalyPowerDemand"  # a built-in name, or "file" to read `path`
    path: str | None = None  # user data: .csv / .parquet (long format) or .npz
    test_path: str | None = None  # optional separate test file; otherwise split from `path`
    task: Task | None = None  # required for user files; built-ins know their own task
    id_column: str = "series_id"
    time_column: str = "step"
    feature_columns: list[str] | None = None  # default: every column not named below
    target_column: str = "label"  # label (classification) or target (regression, forecast)
    # forecasting: input window, steps predicted, season of the seasonal-naive baseline and MASE;
    # None: the dataset's own (M1Yearly 8/6/1, Airline 24/12/12); user files: horizon 12, the season found
    # from the data, window max(24, 2 x season) (training/data/forecast.py); tagging split in time: the
    # training windows' length (training/data/recordings.py)
    window: Annotated[Whole, Field(ge=1)] | None = None
    horizon: Annotated[Whole, Field(ge=1)] | None = None
    seasonal_period: Annotated[Whole, Field(ge=1)] | None = None
    val_fraction: Number = Field(0.2, gt=0, lt=1)
    test_fraction: Number = Field(0.2, gt=0, lt=1)  # no test file: held out (forecast: each series' end)
    # Parquet read in record batches, each torchrun rank keeping only its series (`stream`: its older name,
    # in checkpoints saved before)
    sharded: bool = Field(False, validation_alias=AliasChoices("sharded", "stream"))
    missing: Literal["error", "ffill", "zero"] = "error"  # NaN inputs in user files (data/missing.py)


class ModelConfig(_Section):
    input_size: Whole = Field(1, ge=1)  # filled in from the data
    hidden_size: Whole = Field(128, ge=1)  # also the front end's width
    num_layers: Whole = Field(1, ge=1)
    dropout: Number = Field(0.1, ge=0, lt=1)  # between GRU layers and before the head
    bidirectional: bool = False
    # "after": torch.nn.GRU (cuDNN; ONNX linear_before_reset=1); "before": the seed's GRU (Cho et al. 2014;
    # linear_before_reset=0), no fused kernel. training/cells.py
    reset: Literal["after", "before"] = "after"
    # the candidate's activation g in n = g(...): tanh, or relu as in the seed's Keras example, or another
    # that PyTorch and ONNX's GRU both express; anything but tanh runs on the loop GRU (training/cells.py)
    activation: Literal["tanh", "relu", "sigmoid", "softsign", "softplus", "elu", "leaky_relu"] = "tanh"
    cell: Literal["gru", "lstm"] = "gru"  # lstm: only for the comparison (bench/gru_vs_lstm.py); no export
    # classification: softmax over the labels (cross-entropy), or sigmoid: one probability, of the second
    # label, for a binary task (binary cross-entropy), as the seed's Keras example's Dense(1, sigmoid)
    head: Literal["softmax", "sigmoid"] = "softmax"
    task: Task = "classification"  # filled in from the data
    output_size: Whole = Field(2, ge=1)  # number of labels, or the forecast horizon; from the data
    window_scaling: bool = False  # forecasting: scale each window by its mean level; from the data
    # forecasting: the head adds its correction to the seasonal-naive forecast at this period (0: none);
    # from the data (data.seasonal_period). training/model.py
    seasonal_skip: Whole = Field(0, ge=0)
    # forecasting at seasonal_skip 1 (the naive): add this share of the input window's drift (its slope
    # from the first to the last step) per step ahead; chosen with the skip (training/defaults.py)
    drift: float = Field(0.0, ge=0.0, le=1.0)
    # regression and forecast: a linear path, ridge on the last `linear_steps` normalised steps fitted in
    # closed form before the GRU trains; the head learns what it leaves (0: none; no streaming). "auto":
    # on for regression that holds a validation split out (training/defaults.py, training/linear.py)
    linear_steps: CountOrAuto = "auto"
    # the linear path also reads each feature's mean, standard deviation, minimum, maximum and slope over
    # those steps (SUMMARIES per feature); chosen with linear_steps "auto" (training/defaults.py)
    linear_summary: bool = False
    # "global": the training split's mean and std per feature; "series": each series' own, its log scale an
    # extra input (training/normalise.py; no streaming); "auto": series for classification sets whose
    # series' scales differ by orders of magnitude (training/defaults.py). A config without it: global
    normalise: Literal["auto", "global", "series"] = "auto"
    # Front end (training/frontend.py): causal strided convolutions ("conv"), non-overlapping patches
    # ("patch") or none; "auto": conv for classification, none for regression/forecast/tagging
    frontend: Literal["auto", "none", "patch", "conv"] = "auto"
    patch: WholeOrAuto = "auto"  # the front end's stride: k steps per GRU step; "auto": from the lengths
    conv_kernel: Whole = Field(2, ge=1)  # conv: the first convolution's kernel in strides (2: kernel 2k)
    # What the head reads (training/readout.py): the last state, and/or mean and max over the valid steps
    readout: list[Readout] = Field(default_factory=lambda: list(READOUTS), min_length=1)


class OptimConfig(_Section):
    seed: Whole = 0
    learning_rate: Number = Field(3e-3, gt=0)  # the peak of the one-cycle schedule
    weight_decay: Number = Field(1e-2, ge=0)
    batch_size: WholeOrAuto = "auto"  # auto: training/defaults.py
    max_epochs: WholeOrAuto = "auto"  # auto: training/defaults.py
    # seconds for the whole run on this machine: fewer epochs when the measured step time says the rule's
    # would not fit (training/recipe.py plan_epochs); null: no limit. The run is then reproducible only
    # where the budget does not bind.
    time_budget: Annotated[float, BeforeValidator(_seconds)] | None = 120.0
    schedule: Literal["onecycle", "constant"] = "onecycle"  # learning rate over the run (recipe.py)
    jitter: Number = Field(0.03, ge=0)  # augmentation (classification, tagging): noise, normalised units
    scaling: Number = Field(0.1, ge=0)  # augmentation: per-series scale factor 1 + N(0, scaling²)
    # augmentation (classification): each series read as a random window of this share of its steps (1:
    # whole); auto: 0.8 for few series per class (training/defaults.py), 0.8 or 1 by cross-validation for
    # long series (training/selection.py), else 1
    crop: ShareOrAuto = "auto"
    # augmentation (classification): time warping, each series read at a speed 1 + N(0, time_warp²)
    # drifting smoothly along it (training/recipe.py time_warp); 0: none; 0.2 under 5 training series per
    # class where left unset (training/defaults.py FEW_SETTINGS)
    time_warp: Number = Field(0.0, ge=0)
    # augmentation (classification): mixup, each training series mixed with another of its batch and the
    # labels likewise, by a weight ~ Beta(mixup, mixup) (training/recipe.py mixup); 0: none; auto: 0.2
    # where the series are normalised globally, else 0 (training/defaults.py choose_mixup)
    mixup: AmountOrAuto = "auto"
    # true: the shipped model trains on the validation series too, for all max_epochs (no epoch picked on
    # a few held-out series); false: validation held out, best epoch kept, early stopping (gru tune);
    # auto: true for classification and tagging, false for regression and forecast (training/defaults.py)
    final_fit: bool | Literal["auto"] = "auto"
    patience: Whole = Field(30, ge=1)  # without final_fit: epochs without validation improvement
    grad_clip: Number = Field(1.0, gt=0)  # max global gradient norm
    threads: Whole = Field(1, ge=1)  # torch intra-op threads; 1 keeps small models fast and runs reproducible
    optimizer: Literal["adamw", "adam", "sgd", "rmsprop"] = "adamw"  # sgd: Nesterov momentum 0.9
    device: Literal["cpu", "cuda", "auto"] = "cpu"  # auto: cuda where available
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast; fp16 adds a GradScaler; export is fp32
    tensorboard: bool = True  # event files in <run>/tensorboard (needs the tensorboard package)
    plots: bool = True  # PNG learning curves, confusion matrix / forecast plot in the run folder
    # an ensemble: this many models trained one after another (seeds seed, seed+1, ...), merged into one
    # wider GRU whose head averages theirs (training/ensemble.py); "auto": where few training series per
    # output make one model's variance dominate, as many as fit the time budget
    members: WholeOrAuto = "auto"
    # a final fit keeps the mean of the weights after each of this share of the last epochs (stochastic
    # weight averaging, Izmailov et al. 2018) instead of the last epoch's; 0: the last epoch's. Weights
    # only: the exported graph is the same shape (training/loop.py _Average)
    average: Number = Field(0.0, ge=0, lt=1)


class TrainConfig(_Section):
    name: str = "italy_power"
    run_dir: str = "runs"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Self:
        """Validate a plain dict (a YAML/TOML file, a checkpoint's config); errors name every bad key."""
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise ValueError("invalid config: " + "; ".join(_explain(e) for e in exc.errors())) from None

    def with_values(self, values: dict[str, Any]) -> Self:
        """A validated copy with `section.key` values replaced; what the user set stays marked as set
        (defaults.py keeps those), the new values too."""
        raw = self.model_dump(exclude_unset=True)
        for key, value in values.items():
            _put(raw, key, value)
        return self.from_dict(raw)


# The settings `resolve` fills in (training/defaults.py): concrete types, no "auto".
class ResolvedModelConfig(ModelConfig):
    normalise: Literal["global", "series"] = "global"  # checkpoints from before model.normalise: global
    frontend: Literal["none", "patch", "conv"]
    patch: Annotated[Whole, Field(ge=1)]
    linear_steps: Annotated[Whole, Field(ge=0)] = 0  # checkpoints from before the linear path: none


class ResolvedOptimConfig(OptimConfig):
    batch_size: Annotated[Whole, Field(ge=1)]
    max_epochs: Annotated[Whole, Field(ge=1)]
    final_fit: bool
    members: Annotated[Whole, Field(ge=1)] = 1  # checkpoints from before optim.members: one model
    crop: Share = 1.0  # checkpoints from before optim.crop "auto": a share
    mixup: Annotated[Number, Field(ge=0)] = 0.0  # checkpoints from before optim.mixup: none


class ResolvedConfig(TrainConfig):
    """What a run trains with: every setting concrete, the shapes from the data (training/defaults.py
    resolve); what the model and loop take, and what a checkpoint holds."""

    model: ResolvedModelConfig
    optim: ResolvedOptimConfig

    def with_epochs(self, max_epochs: int) -> ResolvedConfig:
        return self.model_copy(update={"optim": self.optim.model_copy(update={"max_epochs": max_epochs})})


def _explain(error: Any) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        section: type[BaseModel] = TrainConfig
        for part in error["loc"][:-1]:
            section = section.model_fields[str(part)].annotation  # type: ignore[assignment]
        return f"unknown key {key!r}; expected one of {sorted(section.model_fields)}"
    if error["type"] == "literal_error":
        return f"{key} must be {error['ctx']['expected']}, got {error['input']!r}"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{key} {message}" if message.startswith("must") else f"{key}: {message}"


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML or TOML file (or start from the defaults) and apply `section.key=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        text = path.read_text()
        toml = path.suffix == ".toml"
        try:
            raw = tomllib.loads(text) if toml else (yaml.load(text, _UniqueKeys) or {})
        except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"config file {path} is not valid {'TOML' if toml else 'YAML'}: "
                             f"{_one_line(exc)}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a config file holds sections like `model:` and `optim:`")
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like section.key=value, e.g. optim.seed=1")
        try:
            parsed = yaml.safe_load(value)  # "3" -> 3, "true" -> True, "[a, b]" -> list
        except yaml.YAMLError as exc:
            raise ValueError(f"override {item!r}: the value is not valid YAML ({_one_line(exc)}); write "
                             "a list as [a, b], and quote text that holds ':' or brackets") from None
        _put(raw, key.strip(), parsed)
    return TrainConfig.from_dict(raw)


class _UniqueKeys(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys: a file with `model:` twice lost the first section's
    settings without a word (TOML refuses them already)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
            if key in seen:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one section (YAML keeps only the last); "
                    "merge them into one", mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _one_line(exc: Exception) -> str:
    """A parser's message on one line (PyYAML's spans several, with a caret under the spot)."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem or exc.context} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def _put(raw: dict[str, Any], key: str, value: Any) -> None:
    """raw["a"]["b"] = value for the key "a.b"."""
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {key}={value!r}: {part!r} is not a section")
    node[leaf] = value


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
