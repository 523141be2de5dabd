"""Ragged data in training: true lengths kept, packed batches give each sequence its own answer,
normalisation ignores padding, and the tagging generator is deterministic."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.config import DataConfig, ResolvedModelConfig
from training.data import load_data
from training.data.dataset import PAD_LABEL, pad_sequences
from training.model import GRUModel
from training.normalise import Normaliser


def test_japanese_vowels_keeps_its_true_lengths() -> None:
    data = load_data(DataConfig(dataset="JapaneseVowels"))
    assert len(data.train) + len(data.val) == 270 and len(data.test) == 370
    assert data.train.X.shape[2] == 12 and len(data.label_names) == 9
    lengths = np.concatenate([data.train.lengths, data.val.lengths, data.test.lengths])
    assert lengths.min() == 7 and lengths.max() == 29 and len(set(lengths.tolist())) > 10
    i = int(np.argmin(data.test.lengths))  # no resampling: steps past the length are padding zeros
    assert (data.test.X[i, data.test.lengths[i]:] == 0).all() and (data.test.X[i, :7] != 0).any()


def _model(bidirectional: bool, task: str = "classification", patch: int = 1,
           readout: tuple[str, ...] = ("last", "mean", "max"), reset: str = "after",
           frontend: str = "conv", kernel: int = 2) -> GRUModel:
    torch.manual_seed(0)
    per_step = task == "tagging" or frontend == "none"
    config = ResolvedModelConfig(input_size=3, hidden_size=8, num_layers=2, bidirectional=bidirectional,
                                 task=task, output_size=4, patch=1 if per_step else patch, frontend=frontend,
                                 readout=list(readout), reset=reset, conv_kernel=kernel)  # type: ignore[arg-type]
    return GRUModel(config).eval()


READOUTS = st.sampled_from([("last",), ("mean",), ("max",), ("last", "mean", "max"), ("max", "last")])
FRONT_ENDS = st.sampled_from(["conv", "patch", "none"])


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(1, 20), min_size=1, max_size=6), bidirectional=st.booleans(),
       task=st.sampled_from(["classification", "tagging"]), patch=st.integers(1, 5), readout=READOUTS,
       frontend=FRONT_ENDS)
def test_padded_batch_equals_each_sequence_alone(
    lengths: list[int], bidirectional: bool, task: str, patch: int, readout: tuple[str, ...], frontend: str
) -> None:
    """Every front end (stride k) and readout: a padded batch answers each sequence as if it were alone,
    and carries each one's own next state."""
    model = _model(bidirectional, task, patch, readout, frontend=frontend)
    rng = np.random.default_rng(sum(lengths))
    sequences = [rng.normal(size=(n, 3)).astype(np.float32) for n in lengths]
    X, steps = pad_sequences(sequences)
    with torch.no_grad():
        out, state = model.predict(torch.as_tensor(X), lengths=torch.as_tensor(steps))
        for i, seq in enumerate(sequences):
            alone, alone_state = model.predict(torch.as_tensor(seq)[None])
            got = out[i, : len(seq)] if task == "tagging" else out[i]
            assert (got - alone[0]).abs().max() <= 1e-6
            assert (state[i] - alone_state[0]).abs().max() <= 1e-6
            if task == "tagging":  # steps past the length: zero probability, not padding's answer
                assert (out[i, len(seq):] == 0).all()


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(1, 9), min_size=1, max_size=5), patch=st.integers(1, 5), readout=READOUTS,
       task=st.sampled_from(["classification", "tagging"]), frontend=FRONT_ENDS, kernel=st.integers(1, 4))
def test_chunked_equals_whole(
    cuts: list[int], patch: int, readout: tuple[str, ...], task: str, frontend: str, kernel: int
) -> None:
    """A sequence read chunk by chunk, the state carried between chunks (chunks shorter than the stride
    and chunk ends that split a patch included), answers as the whole sequence does, after every chunk,
    with the same state."""
    model = _model(False, task, patch, readout, frontend=frontend, kernel=kernel)
    values = np.random.default_rng(len(cuts)).normal(size=(sum(cuts), 3))
    sequence = torch.as_tensor(values, dtype=torch.float32)
    state, start = None, 0
    with torch.no_grad():
        for size in cuts:
            out, state = model.predict(sequence[None, start : start + size], state=state)
            start += size
            whole, whole_state = model.predict(sequence[None, :start])
            expected = whole[:, start - size :] if task == "tagging" else whole
            assert (out - expected).abs().max() <= 1e-5
            assert (state - whole_state).abs().max() <= 1e-5


def test_the_seed_reset_variant_streams_and_pads_exactly_too() -> None:
    model = _model(False, patch=3, reset="before")
    sequence = torch.randn(1, 11, 3)
    with torch.no_grad():
        first, state = model.predict(sequence[:, :4])
        second, state = model.predict(sequence[:, 4:], state=state)
        whole, whole_state = model.predict(sequence)
        padded, _ = model.predict(torch.cat([sequence, torch.zeros(1, 5, 3)], 1), torch.tensor([11]))
    assert (second - whole).abs().max() <= 1e-5 and (state - whole_state).abs().max() <= 1e-5
    assert (padded - whole).abs().max() <= 1e-6


def test_a_patch_carries_its_unfinished_steps_in_the_state() -> None:
    model = _model(False, patch=4)
    x = torch.randn(2, 10, 3)
    parts = model.unpack(model.predict(x, torch.tensor([10, 7]))[1])
    assert parts["patch_count"].squeeze(1).tolist() == [2.0, 3.0]  # 10 = 2*4 + 2, 7 = 4 + 3
    assert parts["pool_count"].squeeze(1).tolist() == [2.0, 1.0]  # whole patches only
    assert (parts["patch_steps"][0, 2:] == 0).all() and (parts["patch_steps"][1] != 0).all()
    # the conv's context: the last whole patch, normalised (steps 4..7 of the first, 0..3 of the second)
    steps = model.normaliser.inputs(x, model.normaliser.level(x))
    torch.testing.assert_close(parts["conv_patch"][0], steps[0, 4:8])
    torch.testing.assert_close(parts["conv_patch"][1], steps[1, 0:4])
    assert parts["conv_out"].shape == (2, 2, 8) and (parts["conv_out"][1, 0] == 0).all()  # one patch done


def test_the_state_names_its_parts_per_front_end() -> None:
    names = {kind: [name for name, _ in _model(False, patch=3, frontend=kind).state_parts()]
             for kind in ("conv", "patch")}
    names["none"] = [name for name, _ in _model(False, frontend="none").state_parts()]
    assert names["conv"] == ["gru_h", "patch_steps", "patch_count", "conv_patch", "conv_out", "pool_mean",
                             "pool_max", "pool_count"]
    assert names["patch"] == ["gru_h", "patch_steps", "patch_count", "pool_mean", "pool_max", "pool_count"]
    assert names["none"] == ["gru_h", "pool_mean", "pool_max", "pool_count"]
    assert [name for name, _ in _model(True, patch=3).state_parts()] == ["gru_h"]  # bidirectional: no stream


def test_normaliser_ignores_padded_steps() -> None:
    rng = np.random.default_rng(0)
    sequences = [rng.normal(5.0, 2.0, size=(n, 2)).astype(np.float32) for n in (3, 9, 5)]
    X, lengths = pad_sequences(sequences)
    X[X == 0] = 1e6  # whatever sits in the padding must not count
    for i, n in enumerate(lengths):
        X[i, :n] = sequences[i]
    padded, flat = Normaliser(2, 1), Normaliser(2, 1)
    padded.fit(X, None, lengths=lengths)
    flat.fit(np.concatenate(sequences)[None], None)
    assert torch.allclose(padded.feature_mean, flat.feature_mean)
    assert torch.allclose(padded.feature_std, flat.feature_std)


def test_synthetic_regimes_are_seeded_ragged_and_labelled_per_step() -> None:
    config = DataConfig(dataset="SyntheticRegimes")
    first, second = load_data(config), load_data(config)
    assert first.task == "tagging" and first.label_names == ["idle", "oscillating", "high"]
    np.testing.assert_array_equal(first.test.X, second.test.X)
    np.testing.assert_array_equal(first.test.y, second.test.y)
    split = first.train
    assert split.y.shape == split.X.shape[:2] and 30 <= split.lengths.min() < split.lengths.max() <= 90
    for i in range(5):
        n = split.lengths[i]
        assert (split.y[i, n:] == PAD_LABEL).all() and set(split.y[i, :n].tolist()) <= {0, 1, 2}
    high = split.X[:, :, 0][split.y == 2]
    assert high.mean() > 1.5  # the regimes look like their documentation
