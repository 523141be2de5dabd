"""The end of a run says when it underfits or memorises, with what to try; a run that does neither says
nothing; a real tiny run that cannot fit its training series is called underfit in its report."""

from __future__ import annotations

from pathlib import Path

from training.config import load_config
from training.diagnose import baseline_name, diagnose
from training.loop import fit


def test_a_classifier_that_misses_its_own_training_series_underfits() -> None:
    [line] = diagnose("classification", {"accuracy": 0.62, "loss": 1.21}, {"accuracy": 0.49, "loss": 1.5},
                      "test")
    assert line.startswith("underfits: training accuracy 0.620 (loss 1.21)") and "--time-budget" in line


def test_a_classifier_perfect_on_training_and_far_worse_held_out_memorises() -> None:
    [line] = diagnose("classification", {"accuracy": 1.0, "loss": 0.004}, {"accuracy": 0.28, "loss": 3.1},
                      "test")
    assert line.startswith("memorises: training accuracy 1.000 (loss 0.004) against test accuracy 0.280")
    assert "optim.weight_decay" in line and "optim.jitter" in line


def test_a_regularised_fit_far_better_on_training_than_held_out_memorises_too() -> None:
    [line] = diagnose("classification", {"accuracy": 0.99, "loss": 0.3}, {"accuracy": 0.23, "loss": 3.0},
                      "test")
    assert line.startswith("memorises")


def test_a_good_fit_says_nothing() -> None:
    assert diagnose("classification", {"accuracy": 1.0, "loss": 0.01}, {"accuracy": 0.95, "loss": 0.2},
                    "validation") == []
    assert diagnose("regression", {"loss": 0.2}, {"loss": 0.3}, "test") == []


def test_regression_underfits_and_memorises_in_normalised_mse() -> None:
    assert diagnose("regression", {"loss": 0.8}, {"loss": 0.9}, "test")[0].startswith("underfits")
    assert diagnose("regression", {"loss": 0.001}, {"loss": 0.5}, "test")[0].startswith("memorises")


def test_a_value_model_that_answers_its_baseline_says_so_rather_than_underfits() -> None:
    [line] = diagnose("forecast", {"loss": 0.86}, {"loss": 0.9}, "validation",
                      baseline=baseline_name(12, 0.0, 0))
    assert line.startswith("answers its baseline: the GRU's correction to it was not clear of noise")
    assert "so the model answers the seasonal naive at period 12; longer" in line


def test_the_baseline_answered_is_named_not_listed() -> None:
    """Before, every run listed all four kinds (a regression run's the seasonal naive too)."""
    assert baseline_name(0, 0.0, 4) == "the linear path (ridge on the last 4 steps)"
    assert baseline_name(0, 0.0, 4, True) == "the linear path (ridge on the last 4 steps and their summary)"
    assert baseline_name(0, 0.0, 0) == "the training mean"
    assert baseline_name(1, 0.5, 0) == "the naive plus 0.5 of the window's drift"
    assert baseline_name(1, 0.0, 0) == "the naive (the last value)"
    assert baseline_name(11, 0.0, 24) == ("the seasonal naive at period 11 plus the linear path (ridge on "
                                          "the last 24 steps)")


def test_a_run_too_short_to_fit_is_reported_as_underfitting(tmp_path: Path) -> None:
    config = load_config(None, ["name=short", f"run_dir={tmp_path}", "progress=false", "model.hidden_size=4",
                                "optim.max_epochs=1", "optim.learning_rate=1e-5", "optim.plots=false",
                                "optim.tensorboard=false"])
    result = fit(config)
    assert result.diagnosis and result.diagnosis[0].startswith("underfits")
    assert f"- {result.diagnosis[0]}" in (result.run_dir / "report.md").read_text()
