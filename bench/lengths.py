"""Length-aware batching under mixed-length traffic: `python -m bench.lengths --duration 5`.

Requests of one sequence each, lengths uniform in `--shortest`..`--longest` steps, on the `mid` model:

1. in-process, the same batches of GRU_MAX_BATCH_SIZE sequences, run as one padded run each (what a
   batcher that ignores lengths does) and as the scheduler plans them (service/batching.py `plan_runs`:
   sorted by length, cut where a run's padded steps would pass 1.25x its real steps): padded/real steps
   and sequences/s of each;
2. over HTTP, `gru serve` (one worker) with 32 closed-loop clients sending those requests: requests/s and
   the server's own padded/real ratio, the mean of `gru_batch_padding_ratio` over its runs (/metrics).

Prints both and writes bench/results/lengths.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench.loadgen import OK, Phase, generate
from bench.models import MID, build
from bench.run import RESULTS, serving
from service.batching import PADDING_FACTOR, pad_batch, plan_runs
from service.runtime import ModelRuntime
from service.settings import Settings


def mixed(count: int, shortest: int, longest: int, features: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((int(n), features)).astype(np.float32)
            for n in rng.integers(shortest, longest + 1, count)]


def in_process(runtime: ModelRuntime, sequences: list[np.ndarray], batch: int, seconds: float) -> dict:
    """Padded/real steps and sequences/s: one padded run per batch vs the scheduler's runs."""
    batches = [sequences[i:i + batch] for i in range(0, len(sequences) - batch + 1, batch)]
    plans = {"one padded run per batch": [[b] for b in batches], "runs of similar length": []}
    for b in batches:
        ordered = sorted(b, key=len, reverse=True)
        plans["runs of similar length"].append(
            [ordered[run] for run in plan_runs([len(s) for s in ordered], batch, PADDING_FACTOR)])
    out = {}
    for name, plan in plans.items():
        padded = sum(len(run) * max(map(len, run)) for runs in plan for run in runs)
        real = sum(len(s) for runs in plan for run in runs for s in run)
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for runs in plan:
                for run in runs:
                    runtime.run(*pad_batch(run))
                done += batch
        out[name] = {"padded_over_real": padded / real, "runs_per_batch": sum(map(len, plan)) / len(plan),
                     "seq_s": done / (time.perf_counter() - started)}
    return out


def over_http(url: str, metrics_url: str, sequences: list[np.ndarray], seconds: float) -> dict:
    bodies = [json.dumps({"sequences": [s.round(3).tolist()]}).encode() for s in sequences[:256]]
    records = generate(url, bodies, [Phase("warm-up", 1.0, connections=32),
                                     Phase("measured", seconds, connections=32)])
    a = records.arrays()
    ok = (a["phase"] == 1) & (a["kind"] == OK)
    text = httpx.get(metrics_url).text
    total = {k: float(re.search(rf'^gru_batch_padding_ratio_{k}{{model="{MID.name}".*}} (\S+)$', text,
                                re.MULTILINE)[1]) for k in ("sum", "count")}  # type: ignore[index]
    return {"rps": int(ok.sum()) / seconds, "runs": total["count"],
            "padded_over_real_mean": total["sum"] / total["count"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--shortest", type=int, default=8)
    parser.add_argument("--longest", type=int, default=128)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    bundle = build(args.results / "work", (MID,))[MID.name]
    settings = Settings()
    runtime = ModelRuntime(bundle, settings)
    runtime.load()
    sequences = mixed(4096, args.shortest, args.longest, MID.features)
    inproc = in_process(runtime, sequences, settings.max_batch_size, args.duration)
    report: dict[str, object] = {"model": MID.name, "lengths": [args.shortest, args.longest],
                                 "batch": settings.max_batch_size, "in_process": inproc}
    print(f"{MID.name}, lengths {args.shortest}-{args.longest} steps, batches of {settings.max_batch_size}")
    for name, row in inproc.items():
        print(f"  in-process, {name:<25} padded/real {row['padded_over_real']:.2f}  "
              f"{row['runs_per_batch']:.1f} runs/batch  {row['seq_s']:7.0f} seq/s")
    with serving("gru-serve", args.results / "work", 1) as server:
        http = over_http(f"http://127.0.0.1:{server.port}/models/{MID.name}/predict",
                         f"http://127.0.0.1:{server.port}/metrics", sequences, args.duration)
    report["http"] = http
    print(f"  gru serve, 32 clients: {http['rps']:.0f} req/s; padded/real per run "
          f"{http['padded_over_real_mean']:.2f} (mean over {http['runs']:.0f} runs)")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "lengths.json").write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
