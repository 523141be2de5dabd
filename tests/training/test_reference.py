"""The NumPy GRU equations are the oracle: nn.GRU must equal the reset-"after" variant exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.reference import gru_cell, gru_forward


def _params(gru: torch.nn.GRU) -> dict[str, np.ndarray]:
    return {k: v.detach().double().numpy() for k, v in gru.named_parameters()}


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_nn_gru_equals_reset_after_reference(layers: int, bidirectional: bool) -> None:
    torch.manual_seed(layers)
    gru = torch.nn.GRU(3, 5, layers, batch_first=True, bidirectional=bidirectional).double()
    x = torch.randn(4, 9, 3, dtype=torch.float64)
    h0 = torch.randn(layers * (2 if bidirectional else 1), 4, 5, dtype=torch.float64)
    with torch.no_grad():
        y, h_n = gru(x, h0)
    ref_y, ref_h = gru_forward(x.numpy(), _params(gru), layers, bidirectional, h0.numpy(), reset="after")
    np.testing.assert_allclose(ref_y, y.numpy(), atol=1e-12)
    np.testing.assert_allclose(ref_h, h_n.numpy(), atol=1e-12)


def test_nn_gru_differs_from_reset_before_reference() -> None:
    torch.manual_seed(0)
    gru = torch.nn.GRU(2, 4, 1, batch_first=True).double()
    x = torch.randn(3, 6, 2, dtype=torch.float64)
    with torch.no_grad():
        _, h_n = gru(x)
    _, before = gru_forward(x.numpy(), _params(gru), 1, False, reset="before")
    assert np.abs(before - h_n.numpy()).max() > 1e-3


def test_variants_agree_when_reset_gate_is_open_and_hidden_bias_zero() -> None:
    """r = 1 and b_hn = 0 make r*(W h + b) and W (r*h) + b the same: the variants differ only in r's place."""
    rng = np.random.default_rng(0)
    hidden, features = 4, 3
    w_ih, w_hh = rng.normal(size=(3 * hidden, features)), rng.normal(size=(3 * hidden, hidden))
    b_ih, b_hh = rng.normal(size=3 * hidden), rng.normal(size=3 * hidden)
    b_ih[:hidden] = 50.0  # saturate the reset gate: r = 1
    b_hh[2 * hidden :] = 0.0
    x, h = rng.normal(size=(2, features)), rng.normal(size=(2, hidden))
    after = gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, "after")
    before = gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, "before")
    np.testing.assert_allclose(after, before, atol=1e-12)
    b_hh[2 * hidden :] = 1.0  # a hidden candidate bias is scaled by r only in the "after" variant
    b_ih[:hidden] = -50.0  # r = 0
    assert np.abs(gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, "after")
                  - gru_cell(x, h, w_ih, w_hh, b_ih, b_hh, "before")).max() > 1e-3
