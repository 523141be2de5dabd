"""Overload on every API: `python -m bench.overload --duration 8`.

For each API (native predict, native stream, v2 JSON, v2 binary, gRPC ModelInfer), each queue size (the
default GRU_MAX_QUEUE_SIZE and 16) and each burst (4x and 16x capacity), it starts `gru serve` as users
run it (bench/run.py `serving`, one worker) on a bench model, measures the capacity (200s/s with 32
closed-loop clients, on that API, in that server), then drives it open loop (bench/loadgen.py, over gRPC
bench/grpc_loadgen.py: a fixed rate, whatever the server answers) at `--normal` x capacity, the burst,
and `--normal` again (a quarter, half and quarter of `--duration`). One row per run (over gRPC a 200 is
an OK status, a 503 `queue_full` the status service/errors.py gives it, with `retry-after` metadata):

- goodput: 200s answered per second during the burst, leaving out its first second (the burst's new
  connections), against the capacity;
- refusals: how many, and their p50/p99 latency for those sent after the burst's first second (and, in
  the JSON, the median of the 0.5 s buckets' p99, which one stalled half-second does not move);
- the 200s' p99 latency against the bound a bounded queue promises: the queue's wait (queue / capacity,
  at most GRU_MAX_QUEUE_WAIT_MS) plus one batch (batch / capacity);
- other answers, socket errors, requests the generator could not send.

Checks per run: offered rate reached (>= 90 % of the burst rate); goodput >= 90 % of capacity; every
refusal a 503 `queue_full` with Retry-After and its p99 <= 10 ms; no other status, no socket error,
nothing unsent; the 200s' p99 within the bound. Exit status 1 when a check fails. Writes
bench/results/overload.json (rows, each with its timeline per 0.5 s of send time).

The model is `heavy` (bench/models.py): inference, not HTTP, limits its capacity, as in any overload that
a queue can help with (a server whose HTTP layer alone is saturated at 1x cannot read 16x its capacity).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench import grpc_loadgen, loadgen
from bench.grpc_load import GRPC_METHOD, infer_request
from bench.loadgen import ERROR, KIND_NAMES, OK, OTHER, REFUSED, UNSENT, Body, Phase, Records
from bench.loadgen import percentile_ms as pct
from bench.models import HEAVY, MID, SMALL, BenchModel, build
from bench.placement import PLACEMENTS, loadavg, pin_tree, placements, this_thread_on
from bench.run import RESULTS, Running, serving
from service.settings import Settings

MODELS = {m.name: m for m in (HEAVY, MID, SMALL)}
APIS = ("native", "stream", "v2-json", "v2-binary", "grpc")
# The service's defaults (what `gru serve` runs with when GRU_* is unset)
DEFAULT_QUEUE, MAX_BATCH, MAX_WAIT_MS = (Settings.model_fields[name].default for name in
                                         ("max_queue_size", "max_batch_size", "max_queue_wait_ms"))


@dataclass(frozen=True)
class Plan:
    capacity_s: float = 3.0  # closed loop, `clients` clients (after 1 s of warm-up)
    clients: int = 32
    before_s: float = 2.0
    burst_s: float = 4.0
    after_s: float = 2.0
    multiplier: float = 4.0
    normal: float = 0.5  # the load before and after the burst, x capacity
    settle_s: float = 1.0  # the burst's first second: new connections; left out of the burst figures
    bucket_s: float = 0.5
    goodput: float = 0.9  # goal: 200s/s during the burst >= this x capacity
    refusal_p99_ms: float = 10.0


def api_request(api: str, model: BenchModel, seed: int = 0) -> tuple[str, Body]:
    """The path and body of one single-sequence request on `api` (the stream: a first chunk; gRPC: the
    method and a serialized ModelInferRequest)."""
    x = np.random.default_rng(seed).standard_normal((1, model.steps, model.features)).astype(np.float32)
    if api == "grpc":
        return GRPC_METHOD, Body(infer_request(model.name, x), headers=())
    if api == "native":
        return f"/models/{model.name}/predict", Body(json.dumps({"sequences": x.round(4).tolist()}).encode())
    if api == "stream":
        return f"/models/{model.name}/stream", Body(json.dumps({"steps": x[0].round(4).tolist()}).encode())
    tensor: dict[str, Any] = {"name": "x", "shape": list(x.shape), "datatype": "FP32"}
    path = f"/v2/models/{model.name}/infer"
    if api == "v2-json":
        return path, Body(json.dumps({"inputs": [tensor | {"data": x.round(4).ravel().tolist()}]}).encode())
    header = json.dumps({"inputs": [tensor | {"parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
    headers = (("Content-Type", "application/octet-stream"),
               ("Inference-Header-Content-Length", str(len(header))))
    return path, Body(header + x.astype("<f4").tobytes(), headers)


def api_url(api: str, path: str, port: int, grpc_port: int | None) -> str:
    """Where `api_request`'s path goes: the server's HTTP port, or (grpc://) its gRPC port."""
    return f"grpc://127.0.0.1:{grpc_port}{path}" if api == "grpc" else f"http://127.0.0.1:{port}{path}"


def drive(url: str, bodies: list[Body], phases: list[Phase], max_connections: int = 1024) -> Records:
    """The phases on bench/loadgen.py, or for a grpc:// url on bench/grpc_loadgen.py."""
    if url.startswith("grpc://"):
        return grpc_loadgen.generate(url, [body.content for body in bodies], phases, max_connections)
    return loadgen.generate(url, bodies, phases, max_connections)


def capacity(url: str, bodies: list[Body], seconds: float, clients: int = 32) -> dict:
    records = drive(url, bodies, [Phase("warm-up", 1.0, connections=clients),
                                  Phase("capacity", seconds, connections=clients)])
    a = records.arrays()
    measured = a["phase"] == 1
    ok = measured & (a["kind"] == OK)
    return {"clients": clients, "rps": int(ok.sum()) / seconds, "p99_ms": pct(a["latency"][ok], 99),
            "not_ok": int((measured & (a["kind"] != OK)).sum())}


def served_rate(server: Running, api: str, model: BenchModel, seconds: float) -> tuple[float, float]:
    """`api`'s 200s/s with 32 closed-loop clients, and the server's CPU µs per request (warm-up
    included)."""
    cpu = ThreadCpu(server.process.pid)
    path, body = api_request(api, model)
    rps = capacity(api_url(api, path, server.port, server.grpc_port), [body], seconds)["rps"]
    cpu.mark("run")
    cores = cpu.parts["run"]["main"] + cpu.parts["run"]["others"]
    return rps, 1e6 * cores * (seconds + 1.0) / (rps * seconds)


def overload(url: str, bodies: list[Body], plan: Plan, queue: int, max_batch: int = MAX_BATCH,
             server_pid: int | None = None) -> dict:
    """Capacity, then normal -> burst -> normal at fixed rates: the row, its checks and its timeline.
    With `server_pid`, also the CPU (cores) its main thread and its other threads (the inference thread)
    got in each part: on a shared machine that says whether the model was starved of CPU."""
    cpu = ThreadCpu(server_pid)
    cap = capacity(url, bodies, plan.capacity_s, plan.clients)
    cpu.mark("capacity")
    rates = {"normal": plan.normal * cap["rps"], "burst": plan.multiplier * cap["rps"]}
    phases = [Phase("before", plan.before_s, rate=rates["normal"]),
              Phase("burst", plan.burst_s, rate=rates["burst"]),
              Phase("after", plan.after_s, rate=rates["normal"])]
    # Enough connections (gRPC: calls) for every request a full default queue holds, plus the refused ones.
    records = drive(url, bodies, phases, max_connections=4 * queue + 1024)
    cpu.mark("open loop")
    row = burst_row(records, plan, cap["rps"], queue, max_batch)
    rows = timeline(records, phases, plan.bucket_s)
    # Robust to one stalled half-second (on a shared machine the generator itself stalls now and then).
    settled = [r["refused_p99_ms"] for r in rows if r["refused_p99_ms"] is not None
               and plan.before_s + plan.settle_s <= r["t"] < plan.before_s + plan.burst_s]
    row["refused_p99_bucket_median_ms"] = float(np.median(settled)) if settled else None
    generator = {"connections_opened": records.connections_opened, "max_lag_s": records.max_lag_s,
                 "other_statuses": records.statuses, "other_examples": records.examples}
    report: dict[str, Any] = {"capacity": cap, "rates": rates, **row, "generator": generator,
                              "server_cpu_cores": cpu.parts, "loadavg": loadavg(),
                              "timeline": rows}
    report["checks"] = checks(report, plan)
    return report


class ThreadCpu:
    """CPU seconds per wall second of a process's main thread and of its other threads, per part."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.parts: dict[str, dict[str, float]] = {}
        self._last = (time.perf_counter(), *self._sample())

    def _sample(self) -> tuple[float, float]:
        main = others = 0.0
        for stat in Path(f"/proc/{self.pid}/task").glob("*/stat") if self.pid else []:
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            if stat.parent.name == str(self.pid):
                main += seconds
            else:
                others += seconds
        return main, others

    def mark(self, part: str) -> None:
        now, main, others = time.perf_counter(), *self._sample()
        wall = now - self._last[0]
        self.parts[part] = {"main": round((main - self._last[1]) / wall, 2),
                            "others": round((others - self._last[2]) / wall, 2)}
        self._last = (now, main, others)


def burst_row(records: Records, plan: Plan, capacity_rps: float, queue: int, max_batch: int) -> dict:
    a = records.arrays()
    kind, sent, latency = a["kind"], a["sent"], a["latency"]
    start, end = plan.before_s, plan.before_s + plan.burst_s
    settled = start + plan.settle_s
    answered = sent + latency
    in_burst = (sent >= start) & (sent < end)
    late = (sent >= settled) & (sent < end)
    ok_answered = (kind == OK) & (answered >= settled) & (answered < end)
    refused = late & (kind == REFUSED)
    batch = min(max_batch, queue)
    return {
        "offered_rps": int(in_burst.sum()) / plan.burst_s,
        "goodput_rps": int(ok_answered.sum()) / (end - settled),
        "refused": int((in_burst & (kind == REFUSED)).sum()),
        "refused_p50_ms": pct(latency[refused], 50), "refused_p99_ms": pct(latency[refused], 99),
        "ok_p50_ms": pct(latency[in_burst & (kind == OK)], 50),
        "ok_p99_ms": pct(latency[in_burst & (kind == OK)], 99),
        "wait_bound_ms": wait_bound_ms(queue, batch, capacity_rps),
        **{name: int((kind == k).sum()) for k, name in enumerate(KIND_NAMES) if k in (OTHER, ERROR, UNSENT)},
    }


def wait_bound_ms(queue: int, batch: int, rps: float) -> float:
    """What a bounded queue promises an admitted request at `rps`: the queue's wait (at most
    GRU_MAX_QUEUE_WAIT_MS) plus one batch."""
    return min(1e3 * queue / rps, MAX_WAIT_MS) + 1e3 * batch / rps


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
            "phase": phases[min(int(np.searchsorted(ends, start, side="right")), len(phases) - 1)].name,
            "offered_rps": int(inside.sum()) / bucket_s, "ok_rps": int((kinds == OK).sum()) / bucket_s,
            "refused_rps": int((kinds == REFUSED).sum()) / bucket_s,
            "other": int((kinds == OTHER).sum()), "errors": int((kinds == ERROR).sum()),
            "unsent": int((kinds == UNSENT).sum()),
            "ok_p50_ms": pct(latency[kinds == OK], 50), "ok_p99_ms": pct(latency[kinds == OK], 99),
            "refused_p50_ms": pct(latency[kinds == REFUSED], 50),
            "refused_p99_ms": pct(latency[kinds == REFUSED], 99)})
    return rows


def checks(report: dict, plan: Plan) -> list[dict]:
    cap = report["capacity"]["rps"]
    out = []

    def add(what: str, measured: object, goal: str, met: bool) -> None:
        out.append({"check": what, "measured": measured, "goal": goal, "met": bool(met)})

    add("offered, x capacity", round(report["offered_rps"] / cap, 2), f">= {0.9 * plan.multiplier:.1f}",
        report["offered_rps"] >= 0.9 * plan.multiplier * cap)
    add("goodput, x capacity", round(report["goodput_rps"] / cap, 2), f">= {plan.goodput}",
        report["goodput_rps"] >= plan.goodput * cap)
    p99 = report["refused_p99_ms"]
    add("refusal p99 ms (after the burst's first second)", None if p99 is None else round(p99, 1),
        f"<= {plan.refusal_p99_ms:g}", p99 is None or p99 <= plan.refusal_p99_ms)
    add("answers other than 200 / 503 queue_full with Retry-After, socket errors, unsent",
        (report["other"], report["error"], report["unsent"]), "(0, 0, 0)",
        report["other"] == report["error"] == report["unsent"] == 0)
    ok_p99 = report["ok_p99_ms"]
    add("200s' p99 ms within (queue + one batch) / capacity", None if ok_p99 is None else round(ok_p99, 1),
        f"<= {report['wait_bound_ms']:.0f}", ok_p99 is not None and ok_p99 <= report["wait_bound_ms"])
    return out


def _ms(value: float | None) -> str:
    return f"{value:7.1f}" if value is not None else f"{'-':>7}"


HEADER = (f"{'api':<9} {'queue':>5} {'burst':>5} {'cap/s':>6} {'offer/s':>7} {'200/s':>6} {'good':>5} "
          f"{'503s':>6} {'503 p50':>7} {'503 p99':>7} {'200 p99':>7} {'bound':>7} {'oth/err/uns':>11} "
          f"{'model cpu':>9} {'cores':<6} {'load':>5}  checks")


def format_row(row: dict) -> str:
    cap = row["capacity"]["rps"]
    failed = [c["check"].split(",")[0].split(" (")[0] for c in row["checks"] if not c["met"]]
    return (f"{row['api']:<9} {row['queue']:>5} {row['multiplier']:>4g}x {cap:6.0f} "
            f"{row['offered_rps']:7.0f} {row['goodput_rps']:6.0f} {row['goodput_rps'] / cap:5.0%} "
            f"{row['refused']:6d} "
            f"{_ms(row['refused_p50_ms'])} {_ms(row['refused_p99_ms'])} {_ms(row['ok_p99_ms'])} "
            f"{row['wait_bound_ms']:7.0f} {row['other']:>3}/{row['error']}/{row['unsent']:<5} "
            f"{_cores(row['server_cpu_cores'])} {row['placement']:<6} {row['loadavg'].split()[0]:>5}  "
            + ("met" if not failed else "MISSED: " + "; ".join(failed)))


def _cores(cpu: dict) -> str:
    """The inference thread's CPU (cores) at capacity -> in the open-loop run."""
    parts = [cpu.get(p, {}).get("others") for p in ("capacity", "open loop")]
    return f"{parts[0] or 0:.2f}>{parts[1] or 0:.2f}".rjust(9)


def api_capacities(server: Running, model: BenchModel, seconds: float,
                   rounds: int = 3) -> dict[str, list[dict]]:
    """Each API's 200s/s with 32 closed-loop clients and the server's CPU per request, in one server,
    the APIs in turn `rounds` times (a shift in the machine's load then hits every API alike). On a
    shared machine the CPU per request is the steadier figure: req/s = the CPU the server gets / it."""
    out: dict[str, list[dict]] = {api: [] for api in APIS}
    for _ in range(rounds):
        for api in APIS:
            rps, cpu_us = served_rate(server, api, model, seconds)
            out[api].append({"rps": rps, "cpu_us_per_req": cpu_us})
    return out


def print_capacities(model: BenchModel, rows: dict[str, list[dict]]) -> None:
    def median(api: str, key: str) -> float:
        return float(np.median([r[key] for r in rows[api]]))

    print(f"{model.name}, 32 clients, one worker, single-sequence requests; per round: 200s/s (server CPU "
          "us per request); medians and x native")
    for api, runs in rows.items():
        rounds = " ".join(f"{r['rps']:6.0f} ({r['cpu_us_per_req']:4.0f})" for r in runs)
        rps, cpu = median(api, "rps"), median(api, "cpu_us_per_req")
        print(f"  {api:<9} {rounds}   {rps:6.0f} req/s {rps / median('native', 'rps'):5.2f}x   "
              f"{cpu:4.0f} us/req {cpu / median('native', 'cpu_us_per_req'):5.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0,
                        help="seconds of open loop per run: 1/4 before the burst, 1/2 burst, 1/4 after")
    parser.add_argument("--model", choices=sorted(MODELS), default=HEAVY.name)
    parser.add_argument("--apis", default=",".join(APIS))
    parser.add_argument("--queue-sizes", default=f"{DEFAULT_QUEUE},16",
                        help=f"GRU_MAX_QUEUE_SIZE values ({DEFAULT_QUEUE}: the default, left unset)")
    parser.add_argument("--multipliers", default="4,16", help="burst rates, x capacity")
    parser.add_argument("--normal", type=float, default=0.5, help="rate before and after, x capacity")
    parser.add_argument("--placements", default=",".join(PLACEMENTS),
                        help="core placements, interleaved (bench/placement.py; default split,shared)")
    parser.add_argument("--capacity-only", action="store_true",
                        help="only each API's capacity at 32 clients in one server, in turn (--rounds)")
    parser.add_argument("--rounds", type=int, default=5, help="with --capacity-only (default 5)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    model = MODELS[args.model]
    work = args.results / "work"
    build(work, (model,))
    if args.capacity_only:
        with serving("gru-serve", work, 1, grpc=True) as server:
            rates = api_capacities(server, model, args.duration / 2, args.rounds)
        print_capacities(model, rates)
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "capacity.json").write_text(json.dumps({"model": model.name, "rps": rates}, indent=2))
        return 0
    print(f"gru serve: model {model.name} ({model.features} features, {model.steps} steps, hidden "
          f"{model.hidden}), 1 worker; one fresh server per row. ms; 200/s and 503 latency: after the "
          "burst's first second; model cpu: cores of the server's other threads (the inference thread) "
          f"while capacity was measured > during the open-loop run; load: 1-min load average\n\n{HEADER}",
          flush=True)
    rows = []
    for api in args.apis.split(","):
        path, body = api_request(api, model)
        for queue in (int(q) for q in args.queue_sizes.split(",")):
            env = {} if queue == DEFAULT_QUEUE else {"GRU_MAX_QUEUE_SIZE": str(queue)}
            # the generator stands in for many clients from one address: gRPC's per-client cap on unary
            # calls open (256) would refuse what the queue is there to judge (limits guide)
            env |= {"GRU_GRPC_MAX_STREAMS_PER_CLIENT": "100000"} if api == "grpc" else {}
            for multiplier, place in itertools.product((float(m) for m in args.multipliers.split(",")),
                                                       placements(args.placements)):
                plan = Plan(before_s=args.duration / 4, burst_s=args.duration / 2, after_s=args.duration / 4,
                            multiplier=multiplier, normal=args.normal)
                with serving("gru-serve", work, 1, env, grpc=api == "grpc") as server, \
                        this_thread_on(place.generator):
                    pin_tree(server.process.pid, place.server)
                    row = overload(api_url(api, path, server.port, server.grpc_port), [body], plan, queue,
                                   server_pid=server.process.pid)
                rows.append({"api": api, "queue": queue, "multiplier": multiplier, "placement": place.name,
                             "plan": asdict(plan), **row})
                print(format_row(rows[-1]), flush=True)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "overload.json").write_text(json.dumps({"model": model.name, "rows": rows}, indent=2))
    missed = [c for row in rows for c in row["checks"] if not c["met"]]
    print(f"\n{len(rows)} runs, {len(missed)} check(s) missed; details in {args.results / 'overload.json'}")
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
