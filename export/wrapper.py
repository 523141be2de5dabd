"""The inference module that gets traced: raw x, h0 and lengths in; probabilities or forecasts, and
h_n, out.

Normalisation, the GRU, the head and post-processing (softmax, or de-normalising forecasts) all come
from GRUModel.predict, so the graph computes exactly what training evaluated.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from training.model import GRUModel


class InferenceModule(nn.Module):
    def __init__(self, model: GRUModel):
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        # Inter-layer dropout is a no-op at inference, but the TorchScript exporter (torch 2.13) emits
        # wrong numbers for a GRU that has it set (caught by verify.check_parity). Clear it.
        self.model.gru.dropout = 0.0

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, T, F), h0: (L*D, B, H), lengths: (B,) int32 -> output (B, O) or (B, T, O), h_n (L*D, B, H)
        return self.model.predict(x, h0, lengths)
