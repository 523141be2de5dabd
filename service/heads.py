"""What a model's output is, per task, in one place: the head.

A head says how training fits the network's numbers (`loss`), how they become an answer (`activation`,
or original units for values) and how a native JSON answer shows them. It is torch-free: training/heads.py
maps `loss` and `activation` to torch; the manifest's `output.kind` names the head a bundle serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

# What a model does: the one vocabulary of training (training/config.py), export and the manifest.
# tagging: a label per time step; forecast: the next values of a series (older forecasters: regression)
Task = Literal["classification", "regression", "forecast", "tagging"]
# The output's form: probabilities [batch, labels]; probability [batch, 1], a binary task's
# P(positive_label); step_probabilities [batch, time, labels]; forecast: numbers, for either value task
OutputKind = Literal["probabilities", "forecast", "step_probabilities", "probability"]


@dataclass(frozen=True)
class Head:
    kind: OutputKind
    loss: Literal["cross_entropy", "binary_cross_entropy", "mse"]  # against labels, or normalised targets
    activation: Literal["softmax", "sigmoid", "none"]  # none: values, mapped back to original units
    per_step: bool = False  # an answer at every time step: [batch, time, O]

    @property
    def values(self) -> bool:
        """Numbers in original units (scaled targets, a forecast's metrics), not labels' probabilities."""
        return self.activation == "none"

    def class_probabilities(self, output: np.ndarray, labels: list[str], positive: str | None) -> np.ndarray:
        """(..., O) -> (..., labels): one probability per label, in label order (a binary sigmoid's
        P(positive) becomes [P(other), P(positive)] in the labels' order)."""
        if self.activation != "sigmoid":
            return output
        p = output.astype(np.float32, copy=False)
        both = [1.0 - p, p]
        return np.concatenate(both if labels and labels[1] == positive else both[::-1], axis=-1)

    def render(self, outputs: np.ndarray | list[np.ndarray], labels: list[str] | None,
               positive: str | None) -> dict[str, Any]:
        """A batch's native answer fields: `labels` where there are labels, and one prediction per row."""
        if isinstance(outputs, list) and not self.per_step:
            raise TypeError(f"per-step outputs for a model whose output is {self.kind!r}")
        if self.values:
            return {"predictions": [{"forecast": row} for row in outputs]}
        labels = labels or []
        if self.per_step:
            return {"labels": labels, "predictions": [self.prediction(o, labels, positive) for o in outputs]}
        probabilities = self.class_probabilities(outputs, labels, positive)  # type: ignore[arg-type]
        best = probabilities.argmax(axis=1).tolist()  # one argmax for the batch: the hot path
        return {"labels": labels, "predictions": [{"label": labels[k], "probabilities": row}
                                                  for k, row in zip(best, probabilities, strict=True)]}

    def prediction(self, output: np.ndarray, labels: list[str] | None,
                   positive: str | None) -> dict[str, Any]:
        """One sequence's native answer: output (O,), or (T, O) for a per-step head."""
        if self.values:
            return {"forecast": output}
        labels = labels or []
        if self.per_step:
            return {"steps": [labels[k] for k in output.argmax(axis=1).tolist()], "probabilities": output}
        output = self.class_probabilities(output, labels, positive)
        return {"label": labels[int(output.argmax())], "probabilities": output}


HEADS: dict[OutputKind, Head] = {h.kind: h for h in (
    Head("probabilities", loss="cross_entropy", activation="softmax"),
    Head("probability", loss="binary_cross_entropy", activation="sigmoid"),  # config model.head: sigmoid
    Head("step_probabilities", loss="cross_entropy", activation="softmax", per_step=True),
    Head("forecast", loss="mse", activation="none"),
)}
TASK_HEADS: dict[Task, OutputKind] = {"classification": "probabilities", "tagging": "step_probabilities",
                                      "regression": "forecast", "forecast": "forecast"}


def head_for(task: Task, binary: bool = False) -> Head:
    """A task's head; `binary`: one sigmoid probability for a classification of two labels."""
    return HEADS["probability" if binary and task == "classification" else TASK_HEADS[task]]


VALUE_TASKS: tuple[Task, ...] = tuple(t for t in TASK_HEADS if head_for(t).values)  # answers in units
