"""GRUModel: a GRU encoder plus a task head, built from one ModelConfig."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from training.cells import SeedGRU, make_gru
from training.config import ModelConfig
from training.normalise import Normaliser


def step_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool: True on each sequence's valid steps."""
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.long().unsqueeze(1)


class GRUModel(nn.Module):
    """A GRU encoder and a linear head.

    Classification/regression (many-to-one): the last layer's final state (both directions) feeds the
    head; classification gives logits over labels, regression `output_size` values in normalised
    units (`predict` maps them back). Tagging (many-to-many): the head reads the last layer's output at
    every step and gives logits per step. Inputs are raw: normalisation is inside the model.

    Ragged batches: `lengths` (B,) gives each sequence's valid steps (the rest is padding). The GRU then
    runs on packed sequences, so each answer is exactly that sequence's own; the exported graph does
    the same with the ONNX GRU's `sequence_lens` (export/onnx.py wires it in).
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

    def state_parts(self) -> list[tuple[str, tuple[int, ...]]]:
        """The per-sequence streaming state, packed in this order into one vector (the graph's `state`)."""
        return [("gru_h", (self.config.num_layers * self.directions, self.config.hidden_size))]

    def streaming_refusal(self) -> str | None:
        """Why a prefix of a sequence cannot be answered from a carried state, or None if it can."""
        if self.config.bidirectional:
            return ("it is bidirectional: its answer depends on the steps after each one, so a prefix "
                    "cannot be answered from a carried state")
        if self.config.window_scaling:
            return ("its inputs are scaled by the mean of the whole window, which is not known until "
                    "the window ends")
        return None

    def stream(
        self, x: torch.Tensor, state: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The exported function: raw x (B, T, F), the packed state (B, S) and lengths (B,) in; what
        `predict` gives and the next packed state (B, S) out."""
        layers_dirs, hidden = self.state_parts()[0][1]
        h0 = state.reshape(-1, layers_dirs, hidden).transpose(0, 1).contiguous()  # (L*D, B, H)
        out, h_n = self.predict(x, h0, lengths)
        return out, h_n.transpose(0, 1).reshape(x.shape[0], layers_dirs * hidden)

    def forward(
        self, x: torch.Tensor, h0: torch.Tensor | None = None, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw x: (B, T, F); h0: (L*D, B, H); lengths: (B,) or None (all T steps valid).
        Returns the head output ((B, O), or (B, T, O) for tagging), h_n and the window level (B, 1)."""
        level = self.normaliser.level(x, lengths)
        y, h_n = self.encode(self.normaliser.inputs(x, level), h0, lengths)  # (B, T, D*H), (L*D, B, H)
        if self.config.task == "tagging":
            return self.head(y), h_n, level
        return self.head(self.last_layer_state(h_n)), h_n, level

    def encode(
        self, x: torch.Tensor, h0: torch.Tensor | None, lengths: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if lengths is None or torch.jit.is_tracing():
            # While tracing for export the GRU runs unpacked: export wires `lengths` into every ONNX
            # GRU node's sequence_lens afterwards, which gives the packed semantics in the graph.
            return self.gru(x, h0)
        if isinstance(self.gru, SeedGRU):  # masks padded steps itself (no packed-sequence kernel)
            return self.gru(x, h0, lengths)
        packed = pack_padded_sequence(x, lengths.cpu().long(), batch_first=True, enforce_sorted=False)
        y, h_n = self.gru(packed, h0)
        y, _ = pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])  # zeros past lengths
        return y, h_n

    def predict(
        self, x: torch.Tensor, h0: torch.Tensor | None = None, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What users get: class probabilities ((B, T, O) per step for tagging, zero past each
        sequence's length), or forecasts in original units; plus h_n."""
        out, h_n, level = self(x, h0, lengths)
        if self.config.task == "classification":  # a sigmoid head: (B, 1), P(the second label)
            return (torch.sigmoid(out) if self.config.head == "sigmoid" else torch.softmax(out, dim=-1)), h_n
        if self.config.task == "tagging":
            probs = torch.softmax(out, dim=-1)
            if lengths is not None:
                probs = probs * step_mask(lengths, x.shape[1]).unsqueeze(2).to(probs.dtype)
            return probs, h_n
        return self.normaliser.outputs(out, level), h_n

    def last_layer_state(self, h_n: torch.Tensor) -> torch.Tensor:
        layers, hidden = self.config.num_layers, self.config.hidden_size
        last = h_n.view(layers, self.directions, -1, hidden)[-1]  # (D, B, H)
        return last.permute(1, 0, 2).reshape(last.shape[1], -1)  # (B, D*H)
