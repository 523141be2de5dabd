"""An ensemble of GRUModels as ONE ordinary GRUModel (optim.members): k members of hidden size H become a
model of hidden size k·H whose weights are block-diagonal, so member i's channels only ever read member
i's channels, and whose head averages the members' heads (weight [W1 … Wk]/k, bias their mean): averaged
logits for classification, averaged values for regression and forecasts. Export, parity, streaming and
serving see one GRU node; one request, one answer.

Every piece between the input and the head is channel-separable: the front end's Linear layers (the
second reads (1 + recent) windows of the first's outputs: its columns are blocks within each window), the
GRU (gates r, z, n stacked: blocks within each gate; a bidirectional layer's directions side by side),
the readout (each part, pooled channel-wise). The normaliser and the linear path are fitted in closed
form on the same training series (the splits do not depend on the seed), so they are the same in every
member: one is kept, after checking that. A value model's shrink factor (training/shrink.py) is already
folded into its head's weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from training.defaults import counted
from training.model import GRUModel

SHARED = ("normaliser.", "linear.")  # fitted in closed form on the data: identical in every member


def merge(models: Sequence[GRUModel]) -> GRUModel:
    """One GRUModel whose output is the mean of the members' outputs (to float rounding)."""
    first = models[0]
    config = first.config
    if config.cell != "gru":
        raise ValueError(f"optim.members: an ensemble merges GRU members; model.cell={config.cell} "
                         "cannot: set optim.members=1")
    for model in models[1:]:
        if model.config != config:
            raise ValueError("optim.members: the members' model configs differ; they must be equal")
    k, hidden = len(models), config.hidden_size
    merged = GRUModel(config.model_copy(update={"hidden_size": k * hidden}))
    state = {name: torch.zeros_like(value) for name, value in merged.state_dict().items()}
    for name in state:
        if name.startswith(SHARED):
            state[name] = _shared(name, models)
    for i, model in enumerate(models):
        blocks = _Blocks(i, k, hidden, first.directions)
        for name, value in model.state_dict().items():
            if name.startswith(SHARED):
                continue
            rows, cols = blocks.of(name, first)
            target = state[name]
            if value.dim() == 1:
                target[rows] += value
            else:
                target[rows.unsqueeze(1), cols.unsqueeze(0)] += value
    state["head.weight"] /= k  # the sum of the members' heads, so far
    state["head.bias"] /= k
    merged.load_state_dict(state)
    return merged.eval()


def _shared(name: str, models: Sequence[GRUModel]) -> torch.Tensor:
    value = models[0].state_dict()[name]
    for model in models[1:]:
        if not torch.equal(model.state_dict()[name], value):
            raise ValueError(f"optim.members: {name} differs between members; it is fitted on the data and "
                             "must be the same in each")
    return value.clone()


class _Blocks:
    """Where member i's rows and columns go in the merged weights."""

    def __init__(self, i: int, k: int, hidden: int, directions: int):
        self.i, self.k, self.hidden, self.directions = i, k, hidden, directions

    def channels(self, groups: int) -> torch.Tensor:
        """Member channels g·H + j (g < groups) -> merged g·k·H + i·H + j."""
        own = torch.arange(self.hidden)
        return torch.cat([g * self.k * self.hidden + self.i * self.hidden + own for g in range(groups)])

    def of(self, name: str, model: GRUModel) -> tuple[torch.Tensor, torch.Tensor]:
        """The merged rows and columns (all of them for inputs every member reads) of parameter `name`."""
        value = model.state_dict()[name]
        every = torch.arange(value.shape[1]) if value.dim() == 2 else torch.arange(0)
        if name.startswith("frontend.first."):  # reads the normalised steps: every column
            return self.channels(1), every
        if name.startswith("frontend.second."):  # reads (1 + recent) windows of `first`'s outputs
            return self.channels(1), self.channels(1 + model.frontend.recent)
        if name.startswith("layers."):
            layer, gates = int(name.split(".")[1]), self.channels(3)  # r, z, n stacked
            if ".weight_hh" in name:
                return gates, self.channels(1)
            if layer > 0:  # the previous layer's directions side by side
                return gates, self.channels(model.directions)
            return gates, every if model.frontend.kind == "none" else self.channels(1)
        if name.startswith("head."):
            outputs = torch.arange(value.shape[0])  # each reads readout parts × directions blocks
            return outputs, self.channels(value.shape[1] // self.hidden) if value.dim() == 2 else every
        raise ValueError(f"optim.members: no rule to merge the parameter {name}")


# optim.members "auto": an ensemble where one model's variance dominates, and only as many members as fit
# the time budget (each then gets its share). Measured with bench.quality, 3 seeds, official splits, one
# model (before) against auto (after), load 0.5-1.5 on 2 cores:
# - classification with few training series per class: PickupGestureWiimoteZ (5 per class) 0.680 +- 0.020
#   -> 0.713 +- 0.050 (1-NN DTW 0.700); PigCVP (2 per class) 0.268 -> 0.268 (its members memorise alike);
#   later, seeds 0-2 with 3 members forced: ArrowHead (12 per class) 0.777 -> 0.806, ACSF1 (10 per class)
#   0.847 -> 0.853 (112 s a run), OSULeaf (33 per class) no gain (0.822 -> 0.822, seed 1);
# - a value model trained as a final fit: M1 yearly MASE 3.503 +- 0.070 -> 3.450 +- 0.018, 61-69 s;
# - not a value model that holds validation out (optim.final_fit false): its correction to the baseline is
#   shrunk on those series (training/shrink.py), and on CardanoSentiment and Covid3Month every member's
#   was shrunk to 0, so 3 members answered exactly what one did (RMSE 0.2997, 0.0430) in 3x the time.
# MAX_MEMBERS 3: what fits the 120 s budget on these sets (M1's members take ~20 s each, Pickup's ~33 s).
MAX_MEMBERS = 3
FEW_PER_CLASS = 20  # classification: training series per class below which members are trained


def wanted_members(task: str, series: int, outputs: int, final_fit: bool) -> tuple[bool, str]:
    """Whether the data calls for an ensemble, and why."""
    if task == "classification":
        per_class = series / max(1, outputs)
        return per_class < FEW_PER_CLASS, f"{per_class:.1f} training series per class"
    if task == "tagging":
        return False, task
    if final_fit:
        return True, f"{task} trained as a final fit on {series} {counted(task)}"
    return False, f"{task} whose correction to its baseline is shrunk on the validation {counted(task)}"


def choose_members(setting: int | str, wanted: tuple[bool, str], off: str | None,
                   member_seconds: float | None, room: float | None) -> tuple[int, str]:
    """optim.members: the setting if a number, else from the data and the budget; and the line that says
    so ("" for a number). `off`: why this run cannot train members (torchrun, sharded data), or None
    (gru tune's trials set 1); `member_seconds`: one member's planned training and evaluations (for a
    number: its shortest run, one epoch), `room`: the seconds the budget leaves them (None when there is
    no budget or nothing was measured)."""
    if setting != "auto":
        k = int(setting)
        if k > 1 and off:
            raise ValueError(f"optim.members={setting}: {off} trains one model; set optim.members=1")
        # member_seconds: one member's shortest run. Before, optim.members=1000 trained member after
        # member far past the budget (105 in 120 s), to a merged GRU too large to build
        if k > 1 and room is not None and member_seconds is not None and k * member_seconds > room:
            most = max(1, int(max(room, 0) // member_seconds))
            raise ValueError(f"optim.members={k}: one member's shortest run (one epoch and its evaluations) "
                             f"takes ~{member_seconds:.1f} s, so {k} take ~{k * member_seconds:.0f} s, more "
                             f"than the {max(room, 0):.0f} s the time budget leaves; set optim.members to at "
                             f"most {most}, or raise --time-budget")
        return k, ""
    few, why = wanted
    if off or not few:
        return 1, f"optim.members=1 (auto: {off or why}: one model)"
    if room is None or member_seconds is None:
        return MAX_MEMBERS, f"optim.members={MAX_MEMBERS} (auto: {why}; no time budget)"
    fit = min(MAX_MEMBERS, int(max(room, 0) // max(member_seconds, 1e-9)))
    if fit < 2:
        return 1, (f"optim.members=1 (auto: {why}, but one model's run takes ~{member_seconds:.0f} s of "
                   f"the {max(room, 0):.0f} s the budget leaves)")
    return fit, f"optim.members={fit} (auto: {why}; {fit} members fit the {room:.0f} s the budget leaves)"
