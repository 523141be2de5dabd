"""The sigmoid head (model.head: sigmoid): one output trained with binary cross-entropy, the probability of
the second label; refused for anything but a binary classification task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import train_tiny
from training.checkpoint import Checkpoint
from training.data import load_data


def test_a_binary_task_trains_one_probability_of_the_second_label(tmp_path: Path) -> None:
    run = train_tiny(tmp_path, "binary", "model.head=sigmoid", "optim.max_epochs=15")
    trained = Checkpoint.load(run.checkpoint)
    model = trained.model()
    assert model.head.out_features == 1 and trained.config.model.output_size == 1
    assert trained.label_names == ["1", "2"]
    data = load_data(trained.config.data)
    with torch.no_grad():
        p = model.predict(torch.as_tensor(data.test.X))[0].numpy()
    assert p.shape == (len(data.test.X), 1) and ((p > 0) & (p < 1)).all()
    accuracy = float(((p[:, 0] > 0.5).astype(int) == data.test.y).mean())
    assert accuracy == pytest.approx(run.test_metrics["accuracy"])  # evaluation thresholds at 0.5
    assert accuracy > 0.6  # it learnt something in 15 epochs (chance is 0.5)


@pytest.mark.parametrize(("dataset", "what"), [("Airline", "forecast"), ("SyntheticRegimes", "tagging")])
def test_a_sigmoid_head_is_refused_where_the_task_is_not_binary(tmp_path: Path, dataset: str,
                                                                what: str) -> None:
    with pytest.raises(ValueError, match=f"model.head=sigmoid is for binary classification; this data is "
                                         f"{what}.*use model.head=softmax"):
        train_tiny(tmp_path, "x", f"data.dataset={dataset}", "model.head=sigmoid", "optim.max_epochs=1")


def test_binary_cross_entropy_is_the_loss(tmp_path: Path) -> None:
    from training.loop import _loss

    run = train_tiny(tmp_path, "b", "model.head=sigmoid", "optim.max_epochs=1")
    model = Checkpoint.load(run.checkpoint).model()
    x, y = torch.randn(5, 24, 1), torch.tensor([0, 1, 1, 0, 1])
    with torch.no_grad():
        logits = model(x)[0][:, 0]
        expected = -np.mean([np.log(torch.sigmoid(v).item()) if t else np.log(1 - torch.sigmoid(v).item())
                             for v, t in zip(logits, y.tolist(), strict=True)])
        assert _loss(model, x, y).item() == pytest.approx(expected, rel=1e-5)
