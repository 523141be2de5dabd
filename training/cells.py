"""The GRU encoders a model can use, selected by `model.reset`:

- "after": `torch.nn.GRU` (cuDNN on GPU; ONNX `linear_before_reset=1`),
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
- "before": the seed's GRU (Cho et al. 2014; ONNX `linear_before_reset=0`),
    n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)

`SeedGRU` keeps nn.GRU's parameter names and layout (`weight_ih_l{k}[_reverse]`, gates r, z, n stacked),
so a state_dict moves between the two unchanged; that is how export traces it (export/onnx.py).
It has no fused kernel: a per-step loop, scripted with TorchScript, several times slower to train.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from training.config import ModelConfig


def make_gru(config: ModelConfig) -> nn.GRU | SeedGRU:
    kind: type[nn.GRU] | type[SeedGRU] = nn.GRU if config.reset == "after" else SeedGRU
    return kind(
        input_size=config.input_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        dropout=config.dropout if config.num_layers > 1 else 0.0,
        bidirectional=config.bidirectional,
        batch_first=True,
    )


@torch.jit.script
def _seed_direction(
    gi: torch.Tensor, h: torch.Tensor, w_hh: torch.Tensor, b_hh: torch.Tensor, reverse: bool,
    valid: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """gi: (T, B, 3H) input projections (W_i x + b_i); h: (B, H); valid: (T, B, 1), 1 on a sequence's
    steps and 0 on padding, where h is carried unchanged and Y is 0 (ONNX sequence_lens semantics).
    Returns Y (T, B, H) and the last valid h."""
    hidden = h.shape[1]
    w_rz, w_n = w_hh[: 2 * hidden], w_hh[2 * hidden :]
    b_rz, b_n = b_hh[: 2 * hidden], b_hh[2 * hidden :]
    steps = gi.shape[0]
    ys: list[torch.Tensor] = []
    for i in range(steps):
        t = steps - 1 - i if reverse else i
        g = gi[t]
        rz = torch.sigmoid(g[:, : 2 * hidden] + torch.addmm(b_rz, h, w_rz.t()))
        r, z = rz[:, :hidden], rz[:, hidden:]
        n = torch.tanh(g[:, 2 * hidden :] + torch.addmm(b_n, r * h, w_n.t()))  # reset before the matmul
        keep = valid[t]
        h = keep * ((1.0 - z) * n + z * h) + (1.0 - keep) * h
        ys.append(keep * h)
    if reverse:
        ys.reverse()
    return torch.stack(ys), h


class SeedGRU(nn.Module):
    """A drop-in for `nn.GRU(batch_first=True)` with the reset gate applied before the hidden matmul."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0,
                 bidirectional: bool = False, batch_first: bool = True):
        super().__init__()
        if not batch_first:
            raise ValueError("SeedGRU is batch-first only")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout, self.bidirectional = dropout, bidirectional
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
        if lengths is None:
            valid = x.new_ones(steps, batch, 1)
        else:
            valid = (torch.arange(steps).unsqueeze(1) < lengths.cpu().unsqueeze(0)).unsqueeze(2).to(x)
        layer_input = x.transpose(0, 1)  # (T, B, F)
        finals: list[torch.Tensor] = []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                layer_input = nn.functional.dropout(layer_input, self.dropout, training=True)
            outputs = []
            for d, suffix in enumerate(["", "_reverse"][: self.directions]):
                w_ih, w_hh, b_ih, b_hh = (getattr(self, f"{name}_l{layer}{suffix}")
                                          for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
                gi = torch.nn.functional.linear(layer_input, w_ih, b_ih)  # (T, B, 3H)
                ys, h_last = _seed_direction(gi, h0[layer * self.directions + d], w_hh, b_hh, d == 1, valid)
                outputs.append(ys)
                finals.append(h_last)
            layer_input = torch.cat(outputs, dim=2)  # (T, B, D*H)
        return layer_input.transpose(0, 1), torch.stack(finals)


def torch_stand_in(gru: SeedGRU) -> nn.GRU:
    """An nn.GRU holding the same weights: what the ONNX exporter knows how to trace into a GRU node
    (weights mapped to W/R/B, gates reordered). export/onnx.py then sets linear_before_reset=0 on it."""
    stand_in = nn.GRU(gru.input_size, gru.hidden_size, gru.num_layers, batch_first=True,
                      bidirectional=gru.bidirectional)
    stand_in.load_state_dict(gru.state_dict())
    return stand_in.to(next(gru.parameters()).device).eval()
