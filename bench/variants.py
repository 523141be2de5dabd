"""The two GRU variants (model.reset: after = torch.nn.GRU, before = the seed's) side by side: test
accuracy with `gru train` defaults on one dataset over several seeds, and the training-step speed of each,
timed alternately in one process so that both see the same machine load.

    python -m bench.variants --seeds 3 [--dataset ItalyPowerDemand] [--speed-only]

Writes the raw numbers to bench/results/variants.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

VARIANTS = (("after", "reset after (nn.GRU, lbr=1)"), ("before", "reset before (seed, lbr=0)"))


def step_speed(batch: int, length: int, hidden: int, layers: int, repeats: int = 15) -> dict:
    """Median milliseconds per training step (forward, backward, AdamW) of each variant, interleaved."""
    import torch

    from training.config import ResolvedModelConfig
    from training.model import GRUModel

    torch.manual_seed(0)
    x, y = torch.randn(batch, length, 1), torch.randint(0, 2, (batch,))
    models = {reset: GRUModel(ResolvedModelConfig(hidden_size=hidden, num_layers=layers, reset=reset,
                                                  frontend="none", patch=1))  # the GRU itself: no front end
              for reset, _ in VARIANTS}
    optimizers = {k: torch.optim.AdamW(m.parameters()) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeats + 2):  # the first two are warm-up (TorchScript compiles on first calls)
        for reset, model in models.items():
            started = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(x)[0], y)
            optimizers[reset].zero_grad()
            loss.backward()
            optimizers[reset].step()
            times[reset].append(time.perf_counter() - started)
    shape = f"batch {batch}, length {length}, hidden {hidden}, {layers} layer(s)"
    return {"shape": shape, **{k: 1000 * statistics.median(v[2:]) for k, v in times.items()}}


def accuracy_run(dataset: str, reset: str, seed: int, run_dir: Path) -> dict:
    from training.config import load_config
    from training.loop import fit

    overrides = [f"data.dataset={dataset}", f"model.reset={reset}", f"optim.seed={seed}",
                 f"run_dir={run_dir}", f"name={reset}_{seed}", "progress=false", "optim.plots=false",
                 "optim.tensorboard=false"]
    started = time.perf_counter()
    result = fit(load_config(None, overrides))
    seconds = time.perf_counter() - started
    epochs = len((result.run_dir / "metrics.jsonl").read_text().splitlines())
    return {"reset": reset, "seed": seed, "accuracy": result.test_metrics["accuracy"],
            "seconds_per_epoch": seconds / epochs, "epochs": epochs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--dataset", default="ItalyPowerDemand")
    parser.add_argument("--speed-only", action="store_true", help="only the training-step speed")
    parser.add_argument("--output", type=Path, default=Path("bench/results/variants.json"))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    speeds = [step_speed(8, 24, 32, 1), step_speed(8, 150, 64, 1), step_speed(32, 24, 64, 2)]
    print("| shape | reset after (nn.GRU) ms/step | reset before (seed) ms/step | ratio |\n|---|---|---|---|")
    for row in speeds:
        print(f"| {row['shape']} | {row['after']:.2f} | {row['before']:.2f} | "
              f"{row['before'] / row['after']:.1f}× |")
    runs: list[dict] = []
    if not args.speed_only:
        with tempfile.TemporaryDirectory() as tmp:
            runs = [accuracy_run(args.dataset, reset, seed, Path(tmp))
                    for seed in range(args.seeds) for reset, _ in VARIANTS]
        print(f"\n{args.dataset}, `gru train` defaults, seeds 0..{args.seeds - 1}:\n")
        print("| variant | accuracy mean ± sd | seconds per epoch | epochs run |\n|---|---|---|---|")
        for reset, name in VARIANTS:
            mine = [r for r in runs if r["reset"] == reset]
            values = [r["accuracy"] for r in mine]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"| {name} | {statistics.mean(values):.4f} ± {spread:.4f} | "
                  f"{statistics.mean(r['seconds_per_epoch'] for r in mine):.3f} | "
                  f"{statistics.mean(r['epochs'] for r in mine):.0f} |")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"step_speed_ms": speeds, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
