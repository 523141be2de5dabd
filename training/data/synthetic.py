"""SyntheticRegimes: a seeded generator for per-step tagging (many-to-many).

Each sequence (30 to 90 steps, one feature) is a run of segments (5 to 20 steps each); a segment is in
one of three regimes and every step is labelled with its segment's regime:
  idle         value = 0 + noise(0.1)
  oscillating  value = sin(2π t / 8) + noise(0.1)      (t counts from the segment's start)
  high         value = 2 + noise(0.3)
Consecutive segments differ in regime. A causal (unidirectional) model can tag a step from the steps
up to it, so tagging works while streaming. Same seed, same data: train, validation and test use the
seeds 0, 1 and 2 and hold 400, 100 and 200 sequences.
"""

from __future__ import annotations

import numpy as np

from training.config import DataConfig
from training.data.dataset import PAD_LABEL, SequenceData, Split, pad_sequences

REGIMES = ["idle", "oscillating", "high"]
MIN_LENGTH, MAX_LENGTH = 30, 90
MIN_SEGMENT, MAX_SEGMENT = 5, 20


def regime_sequence(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One sequence: values (T, 1) float32 and labels (T,) int64."""
    length = int(rng.integers(MIN_LENGTH, MAX_LENGTH + 1))
    values: list[np.ndarray] = []
    labels: list[int] = []
    regime = int(rng.integers(len(REGIMES)))
    while len(labels) < length:
        steps = int(rng.integers(MIN_SEGMENT, MAX_SEGMENT + 1))
        t = np.arange(steps)
        base = [np.zeros(steps), np.sin(2 * np.pi * t / 8), np.full(steps, 2.0)][regime]
        noise = rng.normal(0.0, [0.1, 0.1, 0.3][regime], steps)
        values.append(base + noise)
        labels.extend([regime] * steps)
        regime = (regime + int(rng.integers(1, len(REGIMES)))) % len(REGIMES)  # a different regime
    x = np.concatenate(values)[:length].astype(np.float32).reshape(-1, 1)
    return x, np.array(labels[:length], dtype=np.int64)


def regime_split(count: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    pairs = [regime_sequence(rng) for _ in range(count)]
    X, lengths = pad_sequences([x for x, _ in pairs])
    y = np.full(X.shape[:2], PAD_LABEL, dtype=np.int64)
    for i, (_, labels) in enumerate(pairs):
        y[i, : len(labels)] = labels
    return Split(X, y, lengths)


def synthetic_regimes(config: DataConfig) -> SequenceData:
    return SequenceData(
        task="tagging",
        train=regime_split(400, seed=0), val=regime_split(100, seed=1), test=regime_split(200, seed=2),
        feature_names=["value"], label_names=list(REGIMES),
        source="SyntheticRegimes (training/data/synthetic.py), seeds 0/1/2",
    )
