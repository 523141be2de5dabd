"""Model quality on published benchmarks: train and evaluate on the real data for several seeds and
print a table beside the published numbers; also compare the two GRU variants (model.reset).

    python -m bench.quality --seeds 3 [--only ItalyPowerDemand,M1Yearly] [--budget-minutes 30]

Writes the raw numbers to bench/results/quality.json. Full runs take minutes on 2 cores: this is a
script, not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Benchmark:
    dataset: str
    metric: str
    higher_is_better: bool
    target: float
    published: str
    overrides: list[str] = field(default_factory=list)
    note: str = ""


# Settings chosen on the validation split (never on test); see README "Model quality".
BENCHMARKS = [
    Benchmark("ItalyPowerDemand", "accuracy", True, 0.97, "ROCKET 0.970, InceptionTime 0.965, 1-NN DTW 0.950",
              ["model.hidden_size=32", "model.num_layers=1", "model.dropout=0", "optim.batch_size=8",
               "optim.weight_decay=0.05", "optim.patience=60", "optim.max_epochs=300"]),
    Benchmark("GunPoint", "accuracy", True, 0.99, "FCN, InceptionTime, ROCKET 1.000; 1-NN DTW 0.907",
              ["model.hidden_size=64", "model.num_layers=2", "model.dropout=0", "model.bidirectional=true",
               "optim.batch_size=8", "optim.learning_rate=0.003", "optim.patience=60",
               "optim.max_epochs=300"]),
    Benchmark("JapaneseVowels", "accuracy", True, 0.98, "FCN 0.993, ResNet 0.992, echo-state RNN 0.965",
              ["model.hidden_size=64", "model.num_layers=2", "model.dropout=0.1", "model.bidirectional=true",
               "optim.learning_rate=0.003", "optim.batch_size=8", "optim.patience=40",
               "optim.max_epochs=100"]),  # configs/japanese_vowels.yaml; trained on the true lengths
    Benchmark("M1Yearly", "mase", False, 3.9, "naive 4.894 (Monash); best published ~4.19",
              ["data.window=8", "data.horizon=6", "data.seasonal_period=1", "model.hidden_size=32",
               "model.num_layers=1", "model.dropout=0", "optim.weight_decay=0", "optim.batch_size=64",
               "optim.max_epochs=300", "optim.patience=60"]),
]
# The two GRU variants, side by side on one dataset (same settings otherwise).
VARIANT_DATASET = "ItalyPowerDemand"


def run_one(bench: Benchmark, seed: int, extra: list[str], run_dir: Path) -> dict:
    from training.config import load_config
    from training.loop import fit

    overrides = [f"data.dataset={bench.dataset}", f"optim.seed={seed}", f"run_dir={run_dir}",
                 f"name={bench.dataset}_{seed}", "progress=false", "optim.plots=false",
                 "optim.tensorboard=false", *bench.overrides, *extra]
    started = time.perf_counter()
    result = fit(load_config(None, overrides))
    seconds = time.perf_counter() - started
    epochs = len((result.run_dir / "metrics.jsonl").read_text().splitlines())
    row = {"dataset": bench.dataset, "seed": seed, "extra": extra, "value": result.test_metrics[bench.metric],
           "seconds": seconds, "epochs": epochs, "seconds_per_epoch": seconds / epochs}
    naive = result.test_metrics.get("seasonal_naive")
    if naive:
        row["naive"] = naive[bench.metric]
    return row


def step_speed(batch: int, length: int, hidden: int, layers: int, repeats: int = 15) -> dict:
    """Median milliseconds per training step (forward, backward, AdamW) of each variant, interleaved so
    that both see the same machine load."""
    import torch

    from training.config import ModelConfig
    from training.model import GRUModel

    torch.manual_seed(0)
    x, y = torch.randn(batch, length, 1), torch.randint(0, 2, (batch,))
    models = {reset: GRUModel(ModelConfig(hidden_size=hidden, num_layers=layers, reset=reset))
              for reset in ("after", "before")}
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


def summarise(rows: list[dict]) -> tuple[float, float, float, float]:
    values = [r["value"] for r in rows]
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.mean(values), spread, min(values), max(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated datasets (default: all)")
    parser.add_argument("--no-variants", action="store_true", help="skip the reset before/after comparison")
    parser.add_argument("--budget-minutes", type=float, default=60.0,
                        help="start no new run after this long (runs in progress finish)")
    parser.add_argument("--output", type=Path, default=Path("bench/results/quality.json"))
    parser.add_argument("--speed-only", action="store_true",
                        help="only the training-step speed of the two GRU variants")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    speeds = [step_speed(8, 24, 32, 1), step_speed(8, 150, 64, 1), step_speed(32, 24, 64, 2)]
    print("\n| shape | reset after (nn.GRU) ms/step | reset before (seed) ms/step | ratio |")
    print("|---|---|---|---|")
    for row in speeds:
        ratio = row["before"] / row["after"]
        print(f"| {row['shape']} | {row['after']:.2f} | {row['before']:.2f} | {ratio:.1f}× |")
    if args.speed_only:
        return 0
    deadline = time.monotonic() + 60 * args.budget_minutes
    chosen = set(args.only.split(",")) if args.only else None
    jobs: list[tuple[Benchmark, list[str], str]] = []
    for bench in BENCHMARKS:
        if chosen is None or bench.dataset in chosen:
            jobs.append((bench, [], "main"))
    variant = next(b for b in BENCHMARKS if b.dataset == VARIANT_DATASET)
    if not args.no_variants and (chosen is None or VARIANT_DATASET in chosen):
        jobs.append((variant, ["model.reset=before"], "variant"))
    rows: list[dict] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for bench, extra, kind in jobs:
            if bench.note:
                continue
            for seed in range(args.seeds):
                if time.monotonic() > deadline:
                    skipped.append(f"{bench.dataset} {extra} seed {seed}")
                    continue
                row = run_one(bench, seed, extra, Path(tmp))
                row["kind"] = kind
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"seeds": args.seeds, "rows": rows, "skipped": skipped,
                                       "step_speed_ms": speeds}, indent=2))
    print_tables(rows, args.seeds, skipped)
    return 0


def print_tables(rows: list[dict], seeds: int, skipped: list[str]) -> None:
    print("\n| dataset | metric | target | ours: mean ± std over seeds (min–max) | seeds | published |")
    print("|---|---|---|---|---|---|")
    for bench in BENCHMARKS:
        mine = [r for r in rows if r["dataset"] == bench.dataset and r["kind"] == "main"]
        goal = f"{'≥' if bench.higher_is_better else '≤'} {bench.target}"
        if not mine:
            print(f"| {bench.dataset} | {bench.metric} | {goal} | {bench.note or 'not run'} | 0 | "
                  f"{bench.published} |")
            continue
        mean, spread, low, high = summarise(mine)
        extra = ""
        if "naive" in mine[0]:
            extra = f"; naive (same windows) {statistics.mean(r['naive'] for r in mine):.3f}"
        ours = f"{mean:.4f} ± {spread:.4f} ({low:.4f}–{high:.4f}){extra}"
        print(f"| {bench.dataset} | {bench.metric} | {goal} | {ours} | {len(mine)} | {bench.published} |")
    variants = [r for r in rows if r["dataset"] == VARIANT_DATASET]
    if any(r["kind"] == "variant" for r in variants):
        print(f"\nGRU variants on {VARIANT_DATASET} (same settings, seeds 0..{seeds - 1}):\n")
        print("| variant | accuracy mean ± std | seconds per epoch | epochs run |")
        print("|---|---|---|---|")
        names = (("main", "reset after (nn.GRU, lbr=1)"), ("variant", "reset before (seed, lbr=0)"))
        for kind, name in names:
            mine = [r for r in variants if r["kind"] == kind]
            if mine:
                mean, spread, _, _ = summarise(mine)
                per_epoch = statistics.mean(r["seconds_per_epoch"] for r in mine)
                epochs = statistics.mean(r["epochs"] for r in mine)
                print(f"| {name} | {mean:.4f} ± {spread:.4f} | {per_epoch:.3f} | {epochs:.0f} |")
    if skipped:
        print(f"\nskipped (over the time budget): {skipped}")


if __name__ == "__main__":
    raise SystemExit(main())
