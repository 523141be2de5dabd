"""Checkpoints: state_dict + resolved config + preprocessing + label names, as plain data (never a
pickled module), written atomically so a crash never leaves a half-written file."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import torch

from training.config import ModelConfig, TrainConfig
from training.model import GRUModel
from training.publish import write_atomic

FORMAT_VERSION = 1


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **payload}, buffer)
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=True)  # refuses pickled objects
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format_version {version!r}, expected {FORMAT_VERSION}")
    return payload


def model_from_checkpoint(payload: dict[str, Any]) -> GRUModel:
    config = TrainConfig.from_dict(payload["config"])
    model = GRUModel(ModelConfig(**vars(config.model)))
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
