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

    y (B, P, H); carried: {"mean": (B, H), "max": (B, H), "count": (B,)}, zeros for a new sequence."""
    if not {"mean", "max"} & set(parts):
        return {}
    valid = (torch.arange(y.shape[1], device=y.device).unsqueeze(0) < seen.unsqueeze(1)).unsqueeze(2)
    count = carried["count"] + seen.to(y.dtype)  # (B,)
    pools = {"count": count}
    if "mean" in parts:
        total = carried["mean"] * carried["count"].unsqueeze(1) + (y * valid.to(y.dtype)).sum(dim=1)
        pools["mean"] = total / count.clamp_min(1.0).unsqueeze(1)
    if "max" in parts:
        lowest = torch.full_like(carried["max"], LOWEST)
        before = torch.where(carried["count"].unsqueeze(1) > 0, carried["max"], lowest)
        now = torch.where(valid, y, torch.full_like(y, LOWEST)).amax(dim=1)
        highest = torch.maximum(before, now)
        pools["max"] = torch.where(count.unsqueeze(1) > 0, highest, torch.zeros_like(highest))
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
