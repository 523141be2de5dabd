"""An ensemble merged into one GRUModel (training/ensemble.py) answers the mean of its members' outputs,
for every task, front end, reset variant, depth and direction, on ragged batches; exported, it passes
parity and streams chunked = whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from export.verify import TOLERANCE
from service.batching import compute_now
from training.config import ResolvedModelConfig
from training.data.dataset import pad_sequences
from training.ensemble import merge
from training.model import GRUModel


def _members(k: int = 3, **settings) -> list[GRUModel]:
    """k members of one config with different random weights; shared parts (normaliser, linear path)
    set to the same non-trivial values, as fitting on the same data does."""
    base = dict(input_size=3, hidden_size=5, num_layers=1, task="classification", output_size=4, patch=3,
                frontend="conv")
    config = ResolvedModelConfig(**(base | settings))  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(99)
    shared = {}
    members = []
    for seed in range(k):
        torch.manual_seed(seed)
        model = GRUModel(config)
        with torch.no_grad():
            for name, value in model.state_dict().items():
                if name.startswith(("normaliser.", "linear.")):
                    if name not in shared:
                        shared[name] = value + torch.rand(value.shape, generator=generator) * 0.5
                    value.copy_(shared[name])
                elif name.startswith("head."):  # a value model's head starts at zero: make it answer
                    value.copy_(torch.randn(value.shape, generator=generator) * 0.3)
        members.append(model.eval())
    return members


CASES = {
    "classification conv": dict(),
    "classification reset before, 2 layers": dict(reset="before", num_layers=2),
    "classification none, relu": dict(frontend="none", patch=1, activation="relu"),
    "classification patch, mean readout": dict(frontend="patch", readout=["mean"]),
    "classification bidirectional 2 layers": dict(bidirectional=True, num_layers=2),
    "sigmoid head": dict(head="sigmoid", output_size=1),
    "per-series normalisation": dict(normalise="series"),
    "regression with a linear path": dict(task="regression", output_size=2, linear_steps=4),
    "forecast with a seasonal skip": dict(task="forecast", output_size=6, frontend="none", patch=1,
                                          seasonal_skip=4, window_scaling=True),
    "tagging": dict(task="tagging", frontend="none", patch=1, num_layers=2),
}


@pytest.mark.parametrize("settings", CASES.values(), ids=CASES.keys())
def test_the_merged_model_answers_the_mean_of_its_members(settings: dict) -> None:
    members = _members(**settings)
    merged = merge(members)
    assert merged.config.hidden_size == 3 * members[0].config.hidden_size
    rng = np.random.default_rng(0)
    positive = settings.get("window_scaling", False)  # a window's level divides: keep it away from 0
    sequences = [rng.normal(size=(n, 3)).astype(np.float32) + 3 * positive for n in (13, 4, 9, 1)]
    X, lengths = (torch.as_tensor(a) for a in pad_sequences(sequences))
    with torch.no_grad():
        mean = torch.stack([m(X, lengths)[0] for m in members]).mean(dim=0)
        out = merged(X, lengths)[0]
    assert torch.allclose(out, mean, atol=1e-5), float((out - mean).abs().max())


def test_members_that_differ_where_they_must_not_are_refused() -> None:
    members = _members()
    with torch.no_grad():
        members[1].normaliser.feature_mean.add_(1.0)
    with pytest.raises(ValueError, match="normaliser.feature_mean differs"):
        merge(members)
    with pytest.raises(ValueError, match="model.cell=lstm"):
        merge(_members(k=2, cell="lstm"))


def test_a_merged_model_exports_with_parity_and_streams_chunked_as_whole(tmp_path: Path) -> None:
    from tests.helpers import exported_runtime
    from training.checkpoint import Checkpoint
    from training.config import ResolvedConfig

    merged = merge(_members(num_layers=2))
    config = ResolvedConfig.from_dict({"model": merged.config.model_dump(),
                                       "optim": {"batch_size": 4, "max_epochs": 1, "final_fit": True}})
    checkpoint = tmp_path / "checkpoint.pt"
    Checkpoint.of(merged, config, feature_names=["a", "b", "c"], label_names=list("wxyz"),
                  max_train_length=20, data_source="test", epoch=1, ragged=False).save(checkpoint)
    runtime = exported_runtime(checkpoint, tmp_path / "models", "ensemble")
    assert runtime.manifest.streaming.supported
    sequence = np.random.default_rng(1).normal(size=(17, 3)).astype(np.float32)
    whole = runtime.predict(sequence[None])[0]
    with torch.no_grad():
        expected = merged.predict(torch.as_tensor(sequence[None]))[0][0].numpy()
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    state = None
    for chunk in (sequence[:5], sequence[5:6], sequence[6:]):
        result = compute_now(runtime, [chunk], None if state is None else state[None])
        answer, state = result.outputs[0], result.states[0]
    assert np.abs(answer - whole).max() <= TOLERANCE
