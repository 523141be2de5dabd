"""Series whose scales differ by orders of magnitude: each series normalised by its own mean and deviation
inside the graph, its log scale an extra input; chosen from the data; exported with parity, a padded
batch equal to each series alone, and streaming refused with the reason in the manifest."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from export.verify import TOLERANCE
from service.batching import compute_now
from service.runtime import ModelRuntime
from tests.helpers import exported_runtime, train_tiny
from training.config import load_config
from training.data.dataset import SequenceData, Split
from training.defaults import resolve
from training.normalise import Normaliser


def _split(scales: np.ndarray, length: int = 30) -> Split:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(scales), length, 1)) * scales[:, None, None]
    return Split(X.astype(np.float32), np.arange(len(scales)) % 2, np.full(len(scales), length))


@pytest.mark.parametrize(("scales", "chosen"), [(np.logspace(-5, 2.5, 40), "series"),
                                                (np.ones(40), "global")])
def test_per_series_normalisation_is_chosen_from_the_spread_of_scales(scales, chosen: str) -> None:
    train = _split(scales)
    empty = Split(train.X[:0], train.y[:0], train.lengths[:0])
    data = SequenceData("classification", train, empty, empty, ["x"], ["a", "b"])
    config, lines = resolve(load_config(None, []), data)
    assert config.model.normalise == chosen
    assert any(line.startswith(f"model.normalise={chosen} (auto: the series' scales differ")
               for line in lines)


def test_a_series_reads_the_same_at_any_scale_but_its_log_scale() -> None:
    normaliser = Normaliser(1, 2, per_series=True)
    normaliser.fit(_split(np.logspace(-5, 2, 20)).X, None)
    x = torch.randn(1, 30, 1)
    small, large = normaliser.inputs(x * 1e-5, None), normaliser.inputs(x * 1e3, None)  # type: ignore[arg-type]
    assert small.shape == (1, 30, 2)
    assert torch.allclose(small[..., 0], large[..., 0], atol=1e-5)
    assert (large[0, :, 1] - small[0, :, 1]).sub(8 * np.log(10) / normaliser.log_scale_std).abs().max() < 1e-3


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> ModelRuntime:
    root = tmp_path_factory.mktemp("series")
    run = train_tiny(root / "runs", "series", "data.dataset=JapaneseVowels", "model.normalise=series",
                     "optim.max_epochs=2")
    return exported_runtime(run.checkpoint, root / "models", "series")


def test_the_manifest_says_per_series_and_refuses_streaming_with_the_reason(served: ModelRuntime) -> None:
    assert served.manifest.normalization.per_series
    assert "its own mean and standard deviation" in (served.manifest.streaming_refusal or "")


def test_a_padded_batch_of_series_on_any_scale_answers_each_as_alone(served: ModelRuntime) -> None:
    rng = np.random.default_rng(1)
    features = len(served.manifest.inputs.features)
    sequences = [(rng.normal(size=(n, features)) * scale).astype(np.float32)
                 for n, scale in ((20, 1e-4), (3, 1.0), (11, 300.0), (7, 0.02))]
    together = compute_now(served, sequences).outputs
    for i, seq in enumerate(sequences):
        assert np.abs(together[i] - served.predict(seq[None])[0]).max() <= TOLERANCE
