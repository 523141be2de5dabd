"""The readout: what the head sees of the GRU's outputs over a sequence.

- "last": the last layer's state after the sequence's last step (both directions when bidirectional);
- "mean", "max": the last layer's outputs averaged / maximised over the sequence's valid steps.

Pooling over time lets a long sequence's early events reach the head without surviving hundreds of GRU
steps. Ragged-exact: only each sequence's own steps count. Streamable: the state carries the running mean,
maximum and count over the steps already read, so chunked = whole. It carries the mean rather than the sum:
a sum grows with the stream, and with it the rounding error a verification must tolerate.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

LOWEST = torch.finfo(torch.float32).min  # "no step yet" in a running maximum


def pooled(y: torch.Tensor, seen: torch.Tensor, carried: dict[str, torch.Tensor], parts: Sequence[str]
           ) -> dict[str, torch.Tensor]:
    """Running mean, max and count over the carried ones and y's first `seen` (B,) steps.

    y (B, P, H); carried: {"mean": (B, H), "max": (B, H), "count": (B, 1)}, zeros for a new sequence.
    Counts stay (B, 1), as the state carries them: no reshaping per request."""
    if not {"mean", "max"} & set(parts):
        return {}
    steps = seen.unsqueeze(1)  # (B, 1)
    valid = (torch.arange(y.shape[1], device=y.device).unsqueeze(0) < steps).unsqueeze(2)  # (B, P, 1)
    count = carried["count"] + steps.to(y.dtype)  # (B, 1)
    pools = {"count": count}
    zero = torch.zeros((), dtype=y.dtype, device=y.device)  # scalar fills: constants in the exported graph
    if "mean" in parts:
        total = carried["mean"] * carried["count"] + torch.where(valid, y, zero).sum(dim=1)
        pools["mean"] = total / count.clamp_min(1.0)
    if "max" in parts:
        lowest = torch.tensor(LOWEST, dtype=y.dtype, device=y.device)
        before = torch.where(carried["count"] > 0, carried["max"], lowest)
        highest = torch.maximum(before, torch.where(valid, y, lowest).amax(dim=1))
        pools["max"] = torch.where(count > 0, highest, zero)
    return pools

def features(last: torch.Tensor, pools: dict[str, torch.Tensor], parts: Sequence[str]) -> torch.Tensor:
    """The head's input (B, len(parts)·H), in the order of `parts`."""
    chosen = []
    for part in parts:
        if part == "last":
            chosen.append(last)
        elif part == "mean":
            chosen.append(pools["mean"])
        else:
            chosen.append(pools["max"])
    return torch.cat(chosen, dim=1)
