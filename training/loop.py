"""fit(): seed -> data -> model -> AdamW with gradient clipping and early stopping -> best checkpoint
-> test metrics. Deterministic on CPU under a fixed seed."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from training.checkpoint import save_checkpoint
from training.config import TrainConfig, save_config
from training.data import SequenceData, Split, load_data
from training.data.dataset import PAD_LABEL
from training.metrics import classification_metrics, forecast_metrics
from training.model import GRUModel


@dataclass
class FitResult:
    run_dir: Path
    checkpoint: Path
    test_metrics: dict[str, Any]
    best_epoch: int


def seed_everything(seed: int, threads: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def fit(config: TrainConfig) -> FitResult:
    seed_everything(config.optim.seed, config.optim.threads)
    data = load_data(config.data)
    _describe_model(config, data)
    model = GRUModel(config.model)
    model.normaliser.fit(data.train.X, data.train.y if data.task == "regression" else None,
                         lengths=data.train.lengths)
    run_dir = Path(config.run_dir) / config.name
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    checkpoint = run_dir / "checkpoint.pt"
    best_epoch = _train(model, data, config, run_dir, checkpoint)
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"])
    test = evaluate(model, data.test, data)
    payload = _payload(model, config, data, best_epoch, test)
    save_checkpoint(checkpoint, payload)
    (run_dir / "test_metrics.json").write_text(json.dumps(test, indent=2))
    return FitResult(run_dir, checkpoint, test, best_epoch)


def _describe_model(config: TrainConfig, data: SequenceData) -> None:
    """The data decides the shapes; the config decides the rest."""
    config.model.input_size = data.train.X.shape[2]
    config.model.task = data.task
    config.model.output_size = data.output_size
    config.model.window_scaling = data.window_scaling


def _train(model: GRUModel, data: SequenceData, config: TrainConfig, run_dir: Path, ckpt: Path) -> int:
    opt = config.optim
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.learning_rate, weight_decay=opt.weight_decay)
    generator = torch.Generator().manual_seed(opt.seed)
    best_loss, best_epoch, stale = float("inf"), 0, 0
    epochs = tqdm(range(1, opt.max_epochs + 1), desc=config.name, disable=not config.progress)
    with open(run_dir / "metrics.jsonl", "w") as log:
        for epoch in epochs:
            started = time.perf_counter()
            train_loss = _train_epoch(model, data.train, optimizer, opt.batch_size, opt.grad_clip, generator)
            val = evaluate(model, data.val, data)
            record = {"epoch": epoch, "train_loss": train_loss, **{f"val_{k}": v for k, v in val.items()},
                      "seconds": round(time.perf_counter() - started, 4)}
            log.write(json.dumps(record) + "\n")
            log.flush()
            epochs.set_postfix(train=f"{train_loss:.4f}", val=f"{val['loss']:.4f}")
            if not np.isfinite(train_loss):
                raise FloatingPointError(f"training loss became {train_loss} at epoch {epoch}; "
                                         "lower optim.learning_rate or optim.grad_clip")
            if val["loss"] < best_loss:
                best_loss, best_epoch, stale = val["loss"], epoch, 0
                save_checkpoint(ckpt, _payload(model, config, data, epoch, {}))
            else:
                stale += 1
                if stale >= opt.patience:
                    break
    return best_epoch


def _loss(
    model: GRUModel, X: torch.Tensor, y: torch.Tensor, task: str, lengths: torch.Tensor | None
) -> torch.Tensor:
    out, _, level = model(X, lengths=lengths)
    if task == "classification":
        return nn.functional.cross_entropy(out, y)
    if task == "tagging":  # (B, T, C) vs (B, T); padded steps carry PAD_LABEL and are ignored
        return nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), ignore_index=PAD_LABEL)
    return nn.functional.mse_loss(out, model.normaliser.targets(y, level))


def _batch(
    split: Split, idx: torch.Tensor, task: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """X, y and lengths of the sequences `idx`, cut to the longest of them (None: none is padded)."""
    lengths = torch.as_tensor(split.lengths)[idx]
    steps = int(lengths.max())
    X, y = torch.as_tensor(split.X)[idx, :steps], torch.as_tensor(split.y)[idx]
    if task == "tagging":  # labels (N, T) are cut like X
        y = y[:, :steps]
    return X, y, (lengths if bool((lengths < steps).any()) else None)


def _train_epoch(
    model: GRUModel, split: Split, optimizer: torch.optim.Optimizer,
    batch_size: int, grad_clip: float, generator: torch.Generator,
) -> float:
    model.train()
    order = torch.randperm(len(split), generator=generator)
    total = 0.0
    for start in range(0, len(split), batch_size):
        idx = order[start : start + batch_size]
        X, y, lengths = _batch(split, idx, model.config.task)
        loss = _loss(model, X, y, model.config.task, lengths)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        total += loss.item() * len(idx)
    return total / len(split)


@torch.no_grad()
def evaluate(model: GRUModel, split: Split, data: SequenceData) -> dict[str, Any]:
    model.eval()
    X, y, lengths = _batch(split, torch.arange(len(split)), data.task)
    metrics: dict[str, Any] = {"loss": _loss(model, X, y, data.task, lengths).item()}
    probs_or_forecast = model.predict(X, lengths=lengths)[0].numpy()
    if data.task == "classification":
        return metrics | classification_metrics(split.y, probs_or_forecast.argmax(axis=1))
    if data.task == "tagging":  # every valid step of every sequence counts once
        valid = y.numpy() != PAD_LABEL
        return metrics | classification_metrics(y.numpy()[valid], probs_or_forecast.argmax(axis=2)[valid])
    is_test = split is data.test
    metrics |= forecast_metrics(split.y, probs_or_forecast, data.test_mase_scale if is_test else None)
    if is_test and data.test_naive is not None:
        naive = forecast_metrics(split.y, data.test_naive, data.test_mase_scale)
        metrics["seasonal_naive"] = naive
    return metrics


def _payload(
    model: GRUModel, config: TrainConfig, data: SequenceData, epoch: int, test: dict[str, Any]
) -> dict[str, Any]:
    return {
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "config": config.to_dict(),
        "preprocessing": model.normaliser.describe(),
        "task": data.task,
        "feature_names": data.feature_names,
        "label_names": data.label_names,
        "max_train_length": data.max_length,
        "ragged": any(split.ragged for split in (data.train, data.val, data.test)),
        "data_source": data.source,
        "epoch": epoch,
        "test_metrics": test,
    }
