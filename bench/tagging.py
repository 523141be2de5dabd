"""Per-step tagging quality from recordings, with `gru train` defaults beside classical baselines on the
same split in the same run.

Public classification sets are played one series after another as recordings labelled at every step,
as a sensor stream whose activity (speaker, gesture) changes: the official TRAIN series, shuffled (seed
0), make the training recording and the TEST series the test recording, each one CSV without an id or a
step column, as a single sensor's export comes. The GRU trains through `data.dataset: file` with
`data.test_path` (one recording: split in time, training/data/recordings.py). Baselines, fit on the whole
training recording: the majority label, and logistic regression on each step's last k steps (all
channels, standardised; k = 1, 8, 32, 64), reported at the k that scores best on the test: generous to
the baseline.

    python -m bench.tagging                          # BasicMotions, JapaneseVowels, GunPoint; 3 seeds
    python -m bench.tagging --only BasicMotions --seeds 0 --set data.window=64 --output /tmp/t.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SETS = ["BasicMotions", "JapaneseVowels", "GunPoint"]
LAGS = [1, 8, 32, 64]


def recording(name: str, split: str, path: Path) -> Path:
    """The split's series in a shuffled order, one after another, each step labelled with its series'
    label; channels as columns."""
    from aeon.datasets import load_classification

    X, y = load_classification(name, split=split)
    order = np.random.default_rng(0).permutation(len(X))
    steps = np.concatenate([np.asarray(X[i]).T for i in order])  # ragged sets: a list of (C, T_i)
    labels = np.concatenate([[y[i]] * np.asarray(X[i]).shape[1] for i in order])
    frame = pd.DataFrame(steps, columns=[f"channel_{c}" for c in range(steps.shape[1])])
    frame["label"] = labels
    frame.to_csv(path, index=False)
    return path


def lagged(frame: pd.DataFrame, k: int) -> np.ndarray:
    """Each step with the k - 1 steps before it (zeros before the start): what a causal model may read."""
    X = frame.drop(columns="label").to_numpy()
    shifted = [np.vstack([np.zeros((i, X.shape[1])), X[: len(X) - i]]) for i in range(k)]
    return np.concatenate(shifted, axis=1)


def baselines(train: Path, test: Path) -> list[dict]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    a, b = pd.read_csv(train), pd.read_csv(test)
    majority = float((b["label"] == a["label"].mode()[0]).mean())
    rows = [{"model": "majority", "value": majority, "seconds": 0.0}]
    for k in LAGS:
        started = time.perf_counter()
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        predicted = model.fit(lagged(a, k), a["label"]).predict(lagged(b, k))
        rows.append({"model": f"logistic, last {k}", "value": float((predicted == b["label"]).mean()),
                     "seconds": time.perf_counter() - started})
    return rows


def gru_run(train: Path, test: Path, seed: int, run_dir: Path, extra: list[str]) -> dict:
    from training.config import load_config
    from training.loop import fit

    started = time.perf_counter()
    result = fit(load_config(None, [
        "data.dataset=file", f"data.path={train}", f"data.test_path={test}", "data.task=tagging",
        f"optim.seed={seed}", f"run_dir={run_dir}", f"name={train.stem}_{seed}", "progress=false",
        "optim.plots=false", "optim.tensorboard=false", *extra]))
    return {"model": "GRU", "seed": seed, "value": result.test_metrics["accuracy"],
            "macro_f1": result.test_metrics["macro_f1"], "seconds": time.perf_counter() - started,
            "diagnosis": result.diagnosis}


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| recording (official split) | GRU defaults, accuracy mean ± sd (seeds) | GRU s | majority | "
             "best logistic on the last k steps | target |", "|---|---|---|---|---|---|"]
    for name, rows in results.items():
        gru = [r["value"] for r in rows if r["model"] == "GRU"]
        majority = next(r["value"] for r in rows if r["model"] == "majority")
        best = max((r for r in rows if r["model"].startswith("logistic")), key=lambda r: r["value"])
        sd = statistics.stdev(gru) if len(gru) > 1 else 0.0
        met = "met" if statistics.mean(gru) >= best["value"] else "**missed**"
        seconds = max(r["seconds"] for r in rows if r["model"] == "GRU")
        lines.append(f"| {name} | {statistics.mean(gru):.4f} ± {sd:.4f} ({len(gru)}) | {seconds:.0f} | "
                     f"{majority:.4f} | {best['value']:.4f} ({best['model']}) | ≥ best logistic: {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated set names (default: all)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--output", default="bench/results/tagging.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for every GRU run (an experiment, not the defaults)")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else SETS
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            train = recording(name, "train", Path(folder) / f"{name}_train.csv")
            test = recording(name, "test", Path(folder) / f"{name}_test.csv")
            rows = baselines(train, test)
            seeds = [int(seed) for seed in args.seeds.split(",")]
            rows += [gru_run(train, test, seed, Path(folder), args.set) for seed in seeds]
            results[name] = rows
            print(json.dumps({name: rows}), flush=True)
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
