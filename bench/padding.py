"""Padded steps per training epoch: `python -m bench.padding --set data.dataset=file --set data.path=X.csv`.

The data and batch size as `gru train` resolves them (the same `--set` overrides). Each batch runs as many
steps as its longest series, so an epoch costs the sum over batches of series × longest; printed for a
plain random permutation cut into batches (the plan before length-aware batches) and for the plan
training uses (training/distributed.py `global_batches`), each the mean over `--epochs` seeded epochs,
beside the real steps (the sum of the lengths).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from training import defaults
from training.config import load_config
from training.data import load_data
from training.distributed import global_batches, padded_size


def padded_steps(lengths: np.ndarray, batches: list[torch.Tensor]) -> int:
    return sum(padded_size(lengths, batch) for batch in batches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    config = load_config(None, args.set)
    data = load_data(config.data)
    resolved, _ = defaults.resolve(config, data)
    lengths = defaults.training_split(data, resolved.optim.final_fit).lengths
    size, generator = resolved.optim.batch_size, torch.Generator().manual_seed(0)
    plain = [padded_steps(lengths, list(torch.randperm(len(lengths), generator=generator).split(size)))
             for _ in range(args.epochs)]
    planned = [padded_steps(lengths, global_batches(lengths, size, generator)) for _ in range(args.epochs)]
    real, before, after = int(lengths.sum()), float(np.mean(plain)), float(np.mean(planned))
    print(json.dumps({"series": len(lengths), "batch_size": size, "real_steps": real,
                      "padded_plain": round(before), "padded_planned": round(after),
                      "plain_over_real": round(before / real, 3),
                      "planned_over_real": round(after / real, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
