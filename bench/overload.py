"""Overload: `python -m bench.overload --duration 20`.

Starts `gru serve` as users run it (bench/run.py `serving`, one worker) on a bench model, measures its
capacity (successful requests/s with 32 closed-loop clients), then drives it open loop (bench/loadgen.py:
a fixed rate, whatever the server answers) at `--normal` x capacity, a burst at `--multiplier` x capacity,
and `--normal` again. Prints a timeline per bucket (offered, 200s, refusals, other answers, socket errors,
p50/p99 of the 200s and of the refusals), then the checks: the generator reached the offered rate; every
refusal was 503 `queue_full` with Retry-After; no other status, no socket error; no refusal before the
burst (else the machine was too busy for a clean baseline); refusals fast (p99 under 100 ms); the
recovery time (from the burst's end until the 200s' p99 is back within 1.5x the pre-burst p99, the median
of the pre-burst buckets' p99, two buckets in a row) within 5 s. Exit status 1 when a check fails. Writes
bench/results/overload.json.

Queue size: GRU_MAX_QUEUE_SIZE=128 (two batches of GRU_MAX_BATCH_SIZE=64: one running, one gathering).
A deeper queue adds waiting, not throughput: at the default 2048 a request could wait 2048 / capacity
seconds (about 3 s for `heavy` here) before its answer, and the queue would take as long to drain after a
burst; 128 bounds that wait near 0.2 s and turns the excess into immediate refusals.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.loadgen import (
    ERROR,
    KIND_NAMES,
    OK,
    OTHER,
    REFUSED,
    UNSENT,
    Phase,
    Records,
    generate,
    percentile_ms,
)
from bench.models import HEAVY, MID, SMALL, build
from bench.run import RESULTS, request_body, serving

MODELS = {m.name: m for m in (HEAVY, MID, SMALL)}
QUEUE_SIZE = 128


@dataclass(frozen=True)
class Plan:
    capacity_s: float = 3.0  # closed loop, `clients` clients (after 1 s of warm-up)
    clients: int = 32
    before_s: float = 5.0
    burst_s: float = 5.0
    after_s: float = 10.0
    multiplier: float = 4.0
    normal: float = 0.5  # the load before and after the burst, x capacity
    bucket_s: float = 0.5
    fast_ms: float = 100.0  # refusal p99 goal
    recovery_s: float = 5.0  # recovery goal
    recovery_factor: float = 1.5


def capacity(url: str, bodies: list[bytes], seconds: float, clients: int = 32) -> dict:
    records = generate(url, bodies, [Phase("warm-up", 1.0, connections=clients),
                                     Phase("capacity", seconds, connections=clients)])
    a = records.arrays()
    measured = a["phase"] == 1
    ok = measured & (a["kind"] == OK)
    return {"clients": clients, "rps": int(ok.sum()) / seconds, "p99_ms": percentile_ms(a["latency"][ok], 99),
            "not_ok": int((measured & (a["kind"] != OK)).sum())}


def overload(url: str, bodies: list[bytes], plan: Plan) -> dict:
    """Capacity, then normal -> burst -> normal at fixed rates; the timeline, phase summaries and checks."""
    cap = capacity(url, bodies, plan.capacity_s, plan.clients)
    normal, burst = plan.normal * cap["rps"], plan.multiplier * cap["rps"]
    phases = [Phase("before", plan.before_s, rate=normal), Phase("burst", plan.burst_s, rate=burst),
              Phase("after", plan.after_s, rate=normal)]
    records = generate(url, bodies, phases)
    report: dict[str, Any] = {
        "plan": plan.__dict__, "capacity": cap, "rates": {"normal": normal, "burst": burst},
        "generator": {"connections_opened": records.connections_opened, "unsent": records.unsent,
                      "unanswered": records.unanswered, "max_lag_s": records.max_lag_s,
                      "other_statuses": records.statuses}}
    report["timeline"] = timeline(records, phases, plan.bucket_s)
    report["phases"] = {p.name: summary(records, i, p.seconds) for i, p in enumerate(phases)}
    report["baseline_p99_ms"] = baseline_p99(report["timeline"], plan.before_s)
    report["recovery_s"] = recovery(report["timeline"], report["baseline_p99_ms"],
                                    plan.before_s + plan.burst_s, plan.recovery_factor)
    report["checks"] = checks(report, plan)
    return report


def baseline_p99(rows: list[dict], before_s: float) -> float | None:
    """The 200s' p99 before the burst: the median of the buckets' p99 (one bucket disturbed by other work
    on the machine does not move it), leaving out the first 0.5 s (settling) and the last 1 s (answers
    that overlap the burst)."""
    start, end = (0.5, before_s - 1.0) if before_s >= 2.5 else (0.0, before_s)
    p99s = [r["ok_p99_ms"] for r in rows if start <= r["t"] < end and r["ok_p99_ms"] is not None]
    return float(np.median(p99s)) if p99s else None


def summary(records: Records, phase: int, seconds: float) -> dict:
    a = records.arrays()
    mine = a["phase"] == phase
    kinds = a["kind"][mine]
    latency = a["latency"][mine]
    out: dict[str, Any] = {name: int((kinds == k).sum()) for k, name in enumerate(KIND_NAMES)}
    out["offered_rps"] = int(mine.sum()) / seconds
    out["ok_rps"] = out["ok"] / seconds
    out["ok_p50_ms"] = percentile_ms(latency[kinds == OK], 50)
    out["ok_p99_ms"] = percentile_ms(latency[kinds == OK], 99)
    out["refused_p50_ms"] = percentile_ms(latency[kinds == REFUSED], 50)
    out["refused_p99_ms"] = percentile_ms(latency[kinds == REFUSED], 99)
    return out


def timeline(records: Records, phases: list[Phase], bucket_s: float) -> list[dict]:
    """One row per bucket of send time."""
    a = records.arrays()
    total = sum(p.seconds for p in phases)
    ends = np.cumsum([p.seconds for p in phases])
    rows = []
    for start in np.arange(0.0, total, bucket_s):
        inside = (a["sent"] >= start) & (a["sent"] < start + bucket_s)
        kinds, latency = a["kind"][inside], a["latency"][inside]
        rows.append({
            "t": round(float(start), 3),
            "phase": phases[int(np.searchsorted(ends, start, side="right"))].name,
            "offered_rps": int(inside.sum()) / bucket_s, "ok_rps": int((kinds == OK).sum()) / bucket_s,
            "refused_rps": int((kinds == REFUSED).sum()) / bucket_s,
            "other": int((kinds == OTHER).sum()), "errors": int((kinds == ERROR).sum()),
            "unsent": int((kinds == UNSENT).sum()),
            "ok_p50_ms": percentile_ms(latency[kinds == OK], 50),
            "ok_p99_ms": percentile_ms(latency[kinds == OK], 99),
            "refused_p50_ms": percentile_ms(latency[kinds == REFUSED], 50),
            "refused_p99_ms": percentile_ms(latency[kinds == REFUSED], 99)})
    return rows


def recovery(rows: list[dict], baseline_ms: float | None, burst_end: float, factor: float) -> float | None:
    """Seconds from the burst's end to the first bucket from which the 200s' p99 stays within
    factor x the pre-burst p99 for two buckets in a row; None: not within the run."""
    if baseline_ms is None:
        return None
    after = [r for r in rows if r["t"] >= burst_end - 1e-9]

    def good(row: dict) -> bool:
        return row["ok_p99_ms"] is not None and row["ok_p99_ms"] <= factor * baseline_ms

    for i, row in enumerate(after[:-1]):
        if good(row) and good(after[i + 1]):
            return round(row["t"] - burst_end, 3)
    return None


def checks(report: dict, plan: Plan) -> list[dict]:
    burst, phases = report["phases"]["burst"], report["phases"]
    offered = burst["offered_rps"] / report["capacity"]["rps"]
    refused_p99 = burst["refused_p99_ms"]
    others = sum(p["other"] for p in phases.values())
    errors = sum(p["error"] for p in phases.values())
    unsent = sum(p["unsent"] for p in phases.values())
    recovered = report["recovery_s"]
    out = []

    def add(what: str, measured: object, goal: str, met: bool) -> None:
        out.append({"check": what, "measured": measured, "goal": goal, "met": bool(met)})

    add("refusals before the burst (a clean baseline)", phases["before"]["refused"], "0",
        phases["before"]["refused"] == 0)
    add("burst offered load, x capacity", round(offered, 2), f">= {0.9 * plan.multiplier:.1f}",
        offered >= 0.9 * plan.multiplier)
    add("burst refusals (503 queue_full + Retry-After)", burst["refused"], "> 0", burst["refused"] > 0)
    add("answers other than 200 / 503 queue_full", f"{others} {report['generator']['other_statuses']}", "0",
        others == 0)
    add("socket errors or requests unanswered at the end", errors, "0", errors == 0)
    add("requests not sent: all the generator's connections awaited answers", unsent, "0", unsent == 0)
    add("burst refusal p99 ms", None if refused_p99 is None else round(refused_p99, 1),
        f"<= {plan.fast_ms:g}", refused_p99 is not None and refused_p99 <= plan.fast_ms)
    baseline = report["baseline_p99_ms"]
    add(f"recovery s (200s' p99 back within {plan.recovery_factor}x pre-burst "
        f"{'-' if baseline is None else round(baseline, 1)} ms)", recovered,
        f"<= {plan.recovery_s:g}", recovered is not None and recovered <= plan.recovery_s)
    return out


def _ms(value: float | None) -> str:
    return f"{value:8.1f}" if value is not None else f"{'-':>8}"


def print_report(report: dict) -> None:
    cap = report["capacity"]
    print(f"capacity: {cap['rps']:.0f} req/s at {cap['clients']} clients "
          f"(p99 {_ms(cap['p99_ms']).strip()} ms); "
          f"normal {report['rates']['normal']:.0f} req/s, burst {report['rates']['burst']:.0f} req/s offered")
    print(f"\n{'t s':>5} {'phase':<7} {'offered/s':>9} {'200/s':>7} {'503/s':>7} {'other':>5} {'err':>4} "
          f"{'unsent':>6} {'200 p50':>8} {'200 p99':>8} {'503 p50':>8} {'503 p99':>8}"
          "   (latency ms, by send time)")
    for r in report["timeline"]:
        print(f"{r['t']:5.1f} {r['phase']:<7} {r['offered_rps']:9.0f} {r['ok_rps']:7.0f} "
              f"{r['refused_rps']:7.0f} {r['other']:5d} {r['errors']:4d} {r['unsent']:6d} "
              f"{_ms(r['ok_p50_ms'])} {_ms(r['ok_p99_ms'])} {_ms(r['refused_p50_ms'])} "
              f"{_ms(r['refused_p99_ms'])}")
    print(f"\n{'phase':<7} {'offered/s':>9} {'200/s':>7} {'refused':>8} {'other':>6} {'errors':>6} "
          f"{'unsent':>6} {'200 p50':>8} {'200 p99':>8} {'503 p50':>8} {'503 p99':>8}")
    for name, p in report["phases"].items():
        print(f"{name:<7} {p['offered_rps']:9.0f} {p['ok_rps']:7.0f} {p['refused']:8d} {p['other']:6d} "
              f"{p['error']:6d} {p['unsent']:6d} {_ms(p['ok_p50_ms'])} {_ms(p['ok_p99_ms'])} "
              f"{_ms(p['refused_p50_ms'])} {_ms(p['refused_p99_ms'])}")
    g = report["generator"]
    print(f"generator: {g['connections_opened']} connections opened, max lag {g['max_lag_s'] * 1e3:.0f} ms "
          f"behind its schedule")
    print("\nchecks:")
    for c in report["checks"]:
        print(f"  [{'met' if c['met'] else 'MISSED'}] {c['check']}: {c['measured']} (goal {c['goal']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20.0,
                        help="seconds of timeline: 1/4 before the burst, 1/4 burst, 1/2 after (default 20)")
    parser.add_argument("--model", choices=sorted(MODELS), default=HEAVY.name)
    parser.add_argument("--multiplier", type=float, default=4.0, help="burst rate x capacity (default 4)")
    parser.add_argument("--normal", type=float, default=0.5,
                        help="rate before and after the burst x capacity (default 0.5)")
    parser.add_argument("--queue-size", type=int, default=QUEUE_SIZE, help="GRU_MAX_QUEUE_SIZE (default 128)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    plan = Plan(before_s=args.duration / 4, burst_s=args.duration / 4, after_s=args.duration / 2,
                multiplier=args.multiplier, normal=args.normal)
    model = MODELS[args.model]
    work = args.results / "work"
    build(work, (model,))
    env = {"GRU_MAX_QUEUE_SIZE": str(args.queue_size)}
    print(f"gru serve: model {model.name} ({model.features} features, {model.steps} steps, hidden "
          f"{model.hidden}), {args.workers} worker(s), GRU_MAX_QUEUE_SIZE={args.queue_size}")
    with serving("gru-serve", work, args.workers, env) as server:
        report = overload(server.url(model.name), [request_body(model)], plan)
    report.update(model=model.name, workers=args.workers, queue_size=args.queue_size)
    print_report(report)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "overload.json").write_text(json.dumps(report, indent=2))
    return 0 if all(c["met"] for c in report["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
