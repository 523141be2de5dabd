"""One GRU layer and direction as one ONNX GRU node that reads each sequence's valid steps as its
`sequence_lens`: its Y_h is then the state after each sequence's last valid step, so the graph needs no
gather of it from Y (GRUModel.read_gru computes that in PyTorch; this is the traced form of it).

The trace records this function's symbolic, not its forward: forward returns what PyTorch computed
(GRUModel's own read_gru), so the module that export verifies against stays the trained model.
"""

from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from training.model import read_gru

ONNX_GATES = [1, 0, 2]  # torch orders the gates r, z, n; ONNX z, r, h
INT32 = 6  # onnx.TensorProto.INT32


def gru_node_read(
    gru: nn.Module, z: torch.Tensor, start: torch.Tensor, steps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRUModel.read_gru's contract, traced as one GRU node (the GRU module: an nn.GRU of one layer,
    one direction; export/onnx.py sets linear_before_reset and the activations afterwards)."""
    out, last = read_gru(gru, z, start, steps)
    weights = dict(gru.named_parameters())
    w, r = _onnx_gates(weights["weight_ih_l0"]), _onnx_gates(weights["weight_hh_l0"])
    b = torch.cat([_onnx_gates(weights["bias_ih_l0"]), _onnx_gates(weights["bias_hh_l0"])]).unsqueeze(0)
    out, at_end = cast(Any, _GRUNode).apply(z, start, steps, w.unsqueeze(0), r.unsqueeze(0), b, out, last)
    return out, torch.where(steps.unsqueeze(1) > 0, at_end, start)  # no valid step: ONNX gives zeros


def _onnx_gates(weight: torch.Tensor) -> torch.Tensor:
    return torch.cat([weight.chunk(3)[i] for i in ONNX_GATES])


class _GRUNode(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, start: torch.Tensor, steps: torch.Tensor, w: torch.Tensor,
                r: torch.Tensor, b: torch.Tensor, out: torch.Tensor, last: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        return out.clone(), last.clone()

    @staticmethod
    def symbolic(g: Any, z: Any, start: Any, steps: Any, w: Any, r: Any, b: Any, out: Any, last: Any
                 ) -> tuple[Any, Any]:
        hidden = w.type().sizes()[1] // 3
        x = g.op("Transpose", z, perm_i=[1, 0, 2])  # (P, B, E)
        lens = g.op("Cast", steps, to_i=INT32)
        h0 = g.op("Unsqueeze", start, g.op("Constant", value_t=torch.tensor([0])))  # (1, B, H)
        y, y_h = g.op("GRU", x, w, r, b, lens, h0, hidden_size_i=hidden, outputs=2)
        y = g.op("Squeeze", y, g.op("Constant", value_t=torch.tensor([1])))  # (P, B, H)
        out = g.op("Transpose", y, perm_i=[1, 0, 2])  # (B, P, H)
        return out, g.op("Squeeze", y_h, g.op("Constant", value_t=torch.tensor([0])))  # (B, H)
