"""A new user's path end to end: a ragged long-format CSV (three speakers of JapaneseVowels, 7-29 steps,
12 channels, the official split as data.test_path) -> `gru train` -> `gru export` -> `gru serve` -> the
whole test split in one native predict request, sequences of their own lengths -> the served accuracy
equals the accuracy training reported."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd

from gru_cli import main
from tests.helpers import Server

SPEAKERS = ["1", "2", "3"]


def _write_csv(split: str, path: Path, limit: int) -> tuple[list[np.ndarray], list[str]]:
    """The first `limit` series of SPEAKERS in aeon's official `split`, one row per (series, step)."""
    from aeon.datasets import load_classification

    X, y = load_classification("JapaneseVowels", split=split)
    chosen = [i for i, label in enumerate(y) if label in SPEAKERS][:limit]
    series, labels = [np.asarray(X[i]).T for i in chosen], [str(y[i]) for i in chosen]  # (T_i, 12)
    frames = []
    for n, (steps, label) in enumerate(zip(series, labels, strict=True)):
        frame = pd.DataFrame(steps, columns=[f"coefficient_{c}" for c in range(12)])
        frame.insert(0, "step", np.arange(len(steps)))
        frame.insert(0, "series_id", f"{split}_{n:03d}")
        frames.append(frame.assign(label=f"speaker_{label}"))
    pd.concat(frames).sample(frac=1.0, random_state=0).to_csv(path, index=False)  # rows in any order
    return series, [f"speaker_{label}" for label in labels]


def test_ragged_user_csv_trains_exports_serves_and_keeps_its_accuracy(tmp_path: Path) -> None:
    train_series, _ = _write_csv("train", tmp_path / "train.csv", limit=90)
    test_series, test_labels = _write_csv("test", tmp_path / "test.csv", limit=80)
    assert len({len(s) for s in train_series + test_series}) > 10  # really ragged
    code = main(["train", "--name", "vowels", "--run-dir", str(tmp_path / "runs"), "--no-progress",
                 "--max-epochs", "12", "--set", "data.dataset=file",
                 "--set", f"data.path={tmp_path / 'train.csv'}",
                 "--set", f"data.test_path={tmp_path / 'test.csv'}", "--set", "data.task=classification",
                 "--set", "model.hidden_size=16", "--set", "model.num_layers=1",
                 "--set", "optim.learning_rate=0.01", "--set", "optim.plots=false",
                 "--set", "optim.tensorboard=false"])
    assert code == 0
    reported = json.loads((tmp_path / "runs" / "vowels" / "test_metrics.json").read_text())["accuracy"]
    repository = tmp_path / "models"
    assert main(["export", "--checkpoint", str(tmp_path / "runs" / "vowels" / "checkpoint.pt"),
                 "--repository", str(repository), "--name", "vowels"]) == 0
    server = Server(repository).start()
    try:
        body = {"sequences": [s.tolist() for s in test_series]}  # 80 sequences of 7-29 steps, one request
        response = httpx.post(f"{server.url}/models/vowels/predict", json=body, timeout=30)
    finally:
        server.stop()
    assert response.status_code == 200, response.text
    predicted = [p["label"] for p in response.json()["predictions"]]
    served = float(np.mean([p == t for p, t in zip(predicted, test_labels, strict=True)]))
    assert served == reported and reported > 0.6  # learned (chance: 1/3), and served exactly as reported
