"""The inference module that gets traced: raw x, the packed state and lengths in; probabilities or
forecasts, and the next state, out (GRUModel.graph).

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
        self.model = copy.deepcopy(model)
        # torch.onnx.export puts the module back in the mode it found it in, recursively: keep it in
        # eval mode for good, so that parity runs after the export do not see dropout
        self.eval()

    def forward(
        self, x: torch.Tensor, state: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # x: (B, T, F), state: (B, S), lengths: (B,) int32 -> output (B, O) or (B, T, O), next state (B, S)
        return self.model.graph(x, state, lengths)
