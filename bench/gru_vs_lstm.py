"""GRU vs LSTM, measured: the seed's claims (fewer parameters, faster training, similar accuracy) on the
same data, sizes and recipe. For each cell: parameter counts, training seconds per epoch, test accuracy
over several seeds, and in-process onnxruntime latency at batch 1 and 64 (all exported with torch.onnx,
1 intra-op thread; the LSTM only for this measurement: it is not a servable bundle). A third row, the GRU
with a ReLU candidate (the seed's example), prices the per-step loop it trains on.

    python -m bench.gru_vs_lstm [--dataset ItalyPowerDemand] [--seeds 3] [--set model.hidden_size=128 ...]

Writes the raw numbers to bench/results/gru_vs_lstm.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from unittest import mock

import numpy as np
import onnxruntime as ort
import torch

from export.onnx import gru_spec, set_gru_attributes
from training import defaults, recurrence
from training.cells import SeedGRU, make_gru, torch_stand_in
from training.checkpoint import Checkpoint
from training.config import load_config
from training.data import load_data
from training.loop import _step_seconds, fit
from training.model import GRUModel

# The GRU with a ReLU candidate runs on the per-step loop (no fused kernel, no cuDNN): its row prices that.
CELLS = {"GRU": ["model.cell=gru"], "LSTM": ["model.cell=lstm"],
         "GRU, ReLU candidate": ["model.cell=gru", "model.activation=relu"]}
# The cells compared as they are: no front end, the last state, and the recipe the table in
# docs/results/quality.md was measured with (constant learning rate 1e-3, no augmentation, fixed epochs:
# equal work per cell, the best validation epoch kept).
RECIPE = ["model.hidden_size=64", "model.num_layers=2", "model.frontend=none", "model.readout=[last]",
          "optim.max_epochs=60", "optim.batch_size=16", "optim.patience=1000", "optim.learning_rate=0.001",
          "optim.schedule=constant", "optim.jitter=0", "optim.scaling=0", "optim.final_fit=false",
          "optim.time_budget=null",
          "optim.plots=false", "optim.tensorboard=false"]


def train(cell: str, seed: int, dataset: str, extra: list[str], run_dir: Path) -> dict[str, Any]:
    overrides = [f"data.dataset={dataset}", f"optim.seed={seed}", f"run_dir={run_dir}", f"name={cell}_{seed}",
                 "progress=false", *RECIPE, *extra, *CELLS[cell]]
    result = fit(load_config(None, overrides))
    epochs = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    return {"cell": cell, "seed": seed, "accuracy": result.test_metrics["accuracy"],
            "seconds_per_epoch": statistics.median(e["seconds"] for e in epochs), "epochs": len(epochs),
            "checkpoint": str(result.checkpoint), "overrides": overrides}


def parameter_counts(model: GRUModel) -> tuple[int, int]:
    """(recurrent encoder, whole model)."""
    return (sum(p.numel() for p in model.layers.parameters()), sum(p.numel() for p in model.parameters()))


class Probabilities(torch.nn.Module):
    """x (B, T, F) -> class probabilities: the plain graph both cells are timed on."""

    def __init__(self, model: GRUModel):
        super().__init__()
        self.model = model.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.predict(x)[0]


def to_onnx(model: GRUModel, length: int) -> bytes:
    """x -> probabilities. The loop GRU is traced as an nn.GRU holding its weights, then given its
    `activations`, and inter-layer dropout is cleared, as export does (export/onnx.py, wrapper.py); the
    graph is checked against PyTorch before it is timed."""
    traced = copy.deepcopy(model)
    for layer in traced.layers:
        grus = cast(torch.nn.ModuleList, layer)
        for d, gru in enumerate(grus):
            if isinstance(gru, SeedGRU):
                grus[d] = torch_stand_in(gru)  # one layer each: no inter-layer dropout inside
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Probabilities(traced), (torch.randn(2, length, model.config.input_size),),
                          buffer,  # type: ignore[arg-type]
                          input_names=["x"], output_names=["output"], opset_version=17, dynamo=False,
                          dynamic_axes={"x": {0: "batch", 1: "time"}, "output": {0: "batch"}})
    graph = buffer.getvalue()
    graph = set_gru_attributes(graph, gru_spec(model.config).model_copy(
        update={"bidirectional": False, "num_layers": 1}))  # one forward node per layer and direction
    x = torch.randn(3, length + 5, model.config.input_size)
    with torch.no_grad():
        expected = model.predict(x)[0].numpy()
    got = ort.InferenceSession(graph, providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4, "the timed graph is not the trained model"
    return graph


def latencies(graphs: dict[str, bytes], length: int, features: int, batches: tuple[int, ...],
              rounds: int = 7, per_round: float = 0.3) -> dict[str, dict[int, float]]:
    """Median microseconds per session.run, the cells interleaved round by round (same machine load)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    sessions = {k: ort.InferenceSession(g, options, providers=["CPUExecutionProvider"])
                for k, g in graphs.items()}
    rng = np.random.default_rng(0)
    samples: dict[str, dict[int, list[float]]] = {k: {b: [] for b in batches} for k in graphs}
    for _ in range(rounds):
        for batch in batches:
            x = rng.standard_normal((batch, length, features)).astype(np.float32)
            for cell, session in sessions.items():
                session.run(None, {"x": x})
                runs, started = 0, time.perf_counter()
                while time.perf_counter() - started < per_round:
                    session.run(None, {"x": x})
                    runs += 1
                samples[cell][batch].append(1e6 * (time.perf_counter() - started) / runs)
    return {cell: {b: statistics.median(v) for b, v in runs.items()} for cell, runs in samples.items()}


# Training throughput at the sizes the default model's GRU runs (hidden 128 reading the front end's
# 128-wide steps, ~64 GRU steps, batch 16) and at the seed comparison's (hidden 64, 1 feature, 24 steps).
SPEED_SIZES = ((16, 64, 128, 128), (16, 24, 1, 64))  # (batch, steps, input width, hidden)


def step_speeds(sizes: tuple[tuple[int, int, int, int], ...] = SPEED_SIZES,
                repeats: int = 40) -> list[dict[str, Any]]:
    """Training throughput (sequence·steps per second: batch × steps / seconds for forward + backward) of
    the product's GRU layer (training/cells.py make_gru: both reset variants, on the C++ per-step loops
    and on the Python ones), plain nn.GRU and nn.LSTM
    (oneDNN's fused kernel) at the same sizes, one thread, interleaved. Each figure is the fastest of
    `repeats` steps: on a shared machine the others include time spent descheduled."""
    rows = []
    for batch, steps, width, hidden in sizes:
        torch.manual_seed(0)
        x = torch.randn(batch, steps, width)
        config = load_config(None, [f"model.input_size={width}", f"model.hidden_size={hidden}",
                                    "model.num_layers=1"]).model
        after, before = make_gru(config), make_gru(config.model_copy(update={"reset": "before"}))
        cells = {"GRU, reset after (product)": after, "GRU, reset before (product)": before,
                 "GRU, reset after (Python loop)": after, "GRU, reset before (Python loop)": before,
                 "nn.GRU": torch.nn.GRU(width, hidden, batch_first=True),
                 "nn.LSTM": torch.nn.LSTM(width, hidden, batch_first=True)}
        samples: dict[str, list[float]] = {k: [] for k in cells}
        for _ in range(repeats + 3):  # the first 3 are warm-up
            for label, cell in cells.items():
                with _python_loops(label.endswith("(Python loop)")):
                    started = time.perf_counter()
                    cell.zero_grad()
                    y, _ = cell(x)
                    y.sum().backward()
                    samples[label].append(time.perf_counter() - started)
        for label, times in samples.items():
            rows.append({"batch": batch, "steps": steps, "input": width, "hidden": hidden, "cell": label,
                         "ms": 1000 * min(times[3:]), "seq_steps_per_s": batch * steps / min(times[3:])})
    return rows


@contextlib.contextmanager
def _python_loops(on: bool) -> Iterator[None]:
    """The product's GRU on its Python loops (what runs where recurrence.cpp cannot be built): the
    before-and-after of the C++ loops in one run."""
    with mock.patch.object(recurrence, "compiled", lambda: None) if on else contextlib.nullcontext():
        yield


CPU = torch.device("cpu")


def model_step_speeds(datasets: tuple[str, ...] = ("ItalyPowerDemand", "GunPoint"),
                      repeats: int = 15) -> list[dict[str, Any]]:
    """The whole default training step (augmentation, front end, GRU, readout, head, backward, AdamW, as
    `gru train` times it to plan its budget) of each dataset's default model: the product's GRU on its C++
    loops and on its Python loops, and the same model with nn.LSTM in the GRU's place; interleaved, one
    thread, the fastest of `repeats` steps."""
    rows = []
    for dataset in datasets:
        config = load_config(None, [f"data.dataset={dataset}"])
        data = load_data(config.data)
        resolved, _ = defaults.resolve(config, data)
        train = defaults.training_split(data, resolved.optim.final_fit)
        models = {}
        for cell in ("gru", "lstm"):
            torch.manual_seed(0)
            models[cell] = GRUModel(resolved.model.model_copy(update={"cell": cell}))
            models[cell].normaliser.fit(train.X, None, lengths=train.lengths)
        variants = {"GRU (product)": "gru", "GRU (Python loop)": "gru", "nn.LSTM": "lstm"}
        samples: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(repeats):
            for label, cell in variants.items():
                with _python_loops(label.endswith("(Python loop)")):
                    seconds = _step_seconds(models[cell], train, resolved.optim, CPU, repeats=1)
                samples[label].append(seconds)
        rows += [{"dataset": dataset, "cell": label, "ms": 1000 * min(times)}
                 for label, times in samples.items()]
    return rows


def model_step_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| dataset (default model) | cell | ms per training step | vs nn.LSTM |", "|---|---|---|---|"]
    for row in rows:
        lstm = next(r for r in rows if r["cell"] == "nn.LSTM" and r["dataset"] == row["dataset"])
        lines.append(f"| {row['dataset']} | {row['cell']} | {row['ms']:.2f} | "
                     f"{lstm['ms'] / row['ms']:.2f}× |")
    return "\n".join(lines)


def speed_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| batch × steps, input → hidden | cell | ms per training step | sequence·steps/s | "
             "vs nn.LSTM |",
             "|---|---|---|---|---|"]
    for row in rows:
        lstm = next(r for r in rows if r["cell"] == "nn.LSTM" and r["hidden"] == row["hidden"]
                    and r["steps"] == row["steps"])
        lines.append(f"| {row['batch']} × {row['steps']}, {row['input']} → {row['hidden']} | {row['cell']} | "
                     f"{row['ms']:.2f} | {row['seq_steps_per_s']:,.0f} | "
                     f"{row['seq_steps_per_s'] / lstm['seq_steps_per_s']:.2f}× |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ItalyPowerDemand")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"change the recipe (default: {' '.join(RECIPE)})")
    parser.add_argument("--output", type=Path, default=Path("bench/results/gru_vs_lstm.json"))
    parser.add_argument("--step-speed-only", action="store_true",
                        help="only the training throughput of the GRU layers and nn.LSTM")
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps = step_speeds()
    print(f"training throughput, one thread, load average {Path('/proc/loadavg').read_text().split()[0]}:\n"
          + speed_table(steps))
    whole = model_step_speeds()
    load = Path("/proc/loadavg").read_text().split()[0]
    print(f"\nthe whole training step, one thread, load average {load}:\n{model_step_table(whole)}")
    if args.step_speed_only:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_name("gru_step_speed.json").write_text(json.dumps({"layer": steps, "model": whole},
                                                                           indent=2))
        return
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):  # cells alternate, so both see the same machine load
            for cell in CELLS:
                rows.append(train(cell, seed, args.dataset, args.overrides, Path(tmp)))
        trained = {cell: Checkpoint.load(next(r for r in rows if r["cell"] == cell)["checkpoint"])
                   for cell in CELLS}
        models = {cell: checkpoint.model() for cell, checkpoint in trained.items()}
        length = trained["GRU"].max_train_length
    features = next(iter(models.values())).config.input_size
    timing = latencies({c: to_onnx(m, length) for c, m in models.items()}, length, features, (1, 64))
    summary = _summary(rows, models, timing)
    _print(summary, args, length)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"dataset": args.dataset, "recipe": RECIPE + args.overrides,
                                       "length": length, "runs": rows, "summary": summary,
                                       "step_speed": steps, "model_step_speed": whole}, indent=2))


def _summary(rows: list[dict[str, Any]], models: dict[str, GRUModel],
             timing: dict[str, dict[int, float]]) -> dict[str, dict[str, Any]]:
    out = {}
    for cell, model in models.items():
        mine = [r for r in rows if r["cell"] == cell]
        accuracy = [r["accuracy"] for r in mine]
        encoder, total = parameter_counts(model)
        out[cell] = {"encoder_parameters": encoder, "parameters": total,
                     "seconds_per_epoch": statistics.median(r["seconds_per_epoch"] for r in mine),
                     "accuracy_mean": statistics.mean(accuracy), "accuracy_sd": statistics.stdev(accuracy)
                     if len(accuracy) > 1 else 0.0, "accuracy": accuracy,
                     "latency_us_batch1": timing[cell][1], "latency_us_batch64": timing[cell][64]}
    return out


def _print(summary: dict[str, dict[str, Any]], args: argparse.Namespace, length: int) -> None:
    print(f"\n{args.dataset} (length {length}), {args.seeds} seeds, {' '.join(RECIPE + args.overrides)}; "
          f"load average {Path('/proc/loadavg').read_text().split()[0]}")
    print("| cell | parameters (recurrent / all) | training s/epoch | test accuracy (mean ± sd) "
          "| onnxruntime µs, batch 1 | batch 64 |")
    print("|---|---|---|---|---|---|")
    for cell, s in summary.items():
        print(f"| {cell} | {s['encoder_parameters']:,} / {s['parameters']:,} | {s['seconds_per_epoch']:.3f} "
              f"| {s['accuracy_mean']:.3f} ± {s['accuracy_sd']:.3f} | {s['latency_us_batch1']:.0f} "
              f"| {s['latency_us_batch64']:.0f} |")
    gru, lstm, relu = summary["GRU"], summary["LSTM"], summary["GRU, ReLU candidate"]
    print(f"ReLU-candidate GRU / GRU: s/epoch {relu['seconds_per_epoch'] / gru['seconds_per_epoch']:.2f}×")
    print(f"LSTM/GRU: parameters {lstm['encoder_parameters'] / gru['encoder_parameters']:.2f}×, "
          f"s/epoch {lstm['seconds_per_epoch'] / gru['seconds_per_epoch']:.2f}×, latency batch 1 "
          f"{lstm['latency_us_batch1'] / gru['latency_us_batch1']:.2f}×, batch 64 "
          f"{lstm['latency_us_batch64'] / gru['latency_us_batch64']:.2f}×")


if __name__ == "__main__":
    main()
