"""Training on real data with a tiny budget: sensible metrics, determinism, plain-data checkpoints."""

from __future__ import annotations

import json

import torch

from tests.helpers import train_tiny
from training.checkpoint import Checkpoint
from training.config import DataConfig
from training.data import load_data


def test_italy_power_smoke_run_reaches_a_sensible_accuracy(italy_run) -> None:
    assert italy_run.test_metrics["accuracy"] > 0.85  # chance is 0.5; the full default run gets ~0.95
    assert 0 < italy_run.test_metrics["macro_f1"] <= 1
    lines = (italy_run.run_dir / "metrics.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert {"epoch", "train_loss", "val_loss", "val_accuracy"} <= set(first)
    assert json.loads((italy_run.run_dir / "test_metrics.json").read_text()) == italy_run.test_metrics


def test_airline_forecast_reports_metrics_beside_seasonal_naive(airline_run) -> None:
    metrics = airline_run.test_metrics
    assert {"mae", "rmse", "mape", "mase"} <= set(metrics)
    assert metrics["seasonal_naive"]["mape"] > 9.0  # 1959 repeated for 1960 misses by ~10%


def test_same_seed_gives_identical_weights(tmp_path) -> None:
    a = train_tiny(tmp_path / "a", "run", "optim.max_epochs=3", "optim.patience=5")
    b = train_tiny(tmp_path / "b", "run", "optim.max_epochs=3", "optim.patience=5")
    sa, sb = Checkpoint.load(a.checkpoint).state_dict, Checkpoint.load(b.checkpoint).state_dict
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = train_tiny(tmp_path / "c", "run", "optim.max_epochs=3", "optim.patience=5", "optim.seed=1")
    sc = Checkpoint.load(c.checkpoint).state_dict
    assert not torch.equal(sa["gru.weight_hh_l0"], sc["gru.weight_hh_l0"])


def test_checkpoint_is_plain_data_and_rebuilds_the_model(italy_run) -> None:
    checkpoint = Checkpoint.load(italy_run.checkpoint)  # weights_only=True: no pickled objects
    assert checkpoint.label_names == ["1", "2"] and checkpoint.feature_names == ["value"]
    assert checkpoint.config.model.task == "classification" and checkpoint.max_train_length == 24
    model = checkpoint.model()
    data = load_data(DataConfig(dataset="ItalyPowerDemand"))
    with torch.no_grad():
        probs, _ = model.predict(torch.as_tensor(data.test.X))
    accuracy = (probs.argmax(1).numpy() == data.test.y).mean()
    assert abs(accuracy - italy_run.test_metrics["accuracy"]) < 1e-9


def test_normalisation_is_fitted_on_the_training_split_only(italy_run) -> None:
    checkpoint = Checkpoint.load(italy_run.checkpoint)
    train = load_data(DataConfig(dataset="ItalyPowerDemand")).train.X
    assert abs(checkpoint.preprocessing["feature_mean"][0] - float(train.mean())) < 1e-5
    assert abs(checkpoint.preprocessing["feature_std"][0] - float(train.std(ddof=1))) < 1e-4
