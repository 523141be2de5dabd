"""The price of dropping TorchScript from the loop GRU (training/cells.py): training steps (forward,
backward, Adam) of the plain-Python loop against the TorchScript loop it replaced, which is read from git
history (commit 8393a6a, the last with it), timed alternately in one process, one thread.

    python -m bench.loop_vs_torchscript [--repeats 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from training.cells import SeedGRU

TORCHSCRIPT_COMMIT = "8393a6a"
SHAPES = [(16, 24, 64, 2), (64, 24, 128, 2), (16, 150, 64, 2)]  # batch, length, hidden, layers


def torchscript_gru(folder: Path) -> type[torch.nn.Module]:
    source = subprocess.run(["git", "show", f"{TORCHSCRIPT_COMMIT}:training/cells.py"], check=True,
                            capture_output=True, text=True).stdout
    path = folder / "cells_torchscript.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("cells_torchscript", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["cells_torchscript"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.SeedGRU


def ms_per_step(kind: type[torch.nn.Module], shape: tuple[int, int, int, int], repeats: int) -> float:
    batch, length, hidden, layers = shape
    torch.manual_seed(0)
    gru = kind(1, hidden, layers)
    x = torch.randn(batch, length, 1)
    optimizer = torch.optim.Adam(gru.parameters())
    for _ in range(3):  # warm-up (TorchScript optimises after its first runs)
        y, h = gru(x)
        (y.mean() + h.sum()).backward()
    started = time.perf_counter()
    for _ in range(repeats):
        optimizer.zero_grad()
        y, h = gru(x)
        (y.mean() + h.sum()).backward()
        optimizer.step()
    return 1000 * (time.perf_counter() - started) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        scripted = torchscript_gru(Path(tmp))
        print(f"load average {Path('/proc/loadavg').read_text().split()[0]}; best of 3 alternating rounds")
        print("| batch, length, hidden, layers | TorchScript ms/step | plain loop ms/step "
              "| loop / TorchScript |")
        print("|---|---|---|---|")
        for shape in SHAPES:
            rounds = [(ms_per_step(scripted, shape, args.repeats),
                       ms_per_step(SeedGRU, shape, args.repeats)) for _ in range(3)]
            old, new = min(r[0] for r in rounds), min(r[1] for r in rounds)
            print(f"| {', '.join(map(str, shape))} | {old:.1f} | {new:.1f} | {new / old:.2f}× |")


if __name__ == "__main__":
    main()
