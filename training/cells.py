"""The recurrent encoders a model can use, selected by `model.reset`, `model.activation` and `model.cell`:

- reset "after", tanh candidate: `torch.nn.GRU` (cuDNN on GPU; ONNX `linear_before_reset=1`),
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
- reset "before" (the seed's GRU, Cho et al. 2014; ONNX `linear_before_reset=0`),
    n = g(W_in x + b_in + W_hn (r ⊙ h) + b_hn)
- any other candidate activation g (`model.activation`: relu as in the seed's Keras example, ...), with
  either reset: `SeedGRU`, since nn.GRU and cuDNN have tanh built in (ONNX: `activations=[Sigmoid, g]`).
- `model.cell: lstm`: `LSTMEncoder`, for the GRU-vs-LSTM comparison only (bench/gru_vs_lstm.py).

A training step of a tanh GRU on the CPU (either reset) runs the recurrence with a hand-written backward
(training/recurrence.py): `FastGRU` is nn.GRU with that training step; evaluation, export and CUDA run
nn.GRU's own kernel (and `SeedGRU` its loop), so what is exported is what was evaluated.

`SeedGRU` keeps nn.GRU's parameter names and layout (`weight_ih_l{k}[_reverse]`, gates r, z, n stacked),
so a state_dict moves between the two unchanged; that is how export traces it (export/onnx.py).
It has no fused kernel: a per-step loop in plain Python (eager autograd). Not TorchScript: the profiling
executor gives different gradients on the first calls in a fresh process (it re-optimises the graph
after profiling runs), so a resumed run would not be bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional

from training.config import ModelConfig
from training.recurrence import applies, recurrence

# The candidate activations both PyTorch and ONNX's GRU (`activations`, with ONNX's default alpha) express,
# and onnxruntime's CPU GRU kernel runs (rnn_helpers.cc: GruOutputGateFuncByName). Same names as
# training/reference.py; export/onnx.py maps them to ONNX's.
CANDIDATES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "softsign": functional.softsign,
    "softplus": functional.softplus,
    "elu": functional.elu,  # alpha 1, as ONNX's default
    "leaky_relu": functional.leaky_relu,  # negative slope 0.01, as ONNX's default
}


def make_gru(config: ModelConfig) -> FastGRU | SeedGRU | LSTMEncoder:
    """The config validates reset, activation and cell (training/config.py)."""
    sizes = dict(input_size=config.input_size, hidden_size=config.hidden_size, num_layers=config.num_layers,
                 dropout=config.dropout if config.num_layers > 1 else 0.0,
                 bidirectional=config.bidirectional, batch_first=True)
    if config.cell == "lstm":
        return LSTMEncoder(**sizes)  # type: ignore[arg-type]
    if config.reset == "after" and config.activation == "tanh":
        return FastGRU(**sizes)  # type: ignore[arg-type]
    return SeedGRU(**sizes, reset=config.reset, activation=config.activation)  # type: ignore[arg-type]


def _direction(
    gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, reverse: bool,
    valid: torch.Tensor | None, reset: str, candidate: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """gi: (T, B, 3H) input projections (W_i x + b_i); h: (B, H); valid: (T, B, 1) bool, False on padding,
    where h is carried unchanged and Y is 0 (ONNX sequence_lens semantics), or None (no padding).
    Returns Y (T, B, H) and the last valid h."""
    hidden = h.shape[1]
    w_t = w_hh.t()  # (H, 3H)
    ys: list[torch.Tensor] = []
    order = range(gi.shape[0] - 1, -1, -1) if reverse else range(gi.shape[0])
    for t in order:
        g = gi[t]
        if reset == "after":
            gh = torch.addmm(b_hh, h, w_t)  # (B, 3H): one matmul for the three gates
            r, z = torch.sigmoid(g[:, : 2 * hidden] + gh[:, : 2 * hidden]).chunk(2, dim=1)
            n = candidate(g[:, 2 * hidden :] + r * gh[:, 2 * hidden :])
        else:
            gh = torch.addmm(b_hh[: 2 * hidden], h, w_t[:, : 2 * hidden])  # (B, 2H)
            r, z = torch.sigmoid(g[:, : 2 * hidden] + gh).chunk(2, dim=1)
            n = candidate(g[:, 2 * hidden :] + torch.addmm(b_hh[2 * hidden :], r * h, w_t[:, 2 * hidden :]))
        new = (1.0 - z) * n + z * h
        if valid is None:
            h = new
            ys.append(h)
        else:
            h = torch.where(valid[t], new, h)
            ys.append(torch.where(valid[t], new, torch.zeros_like(new)))
    if reverse:
        ys.reverse()
    return torch.stack(ys), h


class FastGRU(nn.GRU):
    """nn.GRU (batch first) whose CPU training step, one layer one direction, runs the hand-written
    recurrence; everything else is nn.GRU's own forward."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not (applies(x, self.training, "tanh") and self.num_layers == 1 and not self.bidirectional
                and self.batch_first):
            return super().forward(x, h0)  # type: ignore[return-value]
        if h0 is None:
            h0 = x.new_zeros(1, x.shape[0], self.hidden_size)
        ys, h_last = recurrence(x.transpose(0, 1), tuple(self.all_weights[0]), h0[0], "after")
        return ys.transpose(0, 1), h_last.unsqueeze(0)


class SeedGRU(nn.Module):
    """A drop-in for `nn.GRU(batch_first=True)` with either reset placement and any candidate activation
    in CANDIDATES: the GRUs of the seed's text that nn.GRU cannot run."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0,
                 bidirectional: bool = False, batch_first: bool = True, reset: str = "before",
                 activation: str = "tanh"):
        super().__init__()
        if not batch_first:
            raise ValueError("SeedGRU is batch-first only")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout, self.bidirectional = dropout, bidirectional
        self.reset, self.activation = reset, activation
        self.directions = 2 if bidirectional else 1
        for layer in range(num_layers):
            width = input_size if layer == 0 else hidden_size * self.directions
            for suffix in ["", "_reverse"][: self.directions]:
                self.register_parameter(f"weight_ih_l{layer}{suffix}",
                                        nn.Parameter(torch.empty(3 * hidden_size, width)))
                self.register_parameter(f"weight_hh_l{layer}{suffix}",
                                        nn.Parameter(torch.empty(3 * hidden_size, hidden_size)))
                for bias in ("bias_ih", "bias_hh"):
                    self.register_parameter(f"{bias}_l{layer}{suffix}",
                                            nn.Parameter(torch.empty(3 * hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.hidden_size)  # nn.GRU's initialisation
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor | None = None, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, F); h0: (L*D, B, H); lengths: (B,) valid steps (None: all). Returns Y (B, T, D*H) of
        the last layer, zero past each length, and h_n (L*D, B, H) at each sequence's last valid step."""
        batch, steps = x.shape[0], x.shape[1]
        if h0 is None:
            h0 = x.new_zeros(self.num_layers * self.directions, batch, self.hidden_size)
        valid = None
        if lengths is not None:
            valid = (torch.arange(steps).unsqueeze(1) < lengths.cpu().unsqueeze(0)).unsqueeze(2).to(x.device)
        candidate = CANDIDATES[self.activation]
        layer_input = x.transpose(0, 1)  # (T, B, F)
        finals: list[torch.Tensor] = []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                layer_input = functional.dropout(layer_input, self.dropout, training=True)
            outputs = []
            for d, suffix in enumerate(["", "_reverse"][: self.directions]):
                w_ih, w_hh, b_ih, b_hh = (getattr(self, f"{name}_l{layer}{suffix}")
                                          for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                if valid is None and d == 0 and applies(x, self.training, self.activation):
                    weights = (w_ih, w_hh, b_ih, b_hh)
                    ys, h_last = recurrence(layer_input, weights, h0[layer * self.directions], self.reset)
                    outputs.append(ys)
                    finals.append(h_last)
                    continue
                gi = functional.linear(layer_input, w_ih, b_ih)  # (T, B, 3H)
                ys, h_last = _direction(gi, h0[layer * self.directions + d], w_hh, b_hh, d == 1, valid,
                                        self.reset, candidate)
                outputs.append(ys)
                finals.append(h_last)
            layer_input = torch.cat(outputs, dim=2)  # (T, B, D*H)
        return layer_input.transpose(0, 1), torch.stack(finals)


class LSTMEncoder(nn.LSTM):
    """nn.LSTM behind the GRU's interface ((Y, h_n) out, c_n dropped): the comparison's LSTM
    (bench/gru_vs_lstm.py). Not exported as a bundle: its state would need c as well as h."""

    def forward(  # type: ignore[override]
        self, x: torch.Tensor | nn.utils.rnn.PackedSequence, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor | nn.utils.rnn.PackedSequence, torch.Tensor]:
        if h0 is not None:
            raise ValueError("model.cell=lstm carries no state in or out (it is for the comparison only)")
        y, (h_n, _) = super().forward(x)
        return y, h_n


def torch_stand_in(gru: SeedGRU) -> nn.GRU:
    """An nn.GRU holding the same weights: what the ONNX exporter knows how to trace into a GRU node
    (weights mapped to W/R/B, gates reordered). export/onnx.py then sets linear_before_reset and the
    activations on it to the SeedGRU's."""
    stand_in = nn.GRU(gru.input_size, gru.hidden_size, gru.num_layers, batch_first=True,
                      bidirectional=gru.bidirectional)
    stand_in.load_state_dict(gru.state_dict())
    return stand_in.to(next(gru.parameters()).device).eval()
