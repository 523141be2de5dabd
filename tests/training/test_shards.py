"""Rank-sharded Parquet (data.sharded): ItalyPowerDemand written as long-format Parquet."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from training.checkpoint import Checkpoint
from training.config import DataConfig
from training.data import load_data
from training.data.shards import read_shard


def _long_parquet(X: np.ndarray, y: np.ndarray, path: Path) -> Path:
    n, t, _ = X.shape
    frame = pd.DataFrame({"series_id": np.repeat([f"s{i:04d}" for i in range(n)], t),
                          "step": np.tile(np.arange(t), n), "value": X[:, :, 0].ravel(),
                          "label": np.repeat(y, t).astype(str)})
    frame.sample(frac=1.0, random_state=0).to_parquet(path, row_group_size=500)  # any row order
    return path


@pytest.fixture(scope="module")
def italy_parquet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    data = load_data(DataConfig(dataset="ItalyPowerDemand", val_fraction=0.2))
    root = tmp_path_factory.mktemp("parquet")
    X = np.concatenate([data.train.X, data.val.X])
    y = np.concatenate([data.train.y, data.val.y])
    return _long_parquet(X, y, root / "train.parquet"), _long_parquet(data.test.X, data.test.y,
                                                                       root / "test.parquet")


def test_rank_shards_are_disjoint_and_complete_and_read_in_batches(italy_parquet) -> None:
    train, _ = italy_parquet
    whole = pd.read_parquet(train)
    shards = [read_shard(train, None, "series_id", rank, 3, batch_rows=128) for rank in range(3)]
    ids = [set(s["series_id"]) for s in shards]
    assert all(ids) and not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == set(whole["series_id"])
    assert sum(len(s) for s in shards) == len(whole)


def test_two_ranks_reading_their_shards_train_one_model_with_global_statistics(italy_parquet,
                                                                                  tmp_path: Path) -> None:
    train, test = italy_parquet
    args = ["train", "--run-dir", str(tmp_path), "--no-progress", "--max-epochs", "10",
            "--set", "data.dataset=file", "--set", f"data.path={train}", "--set", f"data.test_path={test}",
            "--set", "data.task=classification", "--set", "data.sharded=true",
            "--set", "model.hidden_size=16", "--set", "model.num_layers=1",
            "--set", "optim.learning_rate=0.01", "--set", "optim.batch_size=8",
            "--set", "optim.plots=false", "--set", "optim.tensorboard=false"]
    for name, launcher in [("one", [sys.executable, "-m", "gru_cli"]),
                           ("two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                    "--nproc-per-node=2", "-m", "gru_cli"])]:
        done = subprocess.run(launcher + args + ["--name", name], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    one, two = (Checkpoint.load(tmp_path / n / "checkpoint.pt") for n in ("one", "two"))
    # all-reduced statistics over both shards == statistics of the whole training split
    assert np.allclose(one.preprocessing["feature_mean"], two.preprocessing["feature_mean"], atol=1e-5)
    assert np.allclose(one.preprocessing["feature_std"], two.preprocessing["feature_std"], atol=1e-5)
    assert two.label_names == one.label_names == ["0", "1"]  # union of both shards
    assert "shard 0 of 2" in two.data_source
    assert two.test_metrics["accuracy"] > 0.8 and one.test_metrics["accuracy"] > 0.8
