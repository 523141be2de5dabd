"""The checkpoint: one typed object that training writes and export reads (weights, the resolved config,
preprocessing, labels, metrics). On disk it is plain data (tensors, numbers, strings), never a pickled
module, loaded with `weights_only=True`, and written atomically so a crash never leaves half a file."""

from __future__ import annotations

import io
import pickle
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from training.config import ResolvedConfig
from training.model import GRUModel
from training.publish import write_atomic

FORMAT_VERSION = 2  # 2: the typed Checkpoint; 1 (the same keys as a dict, plus "task") still loads


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    config: ResolvedConfig  # model.input_size, task and output_size come from the data
    preprocessing: dict[str, Any]  # Normaliser.describe(): also inside state_dict as buffers
    feature_names: list[str]
    label_names: list[str]  # classification and tagging; [] otherwise
    max_train_length: int  # the longest training sequence (steps)
    ragged: bool  # the data held sequences of different lengths
    data_source: str
    epoch: int  # the best epoch, whose weights these are
    test_metrics: dict[str, Any] = field(default_factory=dict)  # empty until training finished
    min_train_length: int = 1  # the shortest training sequence (steps); 1 in checkpoints that predate it

    @classmethod
    def of(cls, model: GRUModel, config: ResolvedConfig, **facts: Any) -> Checkpoint:
        """The model's current weights (copied to the CPU) and preprocessing, with the run's facts."""
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return cls(state_dict=state, config=config, preprocessing=model.normaliser.describe(), **facts)

    def save(self, path: Path) -> None:
        save_payload(path, asdict(self) | {"config": self.config.to_dict()})

    @classmethod
    def load(cls, path: str | Path) -> Checkpoint:
        payload = load_payload(path, accept=(1, FORMAT_VERSION))
        payload.pop("task", None)  # format 1 repeated config.model.task
        if "optimizer" in payload:  # before: "unexpected keyword argument 'optimizer'"
            raise ValueError(f"{path} is a run's resume state (for gru train --resume), not its model: use "
                             f"{Path(path).with_name('checkpoint.pt')}")
        try:
            return cls(**(payload | {"config": ResolvedConfig.from_dict(payload["config"])}))
        except (TypeError, KeyError) as exc:
            raise ValueError(f"{path}: not a gru-serve training checkpoint ({exc})") from exc

    def model(self) -> GRUModel:
        """A GRUModel in eval mode holding these weights."""
        model = GRUModel(self.config.model)
        model.load_state_dict(self.state_dict)
        return model.eval()


def save_payload(path: Path, payload: dict[str, Any]) -> None:
    """Plain data (tensors, numbers, strings, dicts) to `path`, atomically, with the format version."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buffer)
    write_atomic(path, buffer.getvalue())


def load_payload(path: str | Path, accept: tuple[int, ...] = (FORMAT_VERSION,)) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint {path} is a folder; give the checkpoint.pt in it")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns of a foreign pickle's protocol before refusing it
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)  # refuses pickled objects
    except PermissionError:
        raise
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as exc:
        reason = ("it holds pickled Python objects, which are never loaded"
                  if isinstance(exc, pickle.UnpicklingError) else str(exc).strip() or type(exc).__name__)
        raise ValueError(f"{path}: not a checkpoint gru train wrote, whole ({reason}); give a run's "
                         "checkpoint.pt, or train again") from None
    version = payload.pop("format_version", None) if isinstance(payload, dict) else None
    if version not in accept:
        raise ValueError(f"{path}: checkpoint format_version {version!r}, expected one of {list(accept)}")
    return payload

