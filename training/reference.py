"""The GRU equations in NumPy: the test oracle for nn.GRU, the loop GRU and every exported graph.

Weights use nn.GRU's layout: gates stacked as (reset r, update z, candidate n).
  r = σ(W_ir x + b_ir + W_hr h + b_hr)
  z = σ(W_iz x + b_iz + W_hz h + b_hz)
  reset "after"  (nn.GRU, cuDNN, ONNX linear_before_reset=1): n = g(W_in x + b_in + r ⊙ (W_hn h + b_hn))
  reset "before" (Cho et al. 2014, ONNX linear_before_reset=0): n = g(W_in x + b_in + W_hn (r ⊙ h) + b_hn)
  h' = (1 − z) ⊙ n + z ⊙ h
g is the candidate activation (`model.activation`): tanh by default, as in every GRU paper; Keras'
`GRU(activation="relu")` and ONNX's `activations=["Sigmoid", "Relu"]` make it ReLU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import numpy as np

ResetMode = Literal["after", "before"]


def _sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


# Each one's textbook definition (ONNX's operator docs, with ONNX's default alpha where there is one).
ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tanh": np.tanh,
    "relu": lambda v: np.maximum(v, 0.0),
    "sigmoid": _sigmoid,
    "softsign": lambda v: v / (1.0 + np.abs(v)),
    "softplus": lambda v: np.log1p(np.exp(v)),
    "elu": lambda v: np.where(v >= 0, v, np.expm1(np.minimum(v, 0.0))),  # alpha 1
    "leaky_relu": lambda v: np.where(v >= 0, v, 0.01 * v),  # alpha 0.01
}


def gru_cell(
    x: np.ndarray, h: np.ndarray, w_ih: np.ndarray, w_hh: np.ndarray,
    b_ih: np.ndarray, b_hh: np.ndarray, reset: ResetMode, activation: str = "tanh",
) -> np.ndarray:
    """One step. x: (B, F), h: (B, H) -> (B, H)."""
    hidden, g = h.shape[1], ACTIVATIONS[activation]
    gi = x @ w_ih.T + b_ih  # (B, 3H)
    w_hr_hz, w_hn = w_hh[: 2 * hidden], w_hh[2 * hidden :]
    gh = h @ w_hr_hz.T + b_hh[: 2 * hidden]  # (B, 2H)
    r = _sigmoid(gi[:, :hidden] + gh[:, :hidden])
    z = _sigmoid(gi[:, hidden : 2 * hidden] + gh[:, hidden:])
    if reset == "after":
        n = g(gi[:, 2 * hidden :] + r * (h @ w_hn.T + b_hh[2 * hidden :]))
    else:
        n = g(gi[:, 2 * hidden :] + (r * h) @ w_hn.T + b_hh[2 * hidden :])
    return (1.0 - z) * n + z * h


def gru_forward(
    x: np.ndarray,
    params: Mapping[str, np.ndarray],
    num_layers: int,
    bidirectional: bool,
    h0: np.ndarray | None = None,
    reset: ResetMode = "after",
    activation: str = "tanh",
) -> tuple[np.ndarray, np.ndarray]:
    """A stacked (bi)GRU, batch first, from nn.GRU-named parameters (`weight_ih_l0`, `..._reverse`).

    x: (B, T, F); h0: (L*D, B, H). Returns Y (B, T, D*H) of the last layer and h_n (L*D, B, H).
    """
    x = np.asarray(x, dtype=np.float64)
    directions = 2 if bidirectional else 1
    hidden = params["weight_hh_l0"].shape[1]
    batch, steps = x.shape[:2]
    if h0 is None:
        h0 = np.zeros((num_layers * directions, batch, hidden))
    finals, layer_input = [], x
    for layer in range(num_layers):
        outputs = []
        for d, suffix in enumerate(["", "_reverse"][:directions]):
            names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            w_ih, w_hh, b_ih, b_hh = (params[f"{name}_l{layer}{suffix}"] for name in names)
            h = np.asarray(h0[layer * directions + d], dtype=np.float64)
            order = range(steps) if d == 0 else reversed(range(steps))
            ys = np.zeros((batch, steps, hidden))
            for t in order:
                h = gru_cell(layer_input[:, t], h, w_ih, w_hh, b_ih, b_hh, reset, activation)
                ys[:, t] = h
            outputs.append(ys)
            finals.append(h)
        layer_input = np.concatenate(outputs, axis=2)  # (B, T, D*H)
    return layer_input, np.stack(finals)
