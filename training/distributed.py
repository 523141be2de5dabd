"""Data-parallel training with torch.distributed, launched by torchrun; device and mixed precision.

One process per device. torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR; without them this is
a world of one and nothing is initialised. Backend: NCCL on CUDA, gloo on CPU.

Equal global batch: every optimiser step consumes the same `optim.batch_size` examples whatever the
number of processes; each rank takes every world-th index of the global batch (`shard`), and its loss is
weighted by its share so that DDP's gradient average equals the 1-process gradient of the global batch.
Runs then differ only by the order of floating-point reductions (all-reduce vs one sum).
"""

from __future__ import annotations

import importlib
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from training.normalise import Normaliser, feature_spread, target_spread

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, batch: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This rank's indices of a global batch and the loss weight that keeps the global mean."""
        local = batch[self.rank :: self.world]
        if len(local) == 0:  # a last batch smaller than the world: join the all-reduce with weight 0
            return batch[:1], 0.0
        return local, len(local) * self.world / len(batch)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def choose_device(requested: str, local_rank: int = 0) -> torch.device:
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"optim.device must be auto, cpu or cuda, got {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("optim.device is 'cuda' but torch sees no CUDA device; use optim.device=auto or cpu")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup(requested_device: str) -> Context:
    """Join the process group when launched by torchrun; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(requested_device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS
    if world > 1 and not dist.is_initialized():
        # DDP imports torch._dynamo; imported after the group exists, it keeps references to it, so that
        # destroy_process_group leaves gloo's worker threads running into interpreter exit, where they
        # abort the process ("terminate called without an active exception", SIGABRT) now and then.
        importlib.import_module("torch._dynamo")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return Context(rank, world, device)


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: Context) -> nn.Module:
    if not ctx.distributed:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    if precision not in PRECISIONS:
        raise ValueError(f"optim.precision must be one of {list(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """fp16 needs loss scaling against gradient underflow; bf16 and fp32 do not (a disabled scaler)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def all_reduce_sum(value: float, ctx: Context) -> float:
    if not ctx.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64,
                          device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(tensor)
    return float(tensor.item())


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def agree(value: Any, ctx: Context) -> Any:
    """Rank 0's value on every rank (e.g. settings chosen from each rank's own shard of the data)."""
    if not ctx.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def agree_on_labels(local: set[str]) -> list[str]:
    """The sorted union of every rank's label names (each rank saw only its series)."""
    from training.data.splits import encode_labels

    gathered: list[set[str]] = [local]
    if dist.is_available() and dist.is_initialized():
        gathered = [set() for _ in range(dist.get_world_size())]
        dist.all_gather_object(gathered, local)
    return encode_labels(np.array(sorted(set().union(*gathered))))[0]


def sync_normaliser(normaliser: Normaliser, X: np.ndarray, y: np.ndarray | None, ctx: Context) -> None:
    """Feature (and target) mean and std over all ranks' training shards, as if fitted on the union."""
    def moments(values: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        flat = torch.as_tensor(values, dtype=torch.float64).reshape(-1, values.shape[-1])
        stats = torch.cat([torch.tensor([float(len(flat))], dtype=torch.float64), flat.sum(0),
                           (flat**2).sum(0)])
        dist.all_reduce(stats)
        count, total, squares = stats[0], stats[1 : 1 + flat.shape[1]], stats[1 + flat.shape[1] :]
        mean = total / count
        std = ((squares - count * mean**2) / (count - 1)).clamp_min(0).sqrt()
        return mean.float(), std.float()

    if not ctx.distributed:
        return
    with torch.no_grad():
        mean, std = moments(X)
        normaliser.feature_mean.copy_(mean)
        normaliser.feature_std.copy_(feature_spread(std, mean))
        if y is not None:
            mean, std = moments(y)
            normaliser.target_mean.copy_(mean)
            normaliser.target_std.copy_(target_spread(std, mean))


# Batches of similar length: only where the longest training series is at least SPREAD times the
# shortest (equal-length data keeps the plain permutation, bit for bit); sorted within chunks of CHUNK
# batches, so a batch still mixes series from all over the set.
SPREAD, CHUNK = 2.0, 50


def global_batches(lengths: np.ndarray, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's global batches of indices: a seeded permutation cut into batches. When lengths differ
    (SPREAD), each chunk of CHUNK batches of the permutation is sorted by length before it is cut, and the
    batches are then shuffled: a batch is padded to its longest series, so random batches of ragged
    series run mostly padding (PLAID: 1.9× the real steps, 1.05× sorted)."""
    n = len(lengths)
    order = torch.randperm(n, generator=generator)
    if n == 0 or lengths.max() < SPREAD * max(lengths.min(), 1):
        return [order[s : s + batch_size] for s in range(0, n, batch_size)]
    size = torch.as_tensor(lengths)[order]
    chunk = CHUNK * batch_size
    for s in range(0, n, chunk):  # a stable sort: series of one length stay in random order
        order[s : s + chunk] = order[s : s + chunk][torch.sort(size[s : s + chunk], stable=True).indices]
    batches = [order[s : s + batch_size] for s in range(0, n, batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator)]


def padded_size(lengths: np.ndarray, batch: torch.Tensor) -> int:
    """The steps a batch runs: its series × its longest (what a step's time grows with)."""
    return len(batch) * int(lengths[batch.numpy()].max())


def batch_plan(lengths: np.ndarray, batch_size: int, generator: torch.Generator, ctx: Context,
               sharded: bool) -> list[tuple[torch.Tensor, float]]:
    """This rank's (indices, loss weight) per optimiser step for one epoch, for training series of
    `lengths`.

    In memory (every rank holds the data): the global batches (`global_batches`), each split across ranks.
    Sharded (each rank holds its own series, all of one length): a permutation of the local shard in
    batches of batch_size / world; every rank takes as many full steps as the smallest shard allows (DDP
    needs the same number of all-reduces on every rank), so a few examples of the larger shards sit out an
    epoch.
    """
    if not sharded:
        return [ctx.shard(batch) for batch in global_batches(lengths, batch_size, generator)]
    n = len(lengths)
    local_batch = max(1, batch_size // ctx.world)
    order = torch.randperm(n, generator=generator)
    steps = torch.tensor([max(1, n // local_batch)])
    dist.all_reduce(steps, op=dist.ReduceOp.MIN)
    return [(order[s * local_batch : (s + 1) * local_batch], 1.0) for s in range(int(steps))]


def gather(values: np.ndarray, ctx: Context) -> np.ndarray:
    """Every rank's rows, concatenated in rank order (validation of sharded data)."""
    if not ctx.distributed:
        return values
    parts: list[np.ndarray] = [values] * ctx.world
    dist.all_gather_object(parts, values)
    return np.concatenate(parts)
