"""What gradient clipping does for a ReLU-candidate GRU: nothing bounds a ReLU candidate (tanh keeps every
h in (-1, 1)), so h can grow from step to step and from update to update. Trains the same model with and
without `optim.grad_clip` (and a tanh baseline) and reports, per epoch, the training loss and the largest
|h| any GRU layer produced on a training batch.

    python -m bench.relu_clipping [--config configs/seed_example.yaml] [--epochs 60] [--set KEY=VALUE ...]

Writes the curves to bench/results/relu_clipping.json (and a PNG beside it when matplotlib is there).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.cells import SeedGRU
from training.config import load_config
from training.loop import fit

RUNS = {"relu, grad_clip 1.0": ["optim.grad_clip=1.0"],
        "relu, no clipping": ["optim.grad_clip=1e30"],
        "tanh, grad_clip 1.0": ["optim.grad_clip=1.0", "model.activation=tanh"]}


class LargestH:
    """A global forward hook: the largest |h| any GRU module outputs while training; and, wrapping
    clip_grad_norm_ (which returns the norm before clipping), the largest gradient norm."""

    def __init__(self) -> None:
        self.epoch_max = self.grad_max = 0.0
        self.clip = torch.nn.utils.clip_grad_norm_

    def clip_and_record(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        norm = self.clip(*args, **kwargs)
        self.grad_max = max(self.grad_max, float(norm))
        return norm

    def __call__(self, module: nn.Module, _inputs: Any, output: Any) -> None:
        if module.training and isinstance(module, SeedGRU | nn.GRU):
            y, h_n = output  # y is a PackedSequence when nn.GRU ran on a packed (ragged) batch
            values = y if isinstance(y, torch.Tensor) else y.data
            self.epoch_max = max(self.epoch_max, float(values.detach().abs().max()),
                                 float(h_n.detach().abs().max()))


def train(config_path: str | None, overrides: list[str], run_dir: Path) -> list[dict[str, Any]]:
    hook = LargestH()
    curve: list[dict[str, Any]] = []

    def on_epoch(epoch: int, record: dict[str, Any]) -> None:
        curve.append({"epoch": epoch, "train_loss": record["train_loss"], "val_loss": record["val_loss"],
                      "max_abs_h": hook.epoch_max, "max_grad_norm": hook.grad_max})
        hook.epoch_max = hook.grad_max = 0.0

    handle = nn.modules.module.register_module_forward_hook(hook)
    torch.nn.utils.clip_grad_norm_ = hook.clip_and_record  # training/loop.py looks it up at each call
    try:
        fit(load_config(config_path, [f"run_dir={run_dir}", "progress=false", "optim.plots=false",
                                      "optim.tensorboard=false", *overrides]), on_epoch=on_epoch)
    except FloatingPointError as exc:  # the loss became NaN: the curve so far tells the story
        curve.append({"epoch": len(curve) + 1, "train_loss": math.nan, "val_loss": math.nan,
                      "max_abs_h": hook.epoch_max, "max_grad_norm": hook.grad_max, "error": str(exc)})
    finally:
        handle.remove()
        torch.nn.utils.clip_grad_norm_ = hook.clip
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/seed_example.yaml")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output", type=Path, default=Path("bench/results/relu_clipping.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    common = [f"optim.max_epochs={args.epochs}", f"optim.patience={args.epochs}", "optim.time_budget=null",
              *args.overrides]
    curves: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in RUNS.items():
            curves[label] = train(args.config, [f"name=run{len(curves)}", *common, *extra], Path(tmp))
    print(f"{args.config} {' '.join(common)}")
    print("| run | epochs | final train loss | best val loss | max abs h: epoch 1 / largest / last "
          "| largest gradient norm (before clipping) |")
    print("|---|---|---|---|---|---|")
    for label, curve in curves.items():
        val = min((c["val_loss"] for c in curve if not math.isnan(c["val_loss"])), default=math.nan)
        print(f"| {label} | {len(curve)} | {curve[-1]['train_loss']:.4f} | {val:.4f} | "
              f"{curve[0]['max_abs_h']:.2f} / {max(c['max_abs_h'] for c in curve):.2f} / "
              f"{curve[-1]['max_abs_h']:.2f} | {max(c['max_grad_norm'] for c in curve):.3g} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    raw = {"config": args.config, "overrides": common, "curves": curves}
    args.output.write_text(json.dumps(raw, indent=2))
    _plot(curves, args.output.with_suffix(".png"))


def _plot(curves: dict[str, list[dict[str, Any]]], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    figure, (loss, size, grad) = plt.subplots(1, 3, figsize=(14, 3.5))
    for label, curve in curves.items():
        epochs = [c["epoch"] for c in curve]
        loss.plot(epochs, [c["train_loss"] for c in curve], label=label)
        size.plot(epochs, [c["max_abs_h"] for c in curve], label=label)
        grad.plot(epochs, [c["max_grad_norm"] for c in curve], label=label)
    loss.set(xlabel="epoch", ylabel="training loss")
    size.set(xlabel="epoch", ylabel="max |h| on a training batch", yscale="log")
    grad.set(xlabel="epoch", ylabel="max gradient norm (before clipping)", yscale="log")
    grad.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)


if __name__ == "__main__":
    main()
