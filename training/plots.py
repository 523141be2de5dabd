"""PNG plots in the run folder (matplotlib, Agg: no display needed): learning curves from metrics.jsonl;
the test confusion matrix (classification, and tagging's scored steps) or test forecasts against the
actual values (forecasting)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend
import numpy as np  # noqa: E402
from sklearn import metrics  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402

from training.data import SequenceData  # noqa: E402
from training.data.dataset import PAD_LABEL  # noqa: E402
from training.heads import predicted_labels  # noqa: E402


def write_plots(run_dir: Path, data: SequenceData, predicted: np.ndarray) -> list[str]:
    """Write the plots from the model's test answers `predicted`; return their file names."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    written = [learning_curves(records, run_dir / "learning_curves.png")]
    if data.task == "classification":
        labels = predicted_labels(predicted)  # a sigmoid head's one column too
        written.append(confusion_matrix(data, data.test.y, labels, run_dir / "confusion_matrix.png"))
    elif data.task == "tagging":  # the scored steps (a recording's past, read but not scored, is PAD)
        scored = data.test.y != PAD_LABEL
        written.append(confusion_matrix(data, data.test.y[scored], predicted.argmax(axis=2)[scored],
                                        run_dir / "confusion_matrix.png"))
    else:
        written.append(forecasts(data, predicted, run_dir / "forecast.png"))
    return written


def learning_curves(records: list[dict], path: Path) -> str:
    """Losses, and the validation metric (or, in a final fit without one, the learning rate)."""
    epochs = [r["epoch"] for r in records]
    metric = next((m for m in ("val_accuracy", "val_mae") if m in records[0]), "learning_rate")
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [r["train_loss"] for r in records], label="train")
    if "val_loss" in records[0]:
        left.plot(epochs, [r["val_loss"] for r in records], label="validation")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend()
    right.plot(epochs, [r[metric] for r in records], color="tab:green")
    right.set(xlabel="epoch", ylabel=metric, title=metric.replace("_", " "))
    return _save(fig, path)


# labels above which the confusion matrix is an image without its counts and names: with 600 labels,
# ConfusionMatrixDisplay wrote 360,000 counts and the run's end took minutes past a 30 s time budget
MOST_ANNOTATED = 30


def confusion_matrix(data: SequenceData, truth: np.ndarray, predicted: np.ndarray, path: Path) -> str:
    fig, axes = plt.subplots(figsize=(5, 4.5))
    labels = list(range(len(data.label_names)))
    if len(labels) <= MOST_ANNOTATED:
        ConfusionMatrixDisplay.from_predictions(truth, predicted, labels=labels,
                                                display_labels=data.label_names, ax=axes, colorbar=False)
    else:
        axes.imshow(metrics.confusion_matrix(truth, predicted, labels=labels), interpolation="nearest")
        axes.set(xlabel=f"predicted label (0-{len(labels) - 1}, as in the bundle's labels)",
                 ylabel="true label")
    axes.set_title("test confusion matrix")
    return _save(fig, path)


def forecasts(data: SequenceData, predicted: np.ndarray, path: Path, panels: int = 4) -> str:
    """The first few test windows: input history, actual horizon, forecast (and the naive baseline)."""
    count = min(panels, len(data.test))
    fig, axes = plt.subplots(1, count, figsize=(4 * count, 3.5), squeeze=False)
    for i, ax in enumerate(axes[0]):
        history = data.test.X[i, :, 0]
        steps = np.arange(len(history), len(history) + data.test.y.shape[1])
        ax.plot(np.arange(len(history)), history, color="gray", label="input")
        ax.plot(steps, data.test.y[i], color="black", marker=".", label="actual")
        ax.plot(steps, predicted[i], color="tab:blue", marker=".", label="GRU")
        if data.test_naive is not None:
            ax.plot(steps, data.test_naive[i], color="tab:orange", linestyle="--", label="naive")
        ax.set_title(f"test window {i}")
    axes[0][0].legend(fontsize="small")
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name
