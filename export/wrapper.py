"""The inference module that gets traced: raw x, the packed state and lengths in; probabilities or
forecasts, and the next state, out (GRUModel.stream).

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
        self, x: torch.Tensor, state: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, T, F), state: (B, S), lengths: (B,) int32 -> output (B, O) or (B, T, O), next state (B, S)
        return self.model.stream(x, state, lengths)
