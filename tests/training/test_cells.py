"""The seed's GRU (reset gate before the hidden matmul) against the NumPy equations, and its layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from training.cells import SeedGRU, make_gru, torch_stand_in
from training.config import ModelConfig, load_config
from training.reference import gru_forward


@pytest.mark.parametrize(("layers", "bidirectional"), [(1, False), (2, True), (3, False), (3, True)])
def test_seed_gru_matches_the_numpy_reset_before_equations(layers: int, bidirectional: bool) -> None:
    torch.manual_seed(layers)
    gru = SeedGRU(3, 8, layers, dropout=0.3, bidirectional=bidirectional).double().eval()
    x = torch.randn(4, 9, 3, dtype=torch.float64)
    h0 = torch.randn(layers * (1 + bidirectional), 4, 8, dtype=torch.float64)
    with torch.no_grad():
        y, h_n = gru(x, h0)
    params = {k: v.numpy() for k, v in gru.state_dict().items()}
    y_ref, h_ref = gru_forward(x.numpy(), params, layers, bidirectional, h0.numpy(), reset="before")
    assert np.abs(y.numpy() - y_ref).max() < 1e-12
    assert np.abs(h_n.numpy() - h_ref).max() < 1e-12
    _, h_after = gru_forward(x.numpy(), params, layers, bidirectional, h0.numpy(), reset="after")
    assert np.abs(h_n.numpy() - h_after).max() > 1e-3  # a different model from nn.GRU's


def test_seed_gru_has_nn_gru_parameter_names_shapes_and_gradients() -> None:
    config = ModelConfig(input_size=2, hidden_size=5, num_layers=2, bidirectional=True, reset="before")
    seed, torch_gru = make_gru(config), nn.GRU(2, 5, 2, batch_first=True, bidirectional=True)
    assert {k: v.shape for k, v in seed.state_dict().items()} == \
        {k: v.shape for k, v in torch_gru.state_dict().items()}
    stand_in = torch_stand_in(seed)  # type: ignore[arg-type]
    assert all(torch.equal(a, b) for a, b in zip(seed.state_dict().values(), stand_in.state_dict().values(),
                                                  strict=True))
    y, _ = seed(torch.randn(3, 6, 2))
    y.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in seed.parameters())


def test_unknown_reset_variant_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="model.reset must be 'after' or 'before', got 'middle'"):
        load_config(None, ["model.reset=middle"])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_seed_gru_with_lengths_equals_each_sequence_alone(bidirectional: bool) -> None:
    """Padded steps are skipped like ONNX sequence_lens: state carried, outputs zero, reverse direction
    starting at each sequence's last valid step."""
    torch.manual_seed(0)
    gru = SeedGRU(3, 5, 2, bidirectional=bidirectional).eval()
    lengths = torch.tensor([9, 3, 6, 1])
    x = torch.randn(4, 9, 3) * (torch.arange(9)[None, :, None] < lengths[:, None, None])
    with torch.no_grad():
        y, h_n = gru(x, None, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone_y, alone_h = gru(x[i : i + 1, :n])
            assert (h_n[:, i] - alone_h[:, 0]).abs().max() <= 1e-6
            assert (y[i, :n] - alone_y[0]).abs().max() <= 1e-6 and not y[i, n:].any()
