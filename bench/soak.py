"""Soak at saturation: `python -m bench.soak --duration 60`.

Starts `gru serve` as users run it (bench/run.py `serving`) on a bench model, warms it up at saturation
(`--warmup` s), then keeps `--clients` closed-loop connections busy for `--duration` s (bench/loadgen.py),
in intervals of `--interval` s. The requests vary: 1-4 sequences of mixed lengths each, so padding,
ragged batches and several rows per request all run. It samples the server processes' RSS (the process
tree, from /proc) every second and prints per interval: requests/s, p50/p99, unexpected answers, RSS.
Checks: zero unexpected answers or socket errors (with the default queue nothing is refused at this
concurrency); stable p99 (the median p99 of the last third of intervals within `--p99-factor` x the first
third's); RSS at the end within `--rss-growth` of RSS after the warm-up (the median of the first
interval's samples against the median of the last interval's, so that one sample taken mid-batch does
not decide). Exit status 1 when a check fails. Writes bench/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.loadgen import OK, Phase, generate, percentile_ms
from bench.models import HEAVY, MID, SMALL, BenchModel, build
from bench.run import RESULTS, process_tree_rss, serving

MODELS = {m.name: m for m in (SMALL, MID, HEAVY)}


def mixed_bodies(features: int, max_length: int, count: int = 16, seed: int = 0) -> list[bytes]:
    """Request bodies of 1-4 sequences each, lengths 1..max_length: ragged batches and padding."""
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(count):
        sequences = [rng.standard_normal((int(rng.integers(1, max_length + 1)), features)).round(3).tolist()
                     for _ in range(int(rng.integers(1, 5)))]
        bodies.append(json.dumps({"sequences": sequences}).encode())
    return bodies


class RssSampler:
    """RSS of a process tree, once per `every` s, on a thread (reading /proc costs microseconds)."""

    def __init__(self, pid: int, every: float = 1.0):
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []  # (perf_counter, bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), process_tree_rss(self.pid)))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> list[int]:
        return [rss for t, rss in self.samples if start <= t < end]


def soak(url: str, pid: int, bodies: list[bytes], warmup_s: float, duration_s: float, interval_s: float,
         clients: int) -> dict[str, Any]:
    """Warm-up, then closed-loop intervals; per interval: rate, latency, unexpected answers, RSS."""
    count = max(1, round(duration_s / interval_s))
    phases = [Phase("warm-up", warmup_s, connections=clients)]
    phases += [Phase(f"interval {i + 1}", interval_s, connections=clients) for i in range(count)]
    with RssSampler(pid, every=min(1.0, interval_s / 4)) as sampler:
        started = time.perf_counter()
        records = generate(url, bodies, phases)
    a = records.arrays()
    rows = []
    for index in range(1, len(phases)):
        mine = a["phase"] == index
        ok = mine & (a["kind"] == OK)
        begin = started + warmup_s + (index - 1) * interval_s
        rss = sampler.between(begin, begin + interval_s)
        rows.append({"interval": index, "requests": int(mine.sum()), "rps": int(ok.sum()) / interval_s,
                     "unexpected": int((mine & (a["kind"] != OK)).sum()),
                     "p50_ms": percentile_ms(a["latency"][ok], 50),
                     "p99_ms": percentile_ms(a["latency"][ok], 99),
                     "rss_mb": float(np.median(rss)) / 2**20 if rss else None})
    warm = sampler.between(started, started + warmup_s)
    return {"clients": clients, "warmup_s": warmup_s, "interval_s": interval_s, "intervals": rows,
            "warmup_unexpected": int(((a["phase"] == 0) & (a["kind"] != OK)).sum()),
            "rss_warmup_start_mb": warm[0] / 2**20 if warm else None,
            "other_statuses": records.statuses, "unanswered": records.unanswered}


def checks(report: dict[str, Any], p99_factor: float, rss_growth: float) -> list[dict[str, Any]]:
    rows = report["intervals"]
    unexpected = sum(r["unexpected"] for r in rows)
    third = max(1, len(rows) // 3)
    first = float(np.median([r["p99_ms"] for r in rows[:third] if r["p99_ms"] is not None] or [np.nan]))
    last = float(np.median([r["p99_ms"] for r in rows[-third:] if r["p99_ms"] is not None] or [np.nan]))
    rss_first, rss_last = rows[0]["rss_mb"], rows[-1]["rss_mb"]
    growth = (rss_last / rss_first - 1) if rss_first and rss_last else float("nan")
    report["summary"] = {"requests": sum(r["requests"] for r in rows), "unexpected": unexpected,
                         "p99_first_third_ms": first, "p99_last_third_ms": last,
                         "p99_min_ms": min(r["p99_ms"] or np.inf for r in rows),
                         "p99_max_ms": max(r["p99_ms"] or 0 for r in rows),
                         "rss_after_warmup_mb": rss_first, "rss_end_mb": rss_last, "rss_growth": growth}
    return [
        {"check": "unexpected answers or socket errors", "measured": unexpected, "goal": "0",
         "met": unexpected == 0},
        {"check": "p99, last third of intervals / first third", "measured": round(last / first, 2),
         "goal": f"<= {p99_factor:g}", "met": bool(last <= p99_factor * first)},
        {"check": "RSS growth after warm-up", "measured": f"{100 * growth:+.2f} %",
         "goal": f"< {100 * rss_growth:g} %", "met": bool(growth < rss_growth)},
    ]


def print_report(report: dict[str, Any]) -> None:
    print(f"{'interval':>8} {'requests':>9} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'unexpected':>10} "
          f"{'RSS MB':>8}")
    for r in report["intervals"]:
        p50 = f"{r['p50_ms']:8.1f}" if r["p50_ms"] is not None else f"{'-':>8}"
        p99 = f"{r['p99_ms']:8.1f}" if r["p99_ms"] is not None else f"{'-':>8}"
        rss = f"{r['rss_mb']:8.1f}" if r["rss_mb"] is not None else f"{'-':>8}"
        print(f"{r['interval']:8d} {r['requests']:9d} {r['rps']:7.0f} {p50} {p99} {r['unexpected']:10d} "
              f"{rss}")
    s = report["summary"]
    print(f"\n{s['requests']} requests, {s['unexpected']} unexpected; p99 {s['p99_min_ms']:.1f}-"
          f"{s['p99_max_ms']:.1f} ms over the intervals; RSS {s['rss_after_warmup_mb']:.1f} MB after "
          "warm-up, "
          f"{s['rss_end_mb']:.1f} MB at the end ({100 * s['rss_growth']:+.2f} %)")
    print("checks:")
    for c in report["checks"]:
        print(f"  [{'met' if c['met'] else 'MISSED'}] {c['check']}: {c['measured']} (goal {c['goal']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of soak after warm-up (60)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds at saturation first (10)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds per printed interval (5)")
    parser.add_argument("--clients", type=int, default=64, help="closed-loop connections (64)")
    parser.add_argument("--model", choices=sorted(MODELS), default=SMALL.name)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--p99-factor", type=float, default=2.0)
    parser.add_argument("--rss-growth", type=float, default=0.05)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    model: BenchModel = MODELS[args.model]
    work = args.results / "work"
    build(work, (model,))
    print(f"gru serve: model {model.name}, {args.workers} worker(s), {args.clients} clients, warm-up "
          f"{args.warmup:g} s, soak {args.duration:g} s")
    with serving("gru-serve", work, args.workers) as server:
        report = soak(server.url(model.name), server.process.pid, mixed_bodies(model.features, model.steps),
                      args.warmup, args.duration, args.interval, args.clients)
    report["checks"] = checks(report, args.p99_factor, args.rss_growth)
    report.update(model=model.name, workers=args.workers)
    print_report(report)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "soak.json").write_text(json.dumps(report, indent=2))
    return 0 if all(c["met"] for c in report["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
