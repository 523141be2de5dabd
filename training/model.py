"""GRUModel: a GRU encoder plus a task head, built from one ModelConfig."""

from __future__ import annotations

import torch
from torch import nn

from training.cells import make_gru
from training.config import ModelConfig
from training.normalise import Normaliser


class GRUModel(nn.Module):
    """Many-to-one GRU: the last layer's final state (both directions) feeds a linear head.

    Classification: the head gives logits over labels. Regression/forecasting: `output_size` values,
    in normalised units (`predict` maps them back). Inputs are raw: normalisation is inside the model.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.directions = 2 if config.bidirectional else 1
        self.gru = make_gru(config)  # nn.GRU, or the seed's reset-before GRU (model.reset)
        self.head = nn.Linear(config.hidden_size * self.directions, config.output_size)
        self.normaliser = Normaliser(config.input_size, config.output_size, config.window_scaling)

    def state_shape(self, batch: int) -> tuple[int, int, int]:
        return (self.config.num_layers * self.directions, batch, self.config.hidden_size)

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw x: (B, T, F); h0: (L*D, B, H). Returns head output (B, O), h_n, and the window level (B, 1)."""
        level = self.normaliser.level(x)
        _, h_n = self.gru(self.normaliser.inputs(x, level), h0)  # (L*D, B, H)
        return self.head(self.last_layer_state(h_n)), h_n, level

    def predict(
        self, x: torch.Tensor, h0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What users get: class probabilities, or forecasts in original units; plus h_n."""
        out, h_n, level = self(x, h0)
        if self.config.task == "classification":
            return torch.softmax(out, dim=-1), h_n
        return self.normaliser.outputs(out, level), h_n

    def last_layer_state(self, h_n: torch.Tensor) -> torch.Tensor:
        layers, hidden = self.config.num_layers, self.config.hidden_size
        last = h_n.view(layers, self.directions, -1, hidden)[-1]  # (D, B, H)
        return last.permute(1, 0, 2).reshape(last.shape[1], -1)  # (B, D*H)
