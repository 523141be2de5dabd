"""The GRU encoders against the NumPy equations (both reset placements, every candidate activation), their
layout, their padding semantics, the determinism resume relies on, and the comparison's LSTM."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from training.cells import CANDIDATES, FastGRU, LSTMEncoder, SeedGRU, make_gru, torch_stand_in
from training.config import ModelConfig, load_config
from training.reference import ACTIVATIONS, gru_forward


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


@pytest.mark.parametrize("activation", sorted(CANDIDATES))
@pytest.mark.parametrize("reset", ["after", "before"])
def test_every_candidate_activation_matches_the_numpy_equations(reset: str, activation: str) -> None:
    torch.manual_seed(1)
    gru = SeedGRU(2, 6, 2, bidirectional=True, reset=reset, activation=activation).double().eval()
    x, h0 = 2 * torch.randn(3, 7, 2, dtype=torch.float64), torch.randn(4, 3, 6, dtype=torch.float64)
    with torch.no_grad():
        y, h_n = gru(x, h0)
    params = {k: v.numpy() for k, v in gru.state_dict().items()}
    y_ref, h_ref = gru_forward(x.numpy(), params, 2, True, h0.numpy(), reset=reset,  # type: ignore[arg-type]
                               activation=activation)
    assert np.abs(y.numpy() - y_ref).max() < 1e-12 and np.abs(h_n.numpy() - h_ref).max() < 1e-12
    if activation != "tanh":
        _, h_tanh = gru_forward(x.numpy(), params, 2, True, h0.numpy(), reset=reset)  # type: ignore[arg-type]
        assert np.abs(h_n.numpy() - h_tanh).max() > 1e-3  # the activation is really applied


def test_the_numpy_and_torch_activation_tables_name_the_same_functions() -> None:
    assert set(ACTIVATIONS) == set(CANDIDATES)
    v = np.linspace(-30, 30, 601)
    for name, numpy_fn in ACTIVATIONS.items():
        torch_v = CANDIDATES[name](torch.from_numpy(v)).numpy()
        assert np.abs(torch_v - numpy_fn(v)).max() < 1e-8, name


def test_loop_gru_with_reset_after_and_tanh_is_nn_gru() -> None:
    torch.manual_seed(0)
    loop = SeedGRU(3, 5, 2, bidirectional=True, reset="after").double().eval()
    fused = torch_stand_in(loop).double()
    x = torch.randn(4, 8, 3, dtype=torch.float64)
    with torch.no_grad():
        (y_loop, h_loop), (y_fused, h_fused) = loop(x), fused(x)
    assert (y_loop - y_fused).abs().max() < 1e-12 and (h_loop - h_fused).abs().max() < 1e-12


@pytest.mark.parametrize(("reset", "activation", "kind"), [
    ("after", "tanh", FastGRU), ("before", "tanh", SeedGRU), ("after", "relu", SeedGRU),
    ("before", "relu", SeedGRU),
])
def test_nn_gru_only_where_it_can_run_the_model(reset: str, activation: str, kind: type) -> None:
    gru = make_gru(ModelConfig(reset=reset, activation=activation))
    assert type(gru) is kind
    if isinstance(gru, SeedGRU):
        assert (gru.reset, gru.activation) == (reset, activation)


@pytest.mark.parametrize("reset", ["after", "before"])
def test_the_hand_written_training_step_gives_autograd_s_outputs_and_gradients(reset: str) -> None:
    """training/recurrence.py (a float32 CPU training step) against autograd through the per-step loop in
    float64 (where the hand-written path does not apply): the same outputs, state and gradients for every
    parameter, the input and the initial state, to float32 rounding."""
    torch.manual_seed(0)
    fast = make_gru(ModelConfig(input_size=3, hidden_size=5, reset=reset)).train()
    loop = SeedGRU(3, 5, reset=reset).double().train()
    loop.load_state_dict(fast.state_dict())
    x, h0, weights = torch.randn(4, 9, 3), torch.randn(1, 4, 5), torch.randn(4, 9, 5)
    results = []
    for gru, dtype in ((fast, torch.float32), (loop, torch.float64)):
        inputs = [t.to(dtype).clone().requires_grad_() for t in (x, h0)]
        y, h = gru(*inputs)
        ((y * weights.to(dtype)).sum() + h.pow(2).sum()).backward()
        results.append([y, h, *[t.grad for t in inputs], *[p.grad for p in gru.parameters()]])
    for a, b in zip(*results, strict=True):
        assert a.dtype == torch.float32 and (a.double() - b).abs().max() < 1e-5


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


@pytest.mark.parametrize(("setting", "message"), [
    ("model.reset=middle", "model.reset must be 'after' or 'before', got 'middle'"),
    ("model.activation=gelu", "model.activation must be 'tanh', 'relu', .* or 'leaky_relu', got 'gelu'"),
])
def test_unknown_variants_are_refused_with_the_choices(setting: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, [setting])


@pytest.mark.parametrize(("reset", "activation", "bidirectional"),
                         [("before", "tanh", False), ("before", "tanh", True), ("after", "relu", True)])
def test_seed_gru_with_lengths_equals_each_sequence_alone(reset: str, activation: str,
                                                          bidirectional: bool) -> None:
    """Padded steps are skipped like ONNX sequence_lens: state carried, outputs zero, reverse direction
    starting at each sequence's last valid step."""
    torch.manual_seed(0)
    gru = SeedGRU(3, 5, 2, bidirectional=bidirectional, reset=reset, activation=activation).eval()
    lengths = torch.tensor([9, 3, 6, 1])
    x = torch.randn(4, 9, 3) * (torch.arange(9)[None, :, None] < lengths[:, None, None])
    with torch.no_grad():
        y, h_n = gru(x, None, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone_y, alone_h = gru(x[i : i + 1, :n])
            assert (h_n[:, i] - alone_h[:, 0]).abs().max() <= 1e-6
            assert (y[i, :n] - alone_y[0]).abs().max() <= 1e-6 and not y[i, n:].any()


GRADIENTS_IN_A_FRESH_PROCESS = """
import torch
from training.cells import SeedGRU
torch.manual_seed(0)
gru = SeedGRU(2, 16, 2, reset="before")
x = torch.randn(8, 30, 2)
grads = []
for _ in range(4):
    gru.zero_grad()
    y, h = gru(x)
    (y.pow(2).mean() + h.sum()).backward()
    grads.append([p.grad.clone() for p in gru.parameters()])
same = all(torch.equal(a, b) for later in grads[1:] for a, b in zip(grads[0], later))
print("same" if same else "differ")
"""


def test_seed_gru_gives_identical_gradients_from_the_first_call_of_a_fresh_process() -> None:
    """What resume needs: the first backward pass after a restart computes what the n-th does in a
    long-running process (TorchScript's profiling executor did not: it re-optimises after 2 runs)."""
    result = subprocess.run([sys.executable, "-c", GRADIENTS_IN_A_FRESH_PROCESS], capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "same"


def test_lstm_encoder_has_four_gates_and_no_state_interface() -> None:
    config = ModelConfig(input_size=3, hidden_size=8, num_layers=2, cell="lstm")
    lstm, gru = make_gru(config), make_gru(ModelConfig(input_size=3, hidden_size=8, num_layers=2))
    assert isinstance(lstm, LSTMEncoder)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(lstm) * 3 == count(gru) * 4  # 4 gate blocks against 3, same shapes otherwise
    y, h_n = lstm(torch.randn(2, 5, 3))
    assert y.shape == (2, 5, 8) and h_n.shape == (2, 2, 8)
    with pytest.raises(ValueError, match="carries no state"):
        lstm(torch.randn(2, 5, 3), torch.zeros(2, 2, 8))
