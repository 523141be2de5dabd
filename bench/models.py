"""The two benchmark models, trained briefly and exported by the real pipeline (speed does not depend
on accuracy): small = ItalyPowerDemand (1 feature, 24 steps, hidden 64, 2 layers, 2 classes); mid = a
deterministic synthetic set (12 features, 64 steps, hidden 128, 2 layers, 9 classes: class-dependent
frequencies and phases plus noise). A fixed-length synthetic set is used because the 12-channel set
aeon ships (JapaneseVowels) has ragged lengths 7-29, not 64 steps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class BenchModel:
    name: str
    features: int
    steps: int
    hidden: int
    classes: int


SMALL = BenchModel("small", 1, 24, 64, 2)
MID = BenchModel("mid", 12, 64, 128, 9)
MODELS = (SMALL, MID)
# The overload and soak scripts (bench/overload.py, bench/soak.py): mid's inputs, hidden 256, so that
# inference (about 4x mid's per sequence), not HTTP, limits capacity on a small machine.
HEAVY = BenchModel("heavy", 12, 64, 256, 9)


def synthetic_npz(path: Path, n: int = 900, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % MID.classes
    t = np.arange(MID.steps)[None, :, None]
    freq = (1 + y)[:, None, None] * 0.05 * (1 + np.arange(MID.features) / MID.features)[None, None, :]
    noise = 0.3 * rng.standard_normal((n, MID.steps, MID.features))
    X = np.sin(2 * np.pi * freq * t + y[:, None, None]) + noise
    np.savez(path, X=X.astype(np.float32), y=y.astype(np.int64))
    return path


def build(work: Path, models: tuple[BenchModel, ...] = MODELS) -> dict[str, Path]:
    """Train and export the models into work/models (skipped when already there); name -> bundle dir."""
    from export.bundle import export_checkpoint
    from training.config import load_config
    from training.loop import fit

    work.mkdir(parents=True, exist_ok=True)
    repository = work / "models"
    data = {
        SMALL.name: ["data.dataset=ItalyPowerDemand"],
        MID.name: ["data.dataset=file", f"data.path={synthetic_npz(work / 'mid.npz')}",
                   "data.task=classification"],
    }
    data[HEAVY.name] = data[MID.name]
    bundles = {}
    for model in models:
        bundle = repository / model.name / "1"
        if not (bundle / "manifest.json").exists():
            overrides = [f"name={model.name}", f"run_dir={work / 'runs'}", "progress=false",
                         f"model.hidden_size={model.hidden}", "model.num_layers=2",
                         "optim.max_epochs=2", "optim.batch_size=64", *data[model.name]]
            result = fit(load_config(None, overrides))
            export_checkpoint(result.checkpoint, repository, model.name, version=1, overwrite=True)
        bundles[model.name] = bundle
    return bundles
