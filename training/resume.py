"""Resuming an interrupted run: after every epoch rank 0 writes `last.pt` (weights, optimiser, the
random states and the early-stopping counters), atomically. `gru train --resume` continues from it, so a
run killed at any point (SIGKILL mid-epoch included) finishes with the same weights and metrics as an
uninterrupted run with the same seed: bit-identical on CPU."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from training.checkpoint import load_payload, save_payload

LAST = "last.pt"
IGNORED_KEYS = {"progress"}  # config keys that may differ between the run and its resumption


@dataclass
class Progress:
    epoch: int = 0  # epochs completed
    best_loss: float = math.inf
    best_epoch: int = 0
    stale: int = 0  # epochs since the best


def save_last(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              schedule: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator, progress: Progress,
              config: dict[str, Any]) -> None:
    save_payload(run_dir / LAST, {
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "schedule": schedule.state_dict(),
        "generator": generator.get_state(),  # the order of examples
        "torch_rng": torch.get_rng_state(),  # dropout
        "progress": asdict(progress),
        "config": config,
    })


def load_last(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              schedule: torch.optim.lr_scheduler.LRScheduler, generator: torch.Generator,
              config: dict[str, Any]) -> Progress:
    """Restore the state saved after the last completed epoch; Progress() when there is none."""
    path = run_dir / LAST
    if not path.exists():
        return Progress()
    saved = load_payload(path)
    changed = _differences(saved["config"], config)
    if changed:
        raise ValueError(f"cannot resume {path}: the config changed ({', '.join(changed)}); "
                         "resume with the run's own config or start a new run name")
    model.load_state_dict(saved["state_dict"])
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    return Progress(**saved["progress"])


def saved_config(run_dir: Path) -> dict[str, Any] | None:
    """The config an interrupted run was started with (its settings resolved), or None when there is
    no `last.pt`."""
    path = run_dir / LAST
    return load_payload(path)["config"] if path.exists() else None


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    keys = (set(old) | set(new)) - IGNORED_KEYS
    changed = []
    for key in sorted(keys):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return changed

