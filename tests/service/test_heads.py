"""The output heads (service/heads.py): one per output kind, chosen by the task, each with its loss,
activation and native answer."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest

from service.heads import HEADS, VALUE_TASKS, OutputKind, Task, head_for


def test_every_task_has_a_head_and_every_kind_is_some_task_s() -> None:
    kinds = {head_for(task).kind for task in get_args(Task)} | {head_for("classification", binary=True).kind}
    assert kinds == set(get_args(OutputKind)) == set(HEADS)
    assert head_for("tagging", binary=True).kind == "step_probabilities"  # binary: classification only
    assert VALUE_TASKS == ("regression", "forecast")


def test_a_binary_head_names_both_labels_in_label_order() -> None:
    head, p = HEADS["probability"], np.array([[0.8], [0.1]], np.float32)
    np.testing.assert_allclose(head.class_probabilities(p, ["no", "yes"], "yes"), [[0.2, 0.8], [0.9, 0.1]])
    np.testing.assert_allclose(head.class_probabilities(p, ["yes", "no"], "yes"), [[0.8, 0.2], [0.1, 0.9]])
    answer = head.render(p, ["no", "yes"], "yes")
    assert answer["labels"] == ["no", "yes"] and [r["label"] for r in answer["predictions"]] == ["yes", "no"]


def test_each_head_answers_in_its_own_fields() -> None:
    steps = np.array([[0.9, 0.1], [0.2, 0.8]], np.float32)
    assert HEADS["step_probabilities"].prediction(steps, ["a", "b"], None)["steps"] == ["a", "b"]
    assert HEADS["probabilities"].render(steps, ["a", "b"], None)["predictions"][1]["label"] == "b"
    forecast = HEADS["forecast"].render(steps, None, None)
    assert "labels" not in forecast and forecast["predictions"][0]["forecast"].tolist() == steps[0].tolist()
    with pytest.raises(TypeError, match="per-step outputs"):
        HEADS["forecast"].render([steps], None, None)
