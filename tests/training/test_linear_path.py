"""The linear path of regression models: ridge on the last steps, fitted in closed form before the GRU
trains, so that the untrained model answers what the ridge baseline answers; chosen from the data;
exported with parity, a ragged batch equal to each series alone, and streaming refused in the manifest.
The shrink step keeps no correction that is not clear of noise, and early stopping waits for the
learning rate's warm-up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from export.verify import TOLERANCE
from service.batching import compute_now
from service.runtime import ModelRuntime
from tests.helpers import exported_runtime, train_tiny
from training.baselines import fit_ridge, regression_baselines
from training.config import ResolvedModelConfig, load_config
from training.data.dataset import SequenceData, Split
from training.defaults import resolve
from training.linear import fit_linear_path
from training.model import GRUModel
from training.recipe import may_stop
from training.shrink import shrink_to_baseline, standard_error


def _regression(n: int, steps: int = 12, seed: int = 0) -> Split:
    """Targets linear in the steps, plus noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, steps, 2)).astype(np.float32)
    y = (X[:, -3:, 0].sum(axis=1, keepdims=True) - X[:, :, 1].mean(axis=1, keepdims=True) + 5.0
         + 0.3 * rng.normal(size=(n, 1))).astype(np.float32)
    return Split(X, y)


def _model(steps: int, linear_steps: int, summary: bool = False) -> GRUModel:
    return GRUModel(ResolvedModelConfig(input_size=2, hidden_size=8, task="regression", output_size=1,
                                        frontend="none", patch=1, linear_steps=linear_steps,
                                        linear_summary=summary))


def test_an_untrained_model_with_a_linear_path_answers_the_ridge_baseline() -> None:
    train, test = _regression(80), _regression(40, seed=1)
    model = _model(12, 12)
    model.normaliser.fit(train.X, train.y)
    assert "ridge of the targets on the last 12 steps," in fit_linear_path(model, train)
    ours = model.eval().predict(torch.as_tensor(test.X))[0].detach().numpy()
    baselines = regression_baselines(train, test)
    np.testing.assert_allclose(ours, baselines["ridge"], rtol=1e-4, atol=1e-4)
    rmse = lambda f: float(np.sqrt(((f - test.y) ** 2).mean()))  # noqa: E731
    assert rmse(ours) < 0.5 * rmse(baselines["mean"])  # the path found the signal


def _summary(X: np.ndarray) -> np.ndarray:
    """Each feature's mean, std, min, max and slope over the steps, as numpy computes them."""
    t = np.arange(X.shape[1]) - (X.shape[1] - 1) / 2
    slope = (X * t[None, :, None]).sum(axis=1) / (t**2).sum()
    return np.concatenate([X.mean(axis=1), X.std(axis=1), X.min(axis=1), X.max(axis=1), slope], axis=1)


def test_with_its_summary_the_path_answers_ridge_on_the_steps_and_their_summary() -> None:
    """The spread of the steps is not linear in them: ridge on the steps misses it, their summary holds it
    (Tecator's spectra: RMSE 2.65 on the steps, 2.18 with the summary)."""
    rng = np.random.default_rng(0)
    X = (rng.normal(size=(160, 12, 2)) * rng.uniform(0.5, 3, size=(160, 1, 1))).astype(np.float32)
    y = (X[:, :, :1].std(axis=1) + 0.1 * rng.normal(size=(160, 1))).astype(np.float32)
    train, test = Split(X[:120], y[:120]), Split(X[120:], y[120:])
    model = _model(12, 12, summary=True)
    model.normaliser.fit(train.X, train.y)
    assert "on the last 12 steps and their summary (each feature's mean, std, min, max, slope)" in (
        fit_linear_path(model, train))
    ours = model.eval().predict(torch.as_tensor(test.X))[0].detach().numpy()
    inputs = model.normaliser.inputs(torch.as_tensor(X), torch.ones(len(X), 1)).numpy()
    features = lambda a: np.concatenate([a.reshape(len(a), -1), _summary(a)], axis=1)  # noqa: E731
    weight, bias, _ = fit_ridge(features(inputs[:120]), train.y)
    np.testing.assert_allclose(ours, features(inputs[120:]) @ weight.T + bias, rtol=1e-3, atol=1e-3)
    rmse = lambda f: float(np.sqrt(((f - test.y) ** 2).mean()))  # noqa: E731
    assert rmse(ours) < 0.5 * rmse(regression_baselines(train, test)["ridge"])


def test_the_summary_reads_each_sequences_own_steps() -> None:
    """Ragged: a sequence's summary is that of its real steps only (the zeros before them are not read)."""
    from training.model import step_summary

    rng = np.random.default_rng(1)
    steps = rng.normal(size=(2, 6, 3)).astype(np.float32)
    real = np.ones((2, 6, 1), np.float32)
    real[1, :2] = 0  # the second sequence has 4 steps
    steps *= real
    got = step_summary(torch.as_tensor(steps), torch.as_tensor(real)).numpy()
    np.testing.assert_allclose(got[0], _summary(steps[:1])[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[1], _summary(steps[1:, 2:])[0], rtol=1e-5, atol=1e-6)
    last = torch.tensor([[[0.0], [0.0], [0.0], [1.0]]])  # one real step, of value 1 (zeros before it)
    one = step_summary(last, last).numpy()
    np.testing.assert_allclose(one, [[1.0, 0.0, 1.0, 1.0, 0.0]])  # one step: no spread, no slope


def _data(task: str, n: int = 40) -> SequenceData:
    split = _regression(n)
    if task == "classification":
        split = Split(split.X, (split.y[:, 0] > 5).astype(np.int64))
    return SequenceData(task, split, split.subset(np.arange(8)), split.subset(np.arange(8)), ["a", "b"],
                        ["no", "yes"] if task == "classification" else [])


@pytest.mark.parametrize(("task", "steps"), [("regression", 12), ("classification", 0)])
def test_the_linear_path_is_chosen_for_regression_that_holds_validation_out(task: str, steps: int) -> None:
    config, lines = resolve(load_config(None, []), _data(task))
    assert config.model.linear_steps == steps and config.model.linear_summary == bool(steps)
    assert any(line.startswith("model.linear_steps=12 (auto: ridge") for line in lines) == bool(steps)
    final_fit, _ = resolve(load_config(None, ["optim.final_fit=true"]), _data(task))
    assert final_fit.model.linear_steps == 0


def test_a_summary_without_steps_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"model.linear_summary summarises the linear path's steps, and this "
                                         r"run has none \(model.linear_steps 0\)"):
        resolve(load_config(None, ["model.linear_summary=true", "model.linear_steps=0"]), _data("regression"))
    summary_off, _ = resolve(load_config(None, ["model.linear_summary=false"]), _data("regression"))
    assert (summary_off.model.linear_steps, summary_off.model.linear_summary) == (12, False)  # yours kept


def test_a_linear_path_for_classification_is_refused_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"model.linear_steps=4: the linear path is for regression"):
        resolve(load_config(None, ["model.linear_steps=4"]), _data("classification"))
    with pytest.raises(ValueError, match="model.linear_steps must be a whole number of at least 0"):
        load_config(None, ["model.linear_steps=-1"])


def test_a_correction_that_is_noise_on_the_validation_series_is_dropped() -> None:
    train, val = _regression(60), _regression(15, seed=2)
    model = _model(12, 12)
    model.normaliser.fit(train.X, train.y)
    fit_linear_path(model, train)
    torch.nn.init.normal_(model.head.weight, std=0.5)  # a correction that has nothing to do with y
    factor, line = shrink_to_baseline(model, val)
    assert factor == 0.0 and "not clear of noise" in line
    assert float(model.head.weight.detach().abs().max()) == 0.0


def test_windows_that_all_share_targets_tell_nothing() -> None:
    train, val = _regression(60), _regression(11, seed=2)
    model = _model(12, 12)
    model.normaliser.fit(train.X, train.y)
    fit_linear_path(model, train)
    factor, line = shrink_to_baseline(model, val, overlap=11)  # 11 windows of a 12-step horizon (lynx)
    assert factor == 0.0 and "too few to tell: under 13, so every two share targets" in line


def test_overlapping_forecast_windows_count_as_fewer_observations() -> None:
    """Twelve neighbouring windows that share their targets gain alike: their standard error is that of
    about one observation each, not twelve (Newey-West, as the Diebold-Mariano test)."""
    rng = np.random.default_rng(0)
    alike = torch.tensor(np.repeat(rng.normal(size=50), 12))  # 600 gains, 50 independent
    assert float(standard_error(alike, 11) / standard_error(alike, 0)) > 2.5
    independent = torch.tensor(rng.normal(size=600))
    assert 0.8 < float(standard_error(independent, 11) / standard_error(independent, 0)) < 1.2


def test_early_stopping_waits_for_the_warm_up() -> None:
    assert not may_stop("onecycle", 29, 100) and may_stop("onecycle", 30, 100)
    assert may_stop("constant", 1, 100)


def _write(split: Split, path: Path) -> str:
    rows = [pd.DataFrame({"series_id": f"s{i:03d}", "step": np.arange(n), "a": x[:n, 0], "b": x[:n, 1],
                          "label": float(y[0])})
            for i, (x, y, n) in enumerate(zip(split.X, split.y, split.lengths, strict=True))]
    pd.concat(rows).to_csv(path, index=False)
    return str(path)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> ModelRuntime:
    root = tmp_path_factory.mktemp("linear")
    split = _regression(60)
    ragged = Split(split.X, split.y, np.random.default_rng(3).integers(6, 13, size=60))
    run = train_tiny(root / "runs", "linear", "data.dataset=file", "data.task=regression",
                     f"data.path={_write(ragged, root / 'train.csv')}", "optim.max_epochs=3",
                     "optim.plots=false", "optim.tensorboard=false")
    assert run.test_metrics["versus_baselines"]["best_baseline"] == "ridge"
    return exported_runtime(run.checkpoint, root / "models", "linear")


def test_the_manifest_refuses_streaming_with_the_reason(served: ModelRuntime) -> None:
    assert "its linear path reads the last 12 steps" in (served.manifest.streaming_refusal or "")


def test_a_ragged_batch_answers_each_series_as_alone(served: ModelRuntime) -> None:
    rng = np.random.default_rng(4)
    sequences = [rng.normal(size=(n, 2)).astype(np.float32) for n in (12, 3, 20, 7)]
    together = compute_now(served, sequences).outputs
    for i, seq in enumerate(sequences):
        assert np.abs(together[i] - served.predict(seq[None])[0]).max() <= TOLERANCE


def test_a_gru_that_finds_what_ridge_cannot_keeps_its_correction(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(240, 12, 2)).astype(np.float32)
    # the largest product of the two features: neither the steps nor each feature's summary give it
    y = (X[:, :, :1] * X[:, :, 1:]).max(axis=1).astype(np.float32)
    run = train_tiny(tmp_path, "peak", "data.dataset=file", "data.task=regression", "optim.time_budget=null",
                     f"data.path={_write(Split(X, y), tmp_path / 'train.csv')}", "optim.max_epochs=40",
                     "optim.plots=false", "optim.tensorboard=false")
    metrics = run.test_metrics
    assert metrics["correction_kept"] > 0.5
    assert metrics["rmse"] < 0.8 * metrics["baselines"]["ridge"]["rmse"]
