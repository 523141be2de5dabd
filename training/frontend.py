"""The front end: shortens the time axis before the GRU by reading `patch` steps as one.

k consecutive steps of F features become one GRU step: their k·F values, embedded by a two-layer
perceptron with GELUs (a Conv1d with kernel = stride = k, then a 1x1 one; two layers let the embedding see
a patch's peaks and spread, not only weighted sums of its values). A GRU reading 1,460 steps one at a time
barely learns from a hundred series; read 12 at a time it sees 122 steps and learns (README "Model").

Ragged sequences and streaming: a sequence of n steps gives ceil(n/k) patches, the last one zero-filled
when n is not a multiple of k. A stream carries the steps of its unfinished patch (and their count) in
its state, and the next chunk starts by completing that patch, so a sequence read in chunks is read as the
same patches as the whole: chunked = whole, exactly.
"""

from __future__ import annotations

import torch
from torch import nn


def step_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool: True on each sequence's valid steps."""
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.long().unsqueeze(1)


def gather_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, F), index (B, T') of steps (clamped into range) -> (B, T', F)."""
    index = index.clamp(0, x.shape[1] - 1)
    return torch.gather(x, 1, index.unsqueeze(2).expand(-1, -1, x.shape[2]))


class Patcher(nn.Module):
    """k steps -> one embedded GRU step. With k = 1 it embeds each step."""

    def __init__(self, features: int, patch: int, width: int):
        super().__init__()
        self.features, self.patch = features, patch
        self.embed = nn.Sequential(nn.Linear(patch * features, width), nn.GELU(), nn.Linear(width, width),
                                   nn.GELU())

    def join(
        self, pending: torch.Tensor, count: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The carried steps of an unfinished patch, then this chunk's steps.

        pending (B, k-1, F) with `count` (B,) of them valid; x (B, T, F) zero past `lengths` (B,).
        Returns steps (B, k-1+T, F), zero past each sequence's total, and the totals n = count + lengths."""
        if self.patch == 1:
            return x, lengths.long()
        carried = self.patch - 1
        both = torch.cat([pending, x], dim=1)  # (B, k-1+T, F): pending, then x after all k-1 slots
        position = torch.arange(both.shape[1], device=x.device).unsqueeze(0)  # (1, k-1+T)
        count = count.long().clamp(0, carried).unsqueeze(1)  # (B, 1)
        source = torch.where(position < count, position, position + carried - count)  # close the gap
        total = count.squeeze(1) + lengths.long()
        steps = gather_steps(both, source) * step_mask(total, both.shape[1]).unsqueeze(2).to(x.dtype)
        return steps, total

    def cut(self, steps: torch.Tensor) -> torch.Tensor:
        """steps (B, T, F) -> patches (B, ceil(T/k), k·F), zero-filled at the end."""
        k, (batch, length, features) = self.patch, steps.shape
        patches = (length + k - 1) // k
        index = torch.arange(patches * k, device=steps.device)  # past T: clamped, then zeroed
        filled = gather_steps(steps, index.unsqueeze(0).expand(batch, -1))
        filled = filled * (index < length).to(steps.dtype).view(1, -1, 1)
        return filled.reshape(batch, patches, k * features)

    def unfinished(self, steps: torch.Tensor, total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the next chunk must start with: the steps after the last whole patch (B, k-1, F) and their
        count (B,)."""
        k = self.patch
        done = total // k * k  # (B,) steps in whole patches
        count = total - done
        offset = torch.arange(k - 1, device=steps.device).unsqueeze(0)  # (1, k-1)
        pending = gather_steps(steps, done.unsqueeze(1) + offset)
        return pending * (offset < count.unsqueeze(1)).unsqueeze(2).to(steps.dtype), count
