"""Data-parallel training under the real launcher: torchrun, 2 processes, gloo on CPU, against 1 process.

Equal global batch (training/distributed.py): both runs take the same optimiser steps on the same
examples; only the order of floating-point reductions differs (gloo all-reduce vs one sum), so the
results agree to float32 rounding, not bit for bit. Per-example randomness (dropout, augmentation) draws
differ between a batch and its shards, so it is off here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from training.checkpoint import Checkpoint
from training.config import DataConfig
from training.data import load_data

TOLERANCE = 1e-4  # weights and losses; float32 reduction-order noise after a few epochs is ~1e-7


def _train(run_dir: Path, name: str, processes: int, dataset: str = "ItalyPowerDemand") -> Path:
    args = ["train", "--name", name, "--run-dir", str(run_dir), "--no-progress", "--max-epochs", "3",
            "--dataset", dataset,
            "--set", "model.hidden_size=8", "--set", "model.num_layers=1", "--set", "optim.batch_size=10",
            "--set", "optim.plots=false", "--set", "optim.tensorboard=false", "--set", "model.dropout=0",
            "--set", "optim.jitter=0", "--set", "optim.scaling=0", "--set", "optim.mixup=0",
            "--set", "optim.final_fit=false"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={processes}"]
    launcher = (torchrun if processes > 1 else [sys.executable]) + ["-m", "gru_cli"]
    done = subprocess.run(launcher + args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir / name


# JapaneseVowels: 7 to 29 steps, batches of similar length (distributed.global_batches) split across ranks
@pytest.mark.parametrize("dataset", ["ItalyPowerDemand", "JapaneseVowels"])
def test_two_processes_match_one_within_reduction_order_noise(dataset: str, tmp_path: Path) -> None:
    one, two = _train(tmp_path, "one", 1, dataset), _train(tmp_path, "two", 2, dataset)
    a, b = Checkpoint.load(one / "checkpoint.pt"), Checkpoint.load(two / "checkpoint.pt")
    worst = max(float((a.state_dict[k] - b.state_dict[k]).abs().max()) for k in a.state_dict)
    assert worst < TOLERANCE
    assert not any(torch.equal(a.state_dict[k], torch.zeros_like(a.state_dict[k]))
                   for k in ("layers.0.0.weight_hh_l0", "head.weight"))
    for line_a, line_b in zip((one / "metrics.jsonl").read_text().splitlines(),
                              (two / "metrics.jsonl").read_text().splitlines(), strict=True):
        ra, rb = json.loads(line_a), json.loads(line_b)
        assert abs(ra["train_loss"] - rb["train_loss"]) < TOLERANCE
        assert abs(ra["val_loss"] - rb["val_loss"]) < TOLERANCE
    ta, tb = (json.loads((d / "test_metrics.json").read_text()) for d in (one, two))
    tests = len(load_data(DataConfig(dataset=dataset)).test)  # at most one test series may flip
    assert abs(ta["loss"] - tb["loss"]) < TOLERANCE and abs(ta["accuracy"] - tb["accuracy"]) <= 1 / tests
    # only rank 0 writes: one metrics line per epoch, no stray files from rank 1
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 3


def test_a_rank_shard_is_every_world_th_index_with_a_weight_that_keeps_the_global_mean() -> None:
    from training.distributed import Context

    batch = torch.arange(7)
    shards = [Context(rank, 3).shard(batch) for rank in range(3)]
    assert [s[0].tolist() for s in shards] == [[0, 3, 6], [1, 4], [2, 5]]
    losses = torch.tensor([0.3, 1.2, 0.7, 2.0, 0.1, 0.9, 1.5], dtype=torch.float64)  # per example
    averaged = sum(weight * losses[idx].mean() for idx, weight in shards) / 3  # what DDP computes
    assert abs(float(averaged - losses.mean())) < 1e-12
    assert [round(w, 6) for _, w in shards] == [round(3 * 3 / 7, 6), round(2 * 3 / 7, 6), round(2 * 3 / 7, 6)]
    empty = Context(2, 3).shard(torch.arange(2))
    assert empty[1] == 0.0  # joins the all-reduce without changing the gradient


RANK_EXIT = """
import os, sys, torch
from training import distributed
def train(ctx):  # as training/loop.py: the DDP wrapper lives while training, not until teardown
    net = distributed.wrap(torch.nn.Linear(3, 1), ctx)
    net(torch.ones(2, 3)).sum().backward()
train(distributed.setup("cpu"))
distributed.teardown()
tasks = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
sys.exit(f"gloo threads outlive teardown: {tasks}" if any("gloo" in t for t in tasks) else 0)
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="thread names are read from /proc")
def test_teardown_stops_gloo_threads_so_a_rank_cannot_abort_at_interpreter_exit(tmp_path: Path) -> None:
    # threads left running into interpreter finalisation sometimes SIGABRT a rank after training succeeded
    script = tmp_path / "rank.py"
    script.write_text(RANK_EXIT)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    done = subprocess.run([*torchrun, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
