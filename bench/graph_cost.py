"""What one prediction costs inside onnxruntime: the product's exported graph (export/onnx.py's to_onnx,
the graph `gru export` writes: x, state and lengths in; output and next state out) beside a minimal
reference of the same layers (a bare torch.onnx.export: no lengths, no state, no normalisation), for
every front end × readout × reset variant, and the benchmark's default small and mid models
(bench/models.py's shapes, their front end and readouts as the defaults resolve them).

    python -m bench.graph_cost [--rounds 30] [--profile] [--before GIT_REF]

One intra-op thread, so that onnxruntime runs every node on the calling thread: the time is that
thread's CPU time, which the machine's other processes do not inflate. Product and reference take turns
in each round, so that both see the same load (caches, memory bandwidth); the best round is kept.
Weights are random: the cost does not depend on them. --profile adds, for each product graph, where its
batch-1 time goes (onnxruntime's profiler, share of the node time per op type);
--before adds, for the default models, the graph the tree at GIT_REF exported (same inputs, same rounds).
Writes the raw numbers to bench/results/graph_cost.json.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from bench.models import MID, SMALL, BenchModel

RESULTS = Path(__file__).parent / "results" / "graph_cost.json"
LAYERS, LAST_ONLY, POOLED = 2, ("last",), ("last", "mean", "max")


@dataclass(frozen=True)
class Case:
    name: str
    frontend: str
    patch: int
    readout: tuple[str, ...]
    reset: str
    shape: BenchModel = SMALL


def cases() -> list[Case]:
    grid = [Case(f"{front}/{stride} {'+'.join(readout)} reset-{reset}", front, stride, readout, reset)
            for front, stride in (("none", 1), ("patch", 4), ("conv", 1), ("conv", 4))
            for readout in (LAST_ONLY, POOLED) for reset in ("after", "before")]
    defaults = [Case(f"default {m.name} (conv/1 last+mean+max)", "conv", 1, POOLED, "after", m)
                for m in (SMALL, MID)]
    return grid + defaults


def product(case: Case) -> tuple[bytes, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The graph export writes for this model, and its feeds at batch 1 and 64 (full length)."""
    from export.onnx import example_inputs, to_onnx
    from export.wrapper import InferenceModule
    from training.config import ResolvedModelConfig
    from training.model import GRUModel

    shape = case.shape
    config = ResolvedModelConfig(input_size=shape.features, hidden_size=shape.hidden, num_layers=LAYERS,
                         output_size=shape.classes, frontend=case.frontend, patch=case.patch,
                         readout=list(case.readout), reset=case.reset)
    torch.manual_seed(0)
    model = GRUModel(config).eval()
    graph = to_onnx(InferenceModule(model), model, trace_batch=2, trace_length=shape.steps)

    def feeds(batch: int) -> dict[str, np.ndarray]:
        x, state, lengths = example_inputs(model, batch, shape.steps)
        return {"x": x.numpy(), "state": state.numpy(), "lengths": lengths.numpy()}

    return graph, feeds(1), feeds(64)


class Reference(nn.Module):
    """The same layers written plainly: the front end as convolutions (causal: zeros before the start),
    one nn.GRU of all layers, the readout over every step, the head and softmax."""

    def __init__(self, case: Case):
        super().__init__()
        features, hidden, k = case.shape.features, case.shape.hidden, case.patch
        self.frontend, self.readout = case.frontend, case.readout
        if case.frontend == "patch":
            self.first = nn.Conv1d(features, hidden, k, stride=k)
            self.second = nn.Conv1d(hidden, hidden, 1)
        elif case.frontend == "conv":
            self.first = nn.Conv1d(features, hidden, 2 * k, stride=k, padding=0)
            self.second = nn.Conv1d(hidden, hidden, 3)
        self.pad = k
        width = features if case.frontend == "none" else hidden
        self.gru = nn.GRU(width, hidden, LAYERS, batch_first=True)
        self.head = nn.Linear(len(case.readout) * hidden, case.shape.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frontend != "none":  # (B, T, F) -> (B, T/k, H)
            z = x.transpose(1, 2)
            if self.frontend == "conv":
                z = nn.functional.pad(z, (self.pad, 0))
            z = nn.functional.gelu(self.first(z))
            if self.frontend == "conv":
                z = nn.functional.pad(z, (2, 0))
            x = nn.functional.gelu(self.second(z)).transpose(1, 2)
        y, h = self.gru(x)
        parts = {"last": h[-1], "mean": y.mean(dim=1), "max": y.amax(dim=1)}
        return torch.softmax(self.head(torch.cat([parts[p] for p in self.readout], dim=1)), dim=-1)


def reference(case: Case) -> tuple[bytes, dict[str, np.ndarray], dict[str, np.ndarray]]:
    from export.onnx import OPSET, set_gru_attributes
    from export.onnx import gru_spec as spec_of
    from training.config import ModelConfig

    torch.manual_seed(0)
    module, buffer = Reference(case).eval(), io.BytesIO()
    x = torch.randn(2, case.shape.steps, case.shape.features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), buffer,  # type: ignore[arg-type]
                          input_names=["x"], output_names=["output"],
                          dynamic_axes={"x": {0: "batch", 1: "time"}, "output": {0: "batch"}},
                          opset_version=OPSET, dynamo=False)
    gru = spec_of(ModelConfig(hidden_size=case.shape.hidden, reset=case.reset))
    graph = set_gru_attributes(buffer.getvalue(), gru)  # reset before: the same node, lbr=0
    rng = np.random.default_rng(0)

    def feeds(batch: int) -> dict[str, np.ndarray]:
        return {"x": rng.standard_normal((batch, case.shape.steps, case.shape.features)).astype(np.float32)}

    return graph, feeds(1), feeds(64)


EXPORT_AT = """
import sys, torch
from export.onnx import to_onnx
from export.wrapper import InferenceModule
from training.config import ResolvedModelConfig
from training.model import GRUModel
features, hidden, classes, steps, out = sys.argv[1:]
config = ResolvedModelConfig(input_size=int(features), hidden_size=int(hidden), num_layers=2,
                     output_size=int(classes), frontend="conv", patch=1, readout=["last", "mean", "max"])
torch.manual_seed(0)
model = GRUModel(config).eval()
open(out, "wb").write(to_onnx(InferenceModule(model), model, 2, int(steps)))
"""


def exported_at(ref: str, case: Case) -> bytes:
    """The default model's graph as the tree at `ref` exported it (its own code, this interpreter)."""
    with tempfile.TemporaryDirectory() as folder:
        tree = subprocess.run(["git", "archive", ref], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", folder], input=tree, check=True)
        shape, out = case.shape, os.path.join(folder, "model.onnx")
        args = [str(v) for v in (shape.features, shape.hidden, shape.classes, shape.steps)]
        subprocess.run([sys.executable, "-c", EXPORT_AT, *args, out], check=True, cwd=folder,
                       env={**os.environ, "PYTHONPATH": folder})
        return Path(out).read_bytes()


def session(graph: bytes, profile: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def seconds_per_run(s: ort.InferenceSession, feeds: dict[str, np.ndarray], runs: int) -> float:
    """CPU seconds of this thread per run: with one intra-op thread onnxruntime runs every node on the
    calling thread, and time the machine's other processes take from it does not count."""
    started = time.thread_time()
    for _ in range(runs):
        s.run(None, feeds)
    return (time.thread_time() - started) / runs


def measure(graphs: dict[str, tuple[bytes, dict, dict]], rounds: int) -> dict[str, dict[str, float]]:
    """Best-of-rounds batch-1 µs and batch-64 seq/s of each graph, the graphs taking turns."""
    sessions = {k: session(g) for k, (g, _, _) in graphs.items()}
    one: dict[str, list[float]] = collections.defaultdict(list)
    many: dict[str, list[float]] = collections.defaultdict(list)
    for k, (_, f1, f64) in graphs.items():  # warm-up
        seconds_per_run(sessions[k], f1, 20), seconds_per_run(sessions[k], f64, 3)
    for _ in range(rounds):  # short rounds, many of them: the best is one the machine left alone
        for k, (_, f1, f64) in graphs.items():
            one[k].append(seconds_per_run(sessions[k], f1, 50))
            many[k].append(seconds_per_run(sessions[k], f64, 3))
    return {k: {"nodes": len(onnx.load_from_string(graphs[k][0]).graph.node),
                "batch1_us": 1e6 * min(one[k]), "batch64_seq_s": 64 / min(many[k])} for k in graphs}


def profile(graph: bytes, feeds: dict[str, np.ndarray], runs: int = 300) -> dict[str, float]:
    """Share of the batch-1 node time per op type (onnxruntime's profiler), largest first."""
    with tempfile.TemporaryDirectory() as folder:
        s = session(graph, os.path.join(folder, "profile"))
        for _ in range(runs):
            s.run(None, feeds)
        events = json.loads(Path(s.end_profiling()).read_text())
    runs_of: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            runs_of[e["args"]["op_name"], e["name"]].append(e["dur"])
    per_op: dict[str, float] = collections.defaultdict(float)
    for (op, _), durations in runs_of.items():  # each node's median: a run the machine cut into is one
        per_op[op] += float(np.median(durations))
    total = sum(per_op.values())
    return {op: round(us / total, 3) for op, us in sorted(per_op.items(), key=lambda kv: -kv[1])[:6]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--profile", action="store_true", help="where each product graph's time goes")
    parser.add_argument("--before", metavar="GIT_REF",
                        help="also time the default models as the tree at GIT_REF exported them")
    args = parser.parse_args()
    rows = []
    print(f"load: {os.getloadavg()[0]:.2f}; 1 intra-op thread; the calling thread's CPU time; best of "
          f"{args.rounds} rounds\n")
    print(f"{'model':44} {'nodes':>11} {'batch 1 µs':>15} {'ratio':>5} {'batch 64 seq/s':>17} {'ratio':>5}")
    for case in cases():
        graphs = {"product": product(case), "reference": reference(case)}
        if args.before and case.name.startswith("default"):
            graphs["before"] = (exported_at(args.before, case), *graphs["product"][1:])
        got = measure(graphs, args.rounds)
        p, r = got["product"], got["reference"]
        row = {"case": case.name, "product": p, "reference": r, "before": got.get("before"),
               "batch1_ratio": p["batch1_us"] / r["batch1_us"],
               "batch64_ratio": r["batch64_seq_s"] / p["batch64_seq_s"]}
        if args.profile:
            row["profile"] = profile(graphs["product"][0], graphs["product"][1])
        rows.append(row)
        print(f"{case.name:44} {p['nodes']:>5}/{r['nodes']:<5} {p['batch1_us']:>7.1f}/{r['batch1_us']:<7.1f}"
              f"{row['batch1_ratio']:>5.2f} {p['batch64_seq_s']:>8.0f}/{r['batch64_seq_s']:<8.0f}"
              f"{row['batch64_ratio']:>5.2f}" + (f"  {row['profile']}" if args.profile else ""), flush=True)
        if "before" in got:
            b = got["before"]
            print(f"{'  the same, exported at ' + args.before:44} {b['nodes']:>5}{'':6} "
                  f"{b['batch1_us']:>7.1f}{'':13} {b['batch64_seq_s']:>8.0f}", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    raw = {"load": os.getloadavg()[0], "rounds": args.rounds, "rows": rows}
    RESULTS.write_text(json.dumps(raw, indent=1))
    print(f"\n(product/reference; ratio = product's cost / reference's) raw numbers: {RESULTS}")


if __name__ == "__main__":
    main()
