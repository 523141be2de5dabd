"""Training on real data with a tiny budget: sensible metrics, determinism, plain-data checkpoints."""

from __future__ import annotations

import json

import numpy as np
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
    assert {"epoch", "train_loss", "learning_rate"} <= set(first)  # a final fit: no validation split
    assert json.loads((italy_run.run_dir / "test_metrics.json").read_text()) == italy_run.test_metrics
    assert italy_run.best_epoch == len(lines)  # the last epoch is the shipped one


def test_one_cycle_warms_up_then_anneals_to_almost_nothing(italy_run) -> None:
    rates = [json.loads(line)["learning_rate"] for line in
             (italy_run.run_dir / "metrics.jsonl").read_text().splitlines()]
    peak = rates.index(max(rates))
    assert 0 < peak < len(rates) - 1 and rates[-1] < rates[peak] / 1000
    assert rates[: peak + 1] == sorted(rates[: peak + 1])
    assert rates[peak:] == sorted(rates[peak:], reverse=True)


def test_without_final_fit_the_validation_split_picks_the_epoch(tmp_path) -> None:
    run = train_tiny(tmp_path, "held_out", "optim.final_fit=false", "optim.max_epochs=6")
    records = [json.loads(line) for line in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert {"val_loss", "val_accuracy"} <= set(records[0])
    assert run.best_epoch == min(records, key=lambda r: r["val_loss"])["epoch"]


def test_airline_forecast_reports_metrics_beside_seasonal_naive(airline_run) -> None:
    metrics = airline_run.test_metrics
    assert {"mae", "rmse", "mape", "mase"} <= set(metrics)
    assert metrics["baselines"]["seasonal_naive"]["mape"] > 9.0  # 1959 repeated for 1960 misses by ~10%
    assert set(metrics["baselines"]) == {"naive", "seasonal_naive", "ets", "theta"}
    assert metrics["seasonal_period"] == 12


def test_same_seed_gives_identical_weights(tmp_path) -> None:
    a = train_tiny(tmp_path / "a", "run", "optim.max_epochs=3", "optim.patience=5")
    b = train_tiny(tmp_path / "b", "run", "optim.max_epochs=3", "optim.patience=5")
    sa, sb = Checkpoint.load(a.checkpoint).state_dict, Checkpoint.load(b.checkpoint).state_dict
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    c = train_tiny(tmp_path / "c", "run", "optim.max_epochs=3", "optim.patience=5", "optim.seed=1")
    sc = Checkpoint.load(c.checkpoint).state_dict
    assert not torch.equal(sa["layers.0.0.weight_hh_l0"], sc["layers.0.0.weight_hh_l0"])


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


def test_normalisation_is_fitted_on_the_training_series_only(italy_run) -> None:
    checkpoint = Checkpoint.load(italy_run.checkpoint)
    data = load_data(DataConfig(dataset="ItalyPowerDemand"))
    train = np.concatenate([data.train.X, data.val.X])  # a final fit trains on both; never on test
    assert abs(checkpoint.preprocessing["feature_mean"][0] - float(train.mean())) < 1e-5
    assert abs(checkpoint.preprocessing["feature_std"][0] - float(train.std(ddof=1))) < 1e-4
