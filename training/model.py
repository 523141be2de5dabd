"""GRUModel: front end -> GRU -> readout -> head, built from one ResolvedModelConfig.

    raw x (B, T, F) -> normalise -> front end: causal strided convolutions, k steps per GRU step
    (B, ceil(T/k), E) -> GRU layers (either reset variant) -> readout: last state ⊕ mean ⊕ max over the
    valid steps -> dropout -> linear head; value models add the head's output to a baseline read from the
    input: the seasonal-naive forecast (model.seasonal_skip) and/or a fixed linear path on the last steps
    (model.linear_steps, training/linear.py)

One function, `run`, computes everything from (x, lengths, state) to (output, next state): training calls
it with a zero state, the exported graph is a trace of it. So the graph computes exactly what training
evaluated, and a stream read in chunks gives what the whole sequence gives.

Ragged batches: `lengths` (B,) gives each sequence's valid steps. The GRU runs over the padded batch;
the readout reads each sequence's own steps only (its state at its last valid step, pools over its
valid steps) and a GRU is causal, so padding never reaches an answer. The reverse direction of a
bidirectional layer reads each sequence reversed within its own length.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
from torch import nn

from service.heads import Head, head_for
from training import heads, readout
from training.cells import LSTMEncoder, make_gru
from training.config import ModelConfig, ResolvedModelConfig
from training.frontend import FrontEnd, gather_steps, step_mask
from training.normalise import Normaliser

__all__ = ["GRUModel", "step_mask"]


class GRUModel(nn.Module):
    """Classification/regression (many-to-one): the readout feeds the head; classification gives logits
    over labels, regression `output_size` values in normalised units (`predict` maps them back).
    Tagging (many-to-many, patch 1): the head reads the last layer's output at every step."""

    def __init__(self, config: ResolvedModelConfig):
        super().__init__()
        self.task_head: Head = head_for(config.task, binary=config.head == "sigmoid")
        if self.task_head.per_step and config.patch != 1:
            raise ValueError("model.patch must be 1 for tagging: it answers at every step")
        self.config = config
        self.patch: int = config.patch
        self.directions = 2 if config.bidirectional else 1
        width = config.hidden_size * self.directions
        self.normaliser = Normaliser(config.input_size, config.output_size, config.window_scaling,
                                     per_series=config.normalise == "series")
        self.frontend = FrontEnd(config.frontend, self.normaliser.width, config.patch, config.hidden_size,
                                 config.conv_kernel)
        self.layers = nn.ModuleList(
            nn.ModuleList(make_gru(_one_layer(config, self.frontend.width if i == 0 else width))
                          for _ in range(self.directions))
            for i in range(config.num_layers))
        self.dropout = nn.Dropout(config.dropout)
        parts = 1 if self.task_head.per_step else len(config.readout)
        self.head = nn.Linear(parts * width, config.output_size)
        if config.linear_steps:  # fitted in closed form before training (training/linear.py), then fixed
            reads = config.linear_steps + (SUMMARIES if config.linear_summary else 0)
            self.linear = nn.Linear(reads * self.normaliser.width, config.output_size)
            self.linear.requires_grad_(False)
        # how encode runs one GRU layer and direction; export swaps in one ONNX GRU node that reads the
        # valid steps as its sequence_lens (export/gru_node.py): the same numbers, a leaner graph
        self.read_gru: GRURead = read_gru
        if config.task == "regression" or config.seasonal_skip or config.linear_steps:
            _start_from_the_baseline(self.head)

    # -- the state --------------------------------------------------------------------------------------

    @property
    def carries(self) -> bool:
        """Whether the state carries an unfinished patch and pools (not for bidirectional models, whose
        answers never come from a carried state)."""
        return not self.config.bidirectional

    def state_parts(self) -> list[tuple[str, tuple[int, ...]]]:
        """The per-sequence state, packed in this order into one vector (the graph's `state`)."""
        config, hidden = self.config, self.config.hidden_size
        parts: list[tuple[str, tuple[int, ...]]] = [("gru_h", (config.num_layers * self.directions, hidden))]
        if not self.carries:
            return parts
        parts += self.frontend.state_parts()
        if not self.task_head.per_step and {"mean", "max"} & set(config.readout):
            parts += [("pool_mean", (hidden,)), ("pool_max", (hidden,)), ("pool_count", (1,))]
        return parts

    def state_size(self) -> int:
        return sum(math.prod(shape) for _, shape in self.state_parts())

    def streaming_refusal(self) -> str | None:
        """Why a prefix of a sequence cannot be answered from a carried state, or None if it can."""
        if self.config.bidirectional:
            return ("it is bidirectional: its answer depends on the steps after each one, so a prefix "
                    "cannot be answered from a carried state")
        if self.config.window_scaling:
            return ("its inputs are scaled by the mean of the whole window, which is not known until "
                    "the window ends")
        if self.config.seasonal_skip:
            return ("its forecast repeats the last season of the input window, which a carried state does "
                    "not hold")
        if self.config.linear_steps:
            return (f"its linear path reads the last {self.config.linear_steps} steps of the input, which a "
                    "carried state does not hold")
        if self.normaliser.per_series:
            return ("each series is normalised by its own mean and standard deviation (model.normalise="
                    "series, chosen when the training series' scales differ by orders of magnitude), which "
                    "are not known until the series ends")
        return None

    def unpack(self, state: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, S) -> {part: (B, *shape)}."""
        parts = self.state_parts()
        pieces = state.split([math.prod(shape) for _, shape in parts], dim=1)  # one Split node when exported
        return {name: piece.reshape(-1, *shape) for (name, shape), piece in zip(parts, pieces, strict=True)}

    def pack(self, parts: dict[str, torch.Tensor]) -> torch.Tensor:
        """{part: (B, *shape)} -> (B, S), in state_parts order."""
        flat = [parts[n] if parts[n].dim() == 2 else parts[n].flatten(1) for n, _ in self.state_parts()]
        return torch.cat(flat, dim=1)

    # -- the computation --------------------------------------------------------------------------------

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw x (B, T, F); lengths (B,) or None (all T steps valid); state (B, S) or None (zeros: new
        sequences). Returns the head output ((B, O), or (B, T, O) for tagging), the next state (B, S)
        and the window level (B, 1)."""
        batch, steps = x.shape[0], x.shape[1]
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long, device=x.device)
        if state is None:
            state = x.new_zeros(batch, self.state_size())
        return self.run(x, lengths.to(x.device), state)

    def run(
        self, x: torch.Tensor, lengths: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        level = self.normaliser.level(x, lengths)
        carried = self.unpack(state)
        steps, total = self._steps(x, lengths, level, carried)  # (B, T', F), (B,)
        k = self.patch
        # patches with any step / with all k steps (one tensor at stride 1: the graph computes it once)
        seen, done = (total, total) if k == 1 else ((total + k - 1) // k, total // k)
        z, context = self.frontend(steps, done, carried)  # (B, P, E), the front end's next context
        y, h_seen, h_done = self.encode(z, carried["gru_h"], seen, done)  # (B, P, D*H), L*D x (B, H) x2
        nxt = {"gru_h": torch.cat(h_done if self.carries else h_seen, dim=1)}  # (B, L*D*H)
        if self.carries:
            nxt |= context
        if self.carries and k > 1:
            nxt["patch_steps"], count = self.frontend.unfinished(steps, total)
            nxt["patch_count"] = count.to(x.dtype).unsqueeze(1)
        if self.task_head.per_step:
            return self.head(self.dropout(y)), self.pack(nxt), level
        last = torch.cat(h_seen[-self.directions :], dim=1)  # the last layer, both directions: (B, D*H)
        before = self._carried_pools(carried, y)
        pools = readout.pooled(y, seen, before, self.config.readout)
        if self.carries and pools:  # the next chunk continues from the whole patches only
            kept = readout.pooled(y, done, before, self.config.readout)
            zeros = torch.zeros_like(last)
            nxt |= {"pool_mean": kept.get("mean", zeros), "pool_max": kept.get("max", zeros),
                    "pool_count": kept["count"]}
        out = self.head(self.dropout(readout.features(last, pools, self.config.readout)))
        if self.config.seasonal_skip or self.config.linear_steps:
            out = out + self.baseline(x, lengths, level)
        return out, self.pack(nxt), level

    def baseline(self, x: torch.Tensor, lengths: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """What a value model's head corrects (B, O), in normalised target units: the seasonal-naive
        forecast and/or the linear path; zeros (the training mean) without either."""
        out = x.new_zeros(x.shape[0], self.config.output_size)
        if self.config.seasonal_skip:
            out = out + self.seasonal_naive(x, lengths, level)
        if self.config.linear_steps:
            out = out + self.linear(self.last_steps(x, lengths, level))
        return out

    def last_steps(self, x: torch.Tensor, lengths: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """What the linear path reads: each sequence's last model.linear_steps normalised steps, flat
        (B, L * width), zeros before a sequence's first step; with model.linear_summary, then their
        summary (step_summary, (B, SUMMARIES * width))."""
        steps = self.config.linear_steps
        index = lengths.long().unsqueeze(1) + torch.arange(-steps, 0, device=x.device).unsqueeze(0)  # (B, L)
        inputs = self.normaliser.inputs(x, level, lengths)
        real = (index >= 0).unsqueeze(2).to(x.dtype)  # (B, L, 1)
        picked = gather_steps(inputs, index.clamp(min=0)) * real
        if not self.config.linear_summary:
            return picked.flatten(1)
        return torch.cat([picked.flatten(1), step_summary(picked, real)], dim=1)

    def seasonal_naive(self, x: torch.Tensor, lengths: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """The seasonal-naive forecast (B, horizon) at period model.seasonal_skip, in normalised target
        units: the last season of the target (feature 0) repeated, plus model.drift's share of the
        window's drift per step ahead. The head's output corrects it."""
        period, horizon = self.config.seasonal_skip, self.config.output_size
        offsets = torch.arange(horizon, device=x.device) % period - period  # (H,) in -period..-1
        index = lengths.long().unsqueeze(1) + offsets.unsqueeze(0)  # (B, H) steps of each sequence
        index = index.clamp(min=0)  # a sequence shorter than one season repeats its first step
        forecast = gather_steps(x[:, :, :1], index).squeeze(2)
        if self.config.drift:
            forecast = forecast + self.config.drift * self.window_drift(x, lengths)
        return self.normaliser.targets(forecast, level)

    def window_drift(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, horizon) raw target units: h times the slope from each window's first step to its last
        (the drift method's forecast less the naive)."""
        last = gather_steps(x[:, :, :1], (lengths.long() - 1).unsqueeze(1)).squeeze(2)  # (B, 1)
        slope = (last - x[:, :1, 0]) / (lengths.unsqueeze(1).to(x.dtype) - 1).clamp_min(1)
        return slope * torch.arange(1, self.config.output_size + 1, device=x.device, dtype=x.dtype)

    def _steps(
        self, x: torch.Tensor, lengths: torch.Tensor, level: torch.Tensor, carried: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised steps (zero past each length when the front end cuts patches of k > 1 steps),
        after the carried steps of an unfinished patch; and each sequence's number of steps."""
        inputs = self.normaliser.inputs(x, level, lengths)
        if self.patch == 1:  # steps past a length reach only steps past it: the readout never reads them
            return inputs, lengths.long()
        inputs = inputs * step_mask(lengths, x.shape[1]).unsqueeze(2).to(x.dtype)
        if not self.carries:
            return inputs, lengths.long()
        count = carried["patch_count"][:, 0].round()
        return self.frontend.join(carried["patch_steps"], count, inputs, lengths)

    def _carried_pools(self, carried: dict[str, torch.Tensor], y: torch.Tensor) -> dict[str, torch.Tensor]:
        if "pool_count" in carried:
            return {"mean": carried["pool_mean"], "max": carried["pool_max"], "count": carried["pool_count"]}
        zeros = y.new_zeros(y.shape[0], y.shape[2])  # nothing carried: a new sequence
        return {"mean": zeros, "max": zeros, "count": zeros[:, :1]}

    def encode(
        self, z: torch.Tensor, h0: torch.Tensor, seen: torch.Tensor, done: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """z (B, P, E); h0 (B, L*D, H); seen/done (B,) patches. Returns the last layer's outputs
        (B, P, D*H) and every layer's and direction's state (B, H) after `seen` and after `done` patches
        (lists, not stacked: the state and the readout concatenate them flat)."""
        h_seen, h_done = [], []
        for i, layer in enumerate(self.layers):
            outputs = []
            for d, gru in enumerate(cast(nn.ModuleList, layer)):
                start = h0[:, i * self.directions + d]  # (B, H)
                if d == 0:
                    out, last = self.read_gru(gru, z, start, seen)  # (B, P, H), (B, H)
                    h_seen.append(last)
                    h_done.append(last if done is seen else _state_after(out, done, start))
                else:  # each sequence reversed within its own length, read, and put back in order
                    order = _reversed_order(seen, z.shape[1])
                    out, last = self.read_gru(gru, gather_steps(z, order), start, seen)
                    h_seen.append(last)
                    h_done.append(last)
                    out = gather_steps(out, order)
                outputs.append(out)
            z = torch.cat(outputs, dim=2)
            if i < len(self.layers) - 1:
                z = self.dropout(z)
        return z, h_seen, h_done

    def predict(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """What users get: class probabilities ((B, T, O) per step for tagging, zero past each
        sequence's length), or forecasts in original units; plus the next state."""
        out, nxt, level = self(x, lengths, state)
        return self.answers(out, level, lengths), nxt

    def answers(self, out: torch.Tensor, level: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """`predict`'s answers from forward's head output and window level: evaluation scores the loss
        and the answers of one forward pass."""
        if self.task_head.values:
            return self.normaliser.outputs(out, level)
        probs = heads.activate(self.task_head, out)
        if self.task_head.per_step and lengths is not None:
            probs = probs * step_mask(lengths, out.shape[1]).unsqueeze(2).to(probs.dtype)
        return probs

    def graph(
        self, x: torch.Tensor, state: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The exported function: raw x (B, T, F), the packed state (B, S) and lengths (B,) in; what
        `predict` gives and the next packed state (B, S) out."""
        return self.predict(x, lengths, state)

    # -- for checks against the NumPy reference GRU -----------------------------------------------------

    def gru_weights(self) -> dict[str, torch.Tensor]:
        """The GRU's weights under torch.nn.GRU's names (weight_ih_l{layer}[_reverse], ...)."""
        weights: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            for d, gru in enumerate(cast(nn.ModuleList, layer)):
                for name, value in gru.named_parameters():
                    weights[name.replace("_l0", f"_l{i}") + ("_reverse" if d else "")] = value
        return weights

    def gru_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Whole sequences x (B, T, F) -> the GRU's input (B, P, E) for the patches whose state the next
        state holds (the whole ones, for a model that carries an unfinished patch)."""
        steps = self.normaliser.inputs(x, self.normaliser.level(x))
        whole = torch.full((x.shape[0],), x.shape[1] // self.patch, dtype=torch.long)
        z, _ = self.frontend(steps, whole, {})
        return z[:, : x.shape[1] // self.patch] if self.carries else z


def _start_from_the_baseline(head: nn.Linear) -> None:
    """A regression head, or a forecaster's with a seasonal skip, starts at zero: the untrained model
    predicts the training mean (or the seasonal-naive forecast), and training moves it only as far as the
    data supports. Not for other forecasters: on M1 yearly it spread the seeds (MASE 3.46 ± 0.18 against
    3.45 ± 0.07)."""
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)


def _one_layer(config: ModelConfig, input_size: int) -> ModelConfig:
    return config.model_copy(update={"input_size": input_size, "num_layers": 1, "bidirectional": False,
                                     "dropout": 0.0})


GRURead = Callable[[nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def read_gru(
    gru: nn.Module, z: torch.Tensor, start: torch.Tensor, steps: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One GRU layer and direction over z (B, P, E) from start (B, H): its outputs (B, P, H) and its
    state after each sequence's first `steps` (B,) steps."""
    h = None if isinstance(gru, LSTMEncoder) else start.unsqueeze(0).contiguous()  # lstm: no state
    out, _ = gru(z, h)
    return out, _state_after(out, steps, start)


def _state_after(out: torch.Tensor, steps: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """A GRU's state after each sequence's first `steps` (B,) steps: out[:, steps-1], or `start` when 0."""
    picked = gather_steps(out, (steps - 1).clamp_min(0).unsqueeze(1))[:, 0]  # (B, H); no squeeze: no If
    return torch.where(steps.unsqueeze(1) > 0, picked, start)


def _reversed_order(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B, T) indices that reverse each sequence within its length (steps past it stay past it)."""
    position = torch.arange(steps, device=lengths.device).unsqueeze(0)
    return torch.where(position < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - position, position)


SUMMARIES = 5  # what step_summary gives per feature


def step_summary(steps: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """steps (B, L, F), zero where `real` (B, L, 1) is 0 -> (B, 5F): each feature's mean, standard
    deviation, minimum, maximum and least-squares slope per step over the real steps. Ridge on the raw
    steps cannot form these (Tecator's spectra: RMSE 2.65 on the steps, 2.18 with their summary)."""
    count = real.sum(dim=1)  # (B, 1): at least one real step
    mean = steps.sum(dim=1) / count
    centred = (steps - mean.unsqueeze(1)) * real
    std = (centred.square().sum(dim=1) / count).sqrt()
    big = torch.finfo(steps.dtype).max
    low = torch.where(real > 0, steps, big).amin(dim=1)
    high = torch.where(real > 0, steps, -big).amax(dim=1)
    position = torch.arange(steps.shape[1], device=steps.device, dtype=steps.dtype).view(1, -1, 1) * real
    at = (position - (position.sum(dim=1) / count).unsqueeze(1)) * real
    slope = (at * centred).sum(dim=1) / at.square().sum(dim=1).clamp_min(1e-12)
    return torch.cat([mean, std, low, high, slope], dim=1)
