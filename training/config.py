"""Training configuration: dataclasses for data, model and optimisation; YAML/TOML plus overrides."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

Task = Literal["classification", "regression", "tagging"]  # tagging: one label per time step


@dataclass
class DataConfig:
    dataset: str = "ItalyPowerDemand"  # a built-in name, or "file" to read `path`
    path: str | None = None  # user data: .csv / .parquet (long format) or .npz (X [N,T,F], y)
    test_path: str | None = None  # optional separate test file; otherwise split from `path`
    task: Task | None = None  # required for user files; built-ins know their own task
    id_column: str = "series_id"
    time_column: str = "step"
    feature_columns: list[str] | None = None  # default: every column not named below
    target_column: str = "label"  # label (classification) or target (regression)
    window: int = 24  # forecasting: input window length
    horizon: int = 12  # forecasting: steps predicted
    seasonal_period: int = 12  # forecasting: for the seasonal-naive baseline and MASE
    val_fraction: float = 0.2
    test_fraction: float = 0.2  # used only when there is no official test split
    stream: bool = False  # Parquet read in record batches, each torchrun rank keeping only its series


@dataclass
class ModelConfig:
    input_size: int = 1  # filled in from the data
    hidden_size: int = 64
    num_layers: int = 2
    dropout: float = 0.1  # between GRU layers (ignored with one layer)
    bidirectional: bool = False
    # "after": torch.nn.GRU (cuDNN; ONNX linear_before_reset=1); "before": the seed's GRU (Cho et al. 2014;
    # linear_before_reset=0), no fused kernel. training/cells.py
    reset: str = "after"
    task: Task = "classification"  # filled in from the data
    output_size: int = 2  # number of labels, or the forecast horizon; filled in from the data
    window_scaling: bool = False  # forecasting: scale each window by its mean level; from the data


@dataclass
class OptimConfig:
    seed: int = 0
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 16
    max_epochs: int = 100
    patience: int = 30  # epochs without validation improvement before stopping
    grad_clip: float = 1.0  # max global gradient norm
    threads: int = 1  # torch intra-op threads; 1 keeps small models fast and runs reproducible
    optimizer: str = "adamw"  # adamw, adam, sgd (momentum 0.9), rmsprop
    device: str = "cpu"  # cpu, cuda, auto (cuda where available)
    precision: str = "fp32"  # fp32, bf16, fp16 (autocast; fp16 adds a GradScaler); export is always fp32
    tensorboard: bool = True  # event files in <run>/tensorboard (needs the tensorboard package)
    plots: bool = True  # PNG learning curves, confusion matrix / forecast plot in the run folder


@dataclass
class TrainConfig:
    name: str = "italy_power"
    run_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    progress: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        raw = dict(raw)
        sections = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig}
        kwargs: dict[str, Any] = {}
        for key, value in raw.items():
            if key in sections:
                kwargs[key] = _build(sections[key], value, key)
            elif key in {f.name for f in dataclasses.fields(cls)}:
                kwargs[key] = value
            else:
                raise ValueError(f"unknown config key {key!r}; expected one of {_names(cls)}")
        return cls(**kwargs)


def _names(kind: type) -> list[str]:
    return [f.name for f in dataclasses.fields(kind)]


def _build(kind: type, values: dict[str, Any] | None, section: str) -> Any:
    values = values or {}
    unknown = set(values) - set(_names(kind))
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} in [{section}]; expected {_names(kind)}")
    types = {f.name: f.type for f in dataclasses.fields(kind)}
    return kind(**{key: _coerce(value, types[key], f"{section}.{key}") for key, value in values.items()})


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """YAML 1.1 reads `1e-3` as a string: numbers given that way (files or --set) become numbers;
    anything else that is not the declared number type is refused, naming the key."""
    if annotation not in ("float", "int") or isinstance(value, bool):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a number, got {value!r}") from None
    if annotation == "int":
        if not number.is_integer():
            raise ValueError(f"{key} must be a whole number, got {value!r}")
        return int(number)
    return number


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML or TOML file (or start from the defaults) and apply `section.key=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        text = path.read_text()
        raw = tomllib.loads(text) if path.suffix == ".toml" else (yaml.safe_load(text) or {})
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like section.key=value, e.g. optim.seed=1")
        *parents, leaf = key.strip().split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)  # "3" -> 3, "true" -> True, "[a, b]" -> list
    return TrainConfig.from_dict(raw)


def save_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
