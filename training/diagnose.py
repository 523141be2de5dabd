"""Whether a finished run underfits or memorises, and what to try: read from the kept model's loss and
score on its own training series against the held-out series (the validation split when there is one,
else the test split: nothing is chosen from it, the diagnosis only says what it shows).

- underfits: the model does not fit its own training series (classification: training accuracy below
  UNDERFIT_ACCURACY; regression: the normalised training MSE above UNDERFIT_MSE, less than half the
  variance explained);
- memorises: it fits them while the held-out series score far worse (classification: a held-out accuracy
  MEMORISE_GAP or more below the training accuracy; regression: a training MSE below MEMORISE_LOSS and a
  held-out MSE 10× that).

Tagging also reads the test against its majority baseline (training/baselines.py): labels that no test
step holds, and a model no better than the majority label everywhere, are said (`test_labels`).

A value model whose correction the noise test dropped (training/shrink.py) answers its baseline: its
training MSE is the baseline's, so it is not called underfit; the line says what happened instead.
"""

from __future__ import annotations

from typing import Any

UNDERFIT_ACCURACY, UNDERFIT_MSE = 0.9, 0.5
MEMORISE_LOSS, MEMORISE_GAP = 0.05, 0.2

UNDERFIT_TRY = ("try a larger --time-budget (or optim.max_epochs), a higher optim.learning_rate, a larger "
                "model.hidden_size or model.num_layers=2; and look at the data: series on very different "
                "scales, labels that the inputs do not determine")
MEMORISE_TRY = ("try stronger regularisation (optim.weight_decay, model.dropout), stronger augmentation "
                "(optim.jitter, optim.scaling), a smaller model.hidden_size, fewer epochs; more training "
                "series help most")


BASELINE_KEPT = ("answers its baseline: the GRU's correction to it was not clear of noise on the validation "
                 "series (correction_kept 0), so the model answers {baseline}; longer or more series give "
                 "the test more to go on")


def baseline_name(seasonal_skip: int, drift: float, linear_steps: int, linear_summary: bool = False) -> str:
    """The start a value model answers where its correction is dropped. Before, the diagnosis listed every
    kind ("the seasonal naive, the naive with drift, the linear path or the training mean"), a regression
    run's included, and left the reader to guess which."""
    summary = " and their summary" if linear_summary else ""
    linear = f"the linear path (ridge on the last {linear_steps} steps{summary})" if linear_steps else ""
    if seasonal_skip > 1:
        start = f"the seasonal naive at period {seasonal_skip}"
    elif seasonal_skip == 1:
        start = f"the naive plus {drift:g} of the window's drift" if drift else "the naive (the last value)"
    else:
        return linear or "the training mean"
    return f"{start} plus {linear}" if linear else start


def diagnose(task: str, train: dict[str, Any], held_out: dict[str, Any], held_out_name: str,
             baseline: str = "") -> list[str]:
    """train / held_out: evaluate()'s metrics of the kept model; baseline: what a value model whose
    correction was dropped answers (baseline_name), "" where it was kept. Returns the lines to print and
    report (none for a run that shows neither problem)."""
    if task in ("classification", "tagging"):
        fit = train["accuracy"]
        score = f"training accuracy {fit:.3f} (loss {train['loss']:.3g})"
        other = f"{held_out_name} accuracy {held_out['accuracy']:.3f} (loss {held_out['loss']:.3g})"
        if fit < UNDERFIT_ACCURACY:
            return [f"underfits: {score}: the model does not fit its own training series; {UNDERFIT_TRY}"]
        if held_out["accuracy"] <= fit - MEMORISE_GAP:
            return [f"memorises: {score} against {other}; {MEMORISE_TRY}"]
        return []
    if baseline:
        return [BASELINE_KEPT.format(baseline=baseline)]
    score = f"training MSE {train['loss']:.3g} in normalised units (1 = predicting the mean)"
    if train["loss"] > UNDERFIT_MSE:
        return [f"underfits: {score}; {UNDERFIT_TRY}"]
    if train["loss"] < MEMORISE_LOSS and held_out["loss"] > 10 * train["loss"] + MEMORISE_LOSS:
        return [f"memorises: {score} against {held_out_name} {held_out['loss']:.3g}; {MEMORISE_TRY}"]
    return []


def test_labels(test: dict[str, Any]) -> list[str]:
    """Tagging: what the test cannot show (trained labels no test step holds), and a model whose macro-F1
    is no higher than answering the majority label at every step."""
    lines, versus = [], test.get("versus_baselines", {})
    majority = test.get("baselines", {}).get("majority")
    if majority is None:
        return []
    always = f"{majority['label']!r} at every test step scores accuracy {majority['accuracy']:.4f}"
    if test.get("labels_not_in_test"):
        names = ", ".join(repr(label) for label in test["labels_not_in_test"])
        them = "it" if len(test["labels_not_in_test"]) == 1 else "them"
        lines.append(f"no test step is labelled {names}: the test cannot show whether the model finds {them} "
                     f"({always}); hold out a part of the recordings that holds {them} (data.test_path, or "
                     "data.test_fraction)")
    if not versus["beaten"]:
        lines.append(f"no better than the majority label: {always} and macro_f1 "
                     f"{versus['best_baseline_value']:.4f}, the model macro_f1 {versus['model']:.4f}")
    return lines


def naive_ahead(test: dict[str, Any], skip: int, drift: float = 0.0) -> list[str]:
    """A forecast without a season that the naive beats on test, with what to try: without a skip its
    dropped correction leaves the mean level (statsmodels' Nile: MASE 1.2036 against the naive's 0.9549);
    with the naive and a drift (training/defaults.py) a level without a trend is better off without the
    drift (Nile: 1.02 against 0.95)."""
    naive = test.get("baselines", {}).get("naive", {})
    if ((skip and not (skip == 1 and drift)) or test.get("seasonal_period") != 1 or "mase" not in naive
            or test["mase"] <= naive["mase"]):
        return []
    beaten = (f"the naive (the last value, repeated) beats it: MASE {naive['mase']:.4f} against "
              f"{test['mase']:.4f}; ")
    if skip:
        return [beaten + f"the model starts at the naive plus {drift:g} of the window's drift, which "
                "suits a trend: --set model.drift=0 starts it at the naive"]
    return [beaten + "the series shows no season, so the model has no skip to start from: "
            "--set model.seasonal_skip=1 starts it at the naive"]
