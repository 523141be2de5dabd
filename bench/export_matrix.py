"""Export parity on trained models: every cell of uni/bi x 1-3 layers x both reset variants x 100 and 500
epochs on Airline and ItalyPowerDemand, default model sizes, must export.

    nice -n 5 python -m bench.export_matrix [--epochs 100 500] [--out bench/results/export_matrix]
        [--sweep 1,4,16,64,256,1024]

Each cell is trained with `gru train` (a fresh process; `optim.patience` = the epoch count, so every
epoch runs) and exported like `gru export` does, with the verification of export/verify.py, twice: the
best epoch's weights (checkpoint.pt, what `gru export` takes) and the weights after the last epoch (from
last.pt, as final.pt: the model trained longest). Per cell and weights it prints the case nearest its
tolerance (output, batch, length, ragged), the measured difference, the tolerance there, their ratio,
and `c needed`: the PARITY_C that this export alone would need (the difference / (eps32 x sqrt(length) x
scale), worst over every output and case); the largest `c needed` is what PARITY_C is fitted against.
Trained cells are reused when the run folder holds a finished run (--retrain to start over), so an
interrupted matrix resumes. Raw rows: <out>/results.jsonl.

`--sweep` then measures how the difference grows with length: every export against PyTorch at those
lengths, `--draws` random batches each (plus their ragged twins), and prints per length the `c needed`
over all exports (median and max): flat means the difference grows like sqrt(length), falling means
slower.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

from export.bundle import export_checkpoint
from export.verify import EPS32, PARITY_C, CaseDiff, ParityReport, VerificationError, check_parity
from export.wrapper import InferenceModule
from training.checkpoint import Checkpoint, load_payload

WEIGHTS = ("best", "final")


def cell_name(dataset: str, direction: str, layers: int, reset: str, epochs: int) -> str:
    return f"{dataset}-{direction}-L{layers}-{reset}-e{epochs}"


def train(run_dir: Path, name: str, dataset: str, direction: str, layers: int, reset: str, epochs: int,
          extra: list[str], retrain: bool) -> float:
    """Seconds spent training (0 when a finished run was reused)."""
    if not retrain and (run_dir / name / "test_metrics.json").exists():
        return 0.0
    sets = [f"model.num_layers={layers}", f"model.bidirectional={str(direction == 'bi').lower()}",
            f"model.reset={reset}", f"optim.patience={epochs}", "optim.plots=false",
            "optim.tensorboard=false", *extra]
    command = [sys.executable, "-m", "gru_cli", "train", "--dataset", dataset, "--name", name,
               "--run-dir", str(run_dir), "--max-epochs", str(epochs), "--no-progress"]
    started = time.monotonic()
    subprocess.run(command + [a for s in sets for a in ("--set", s)], check=True, capture_output=True)
    return time.monotonic() - started


def c_of(row: CaseDiff) -> float:
    """The PARITY_C this one measurement needs."""
    return row.diff / (EPS32 * math.sqrt(row.length) * row.scale)


def c_needed(reports: list[ParityReport]) -> float:
    return max(c_of(r) for report in reports for r in report.rows)


def sweep(out: Path, exported: list[tuple[str, Path]], lengths: list[int], draws: int) -> None:
    """`c needed` by length over every exported (bundle, checkpoint): batches of 8.. 8+draws-1 (each its
    own seed)."""
    by_length: dict[int, list[float]] = {n: [] for n in lengths}
    diffs: dict[int, float] = dict.fromkeys(lengths, 0.0)
    for name, checkpoint in exported:
        model = Checkpoint.load(checkpoint).model()
        graph = (out / "models" / name / "1" / "model.onnx").read_bytes()
        cases = [(8 + d, n) for n in lengths for d in range(draws)]
        for row in check_parity(graph, InferenceModule(model), model, cases).rows:
            by_length[row.length].append(c_of(row))
            diffs[row.length] = max(diffs[row.length], row.diff)
    print(f"\nHow the difference grows with length ({len(exported)} exports x {draws} batches, full and "
          "ragged, every output):\n| length | c needed: median | c needed: max | largest difference | "
          f"tolerance (scale 1) |\n|---|---|---|---|---|")
    for n in lengths:
        print(f"| {n} | {statistics.median(by_length[n]):.1f} | {max(by_length[n]):.1f} | {diffs[n]:.2e} | "
              f"{PARITY_C * EPS32 * math.sqrt(n):.2e} |", flush=True)


def final_checkpoint(run: Path, epochs_run: int) -> Path:
    """The weights after the last epoch (last.pt) with the run's facts from checkpoint.pt."""
    trained = Checkpoint.load(run / "checkpoint.pt")
    trained.state_dict, trained.epoch = load_payload(run / "last.pt")["state_dict"], epochs_run
    trained.save(run / "final.pt")
    return run / "final.pt"


def run_cell(out: Path, cell: tuple[str, str, int, str, int], extra: list[str], retrain: bool) -> list[dict]:
    name = cell_name(*cell)
    seconds = train(out / "runs", name, *cell, extra, retrain)
    run = out / "runs" / name
    epochs_run = len((run / "metrics.jsonl").read_text().splitlines())
    row: dict = {"cell": name, "dataset": cell[0], "direction": cell[1], "layers": cell[2], "reset": cell[3],
                 "epochs": cell[4], "epochs_run": epochs_run, "train_seconds": round(seconds, 1)}
    checkpoints = {"best": run / "checkpoint.pt", "final": final_checkpoint(run, epochs_run)}
    return [export_row(out, f"{name}-{which}", checkpoints[which], row | {"weights": which})
            for which in WEIGHTS]


def export_row(out: Path, bundle: str, checkpoint: Path, row: dict) -> dict:
    row |= {"bundle": bundle, "checkpoint": str(checkpoint)}
    try:
        result = export_checkpoint(checkpoint, out / "models", bundle, version=1, overwrite=True)
    except VerificationError as exc:
        return row | {"exported": False, "error": str(exc)}
    reports = [result.parity, result.reference]
    worst = max(reports, key=lambda r: r.worst.ratio)
    return row | {
        "exported": True, "epoch": result.manifest.training.best_epoch,
        "worst": f"{worst.worst.output} vs {'PyTorch' if worst is result.parity else 'float64'} "
                 f"@ {worst.worst.where}",
        "diff": worst.worst.diff, "tolerance": worst.worst.tolerance, "ratio": worst.worst.ratio,
        "c_needed": c_needed(reports),
        "rows": [vars(r) | {"against": report.against} for report in reports for r in report.rows],
    }


def print_row(row: dict) -> None:
    head = f"| {row['cell']} | {row['epochs_run']} | {row['weights']}"
    if not row["exported"]:
        print(f"{head} | NO: {row['error'][:80]} | | | | |", flush=True)
        return
    print(f"{head} (epoch {row['epoch']}) | yes | {row['worst']} | {row['diff']:.2e} | "
          f"{row['tolerance']:.2e} | {row['ratio']:.2f} | {row['c_needed']:.1f} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["Airline", "ItalyPowerDemand"])
    parser.add_argument("--directions", nargs="+", default=["uni", "bi"], choices=["uni", "bi"])
    parser.add_argument("--layers", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--resets", nargs="+", default=["after", "before"], choices=["after", "before"])
    parser.add_argument("--epochs", nargs="+", type=int, default=[100, 500])
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="more training overrides for every cell (the tests use a tiny model)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/export_matrix"))
    parser.add_argument("--retrain", action="store_true", help="train every cell again")
    parser.add_argument("--sweep", help="then measure these lengths on every exported cell, e.g. 1,16,256")
    parser.add_argument("--draws", type=int, default=4, help="random batches per length in --sweep")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cells = list(itertools.product(args.datasets, args.directions, args.layers, args.resets, args.epochs))
    print(f"PARITY_C = {PARITY_C:g}; tolerance = PARITY_C x eps32 x sqrt(length) x max(1, |output|)")
    print("| cell | epochs run | weights | exported | nearest its tolerance | difference | tolerance | ratio "
          "| c needed |\n|---|---|---|---|---|---|---|---|---|", flush=True)
    rows = []
    with open(args.out / "results.jsonl", "w") as raw:
        for cell in cells:
            for row in run_cell(args.out, cell, args.extra, args.retrain):
                raw.write(json.dumps(row) + "\n")
                raw.flush()
                print_row(row)
                rows.append(row)
    exported = [r for r in rows if r["exported"]]
    print(f"\n{len(exported)} of {len(rows)} exports passed", end="")
    if exported:
        worst = max(exported, key=lambda r: r["c_needed"])
        print(f"; the largest c needed: {worst['c_needed']:.1f} ({worst['bundle']}), "
              f"PARITY_C = {PARITY_C:g}; worst ratio {max(r['ratio'] for r in exported):.2f}")
    if args.sweep and exported:
        sweep(args.out, [(r["bundle"], Path(r["checkpoint"])) for r in exported],
              [int(n) for n in args.sweep.split(",")], args.draws)
    return 0 if len(exported) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
