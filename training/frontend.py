"""The front end: shortens the time axis before the GRU (`model.frontend`, stride `model.patch` = k).

- "conv" (the default for classification): two causal convolutions. The first reads the previous k steps
  and the current k steps (a Conv1d with kernel 2k, stride k, zeros before the start), the second three
  consecutive outputs of the first (kernel 3, stride 1); GELU after each. Overlapping windows let the GRU
  see an event that straddles a stride boundary whole; the second layer widens the view to 4k steps.
- "patch": k steps as one GRU step, embedded by a two-layer perceptron with GELUs (kernel = stride = k).
- "none": the GRU reads each normalised step itself (k = 1): forecasting and tagging, whose windows are
  short and whose research figures come from this plain GRU.

Both learned front ends are the same two layers: `first` reads `context` (model.conv_kernel - 1) previous
patches beside the current one, `second` reads `recent` previous outputs of `first` beside the current one
(conv: 1 and 2; patch: 0 and 0). A GRU reading 1,460 steps one at a time barely learns from a hundred
series; read 12 at a time through overlapping windows it sees 122 steps and learns (ACSF1: 0.87,
docs/guides/model.md).

Ragged sequences and streaming: a sequence of n steps gives ceil(n/k) patches, the last one zero-filled
when n is not a multiple of k. A stream carries in its state what the next chunk needs to continue exactly
as the whole sequence would: the steps of its unfinished patch and their count, the last whole patch (the
first layer's context) and the first layer's last two outputs (the second layer's), all after whole patches
only. So chunked = whole, exactly, for any chunk sizes, including chunks shorter than k.
"""

from __future__ import annotations

import torch
from torch import nn

FRONT_PARTS = ("patch_steps", "patch_count", "conv_patch", "conv_out")  # state parts the front end owns


def step_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool: True on each sequence's valid steps."""
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.long().unsqueeze(1)


def gather_steps(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, F), index (B, T') of steps, each in 0..T-1 -> (B, T', F)."""
    across = torch.zeros(1, 1, x.shape[2], dtype=index.dtype, device=index.device)
    return torch.gather(x, 1, index.unsqueeze(2) + across)  # broadcast, not expand(-1): no shape plumbing


def windows(history: torch.Tensor | None, z: torch.Tensor, c: int) -> torch.Tensor:
    """history (B, c, E) before z (B, P, E) -> (B, P, (c+1)·E): each step with the c steps before it;
    None: c = 0, z itself. c is given, not read from history: a constant in the exported graph."""
    if history is None:
        return z
    both = torch.cat([history, z], dim=1)
    # ends counted from the end: constants in the exported graph
    return torch.cat([both[:, i : i - c] for i in range(c)] + [both[:, c:]], dim=2)


class FrontEnd(nn.Module):
    """Normalised steps (B, T, F) -> GRU steps (B, ceil(T/k), width)."""

    def __init__(self, kind: str, features: int, patch: int, width: int, kernel: int = 2):
        super().__init__()
        if kind == "none" and patch != 1:
            raise ValueError("model.patch must be 1 with model.frontend=none")
        self.kind, self.features, self.patch = kind, features, patch
        self.context, self.recent = (kernel - 1, 2) if kind == "conv" else (0, 0)  # kernel in strides
        self.width = features if kind == "none" else width
        if kind != "none":
            self.first = nn.Sequential(nn.Linear((1 + self.context) * patch * features, width), nn.GELU())
            self.second = nn.Sequential(nn.Linear((1 + self.recent) * width, width), nn.GELU())

    def state_parts(self) -> list[tuple[str, tuple[int, ...]]]:
        """What a stream carries for the front end (after its whole patches)."""
        parts: list[tuple[str, tuple[int, ...]]] = []
        if self.patch > 1:
            parts += [("patch_steps", (self.patch - 1, self.features)), ("patch_count", (1,))]
        if self.context:
            parts.append(("conv_patch", (self.context * self.patch, self.features)))
        if self.recent:
            parts.append(("conv_out", (self.recent, self.width)))
        return parts

    def forward(
        self, steps: torch.Tensor, done: torch.Tensor, carried: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """steps (B, T, F) zero past each sequence's end, beginning with any carried unfinished patch;
        done (B,) whole patches; carried: the state's parts (absent or zero: a new sequence).
        Returns z (B, P, width) and the front end's next carried context (after `done` patches)."""
        patches = self.cut(steps)  # (B, P, k·F)
        if self.kind == "none":
            return patches, {}
        nxt = {}
        before = self._carried(carried, "conv_patch", self.context, self.patch * self.features, patches)
        z = self.first(windows(before, patches, self.context))  # (B, P, E)
        recent = self._carried(carried, "conv_out", self.recent, self.width, z)  # (B, recent, E)
        out = self.second(windows(recent, z, self.recent))  # (B, P, E)
        if before is not None:  # the last `context` whole patches (or the carried ones, when fewer were done)
            last = self._last(before, patches, done, self.context)
            nxt["conv_patch"] = last.reshape(-1, self.context * self.patch, self.features)
        if recent is not None:
            nxt["conv_out"] = self._last(recent, z, done, self.recent)
        return out, nxt

    def _carried(self, carried: dict[str, torch.Tensor], name: str, count: int, width: int,
                 like: torch.Tensor) -> torch.Tensor | None:
        """(B, count, width): sizes from the config, so that the exported graph knows them; None for 0."""
        if not count:
            return None
        if name in carried:
            return carried[name].reshape(-1, count, width)
        return like.new_zeros(like.shape[0], count, width)

    @staticmethod
    def _last(history: torch.Tensor, z: torch.Tensor, done: torch.Tensor, c: int) -> torch.Tensor:
        """The last c (= history's length) steps of history ⊕ z's first `done` (B,) steps."""
        index = done.unsqueeze(1) + torch.arange(c, device=z.device).unsqueeze(0)  # (B, c)
        return gather_steps(torch.cat([history, z], dim=1), index)

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
        source = source.clamp(max=both.shape[1] - 1)
        steps = gather_steps(both, source) * step_mask(total, both.shape[1]).unsqueeze(2).to(x.dtype)
        return steps, total

    def cut(self, steps: torch.Tensor) -> torch.Tensor:
        """steps (B, T, F) -> patches (B, ceil(T/k), k·F), zero-filled at the end."""
        k, (batch, length, features) = self.patch, steps.shape
        if k == 1:
            return steps
        filled = nn.functional.pad(steps, (0, 0, 0, (k - length % k) % k))  # zeros up to whole patches
        return filled.reshape(batch, -1, k * features)

    def unfinished(self, steps: torch.Tensor, total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the next chunk must start with: the steps after the last whole patch (B, k-1, F) and their
        count (B,)."""
        k = self.patch
        done = total // k * k  # (B,) steps in whole patches
        count = total - done
        offset = torch.arange(k - 1, device=steps.device).unsqueeze(0)  # (1, k-1)
        pending = gather_steps(steps, (done.unsqueeze(1) + offset).clamp(max=steps.shape[1] - 1))
        return pending * (offset < count.unsqueeze(1)).unsqueeze(2).to(steps.dtype), count
