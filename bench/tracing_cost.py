"""What tracing costs: `python -m bench.tracing_cost --rounds 12 --duration 5 [--baseline CHECKOUT]`.

Starts `gru serve` (one worker, the `small` bench model, bench/models.py) side by side with tracing off,
on with every request sampled, and on with 1% sampled (OTEL_TRACES_SAMPLER=parentbased_traceidratio),
each exporting over OTLP/gRPC to a receiver in this process (opentelemetry-proto's TraceService), and with
`--baseline` also the `gru serve` of another checkout (e.g. `git worktree add /tmp/before <commit>`);
`--only off,baseline` runs some of them.
wrk drives them in interleaved rounds (32 clients, one-sequence native predict; the order alternates
every round), so that load from elsewhere on the machine falls on all of them alike.

Prints, per server, the median req/s and the median CPU of the server's processes per request (less
moved by other load than req/s), and for each the geometric mean over rounds of its req/s ratio to
"off". Writes bench/results/tracing_cost.json (every round).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as collector
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as collector_grpc

from bench.models import SMALL, build
from bench.run import Running, free_port, load, process_tree_cpu_s, request_body, serving

CLIENTS = 32


class Receiver(collector_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that counts the spans it gets."""

    def __init__(self) -> None:
        self.spans, self.port = 0, free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        collector_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - the service's method name
        self.spans += sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
        return collector.ExportTraceServiceResponse()


def servers(receiver: Receiver, baseline: Path | None) -> dict[str, dict[str, str]]:
    """Name -> environment of each server."""
    exporting = {"GRU_TRACING": "true", "GRU_TRACING_ENDPOINT": f"http://127.0.0.1:{receiver.port}"}
    here = str(Path(__file__).resolve().parents[1])
    found = {"off": {"PYTHONPATH": here}, "on": {"PYTHONPATH": here, **exporting},
             "on, 1% sampled": {"PYTHONPATH": here, **exporting, "OTEL_TRACES_SAMPLER_ARG": "0.01",
                                "OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}}
    if baseline is not None:
        found = {f"baseline ({baseline})": {"PYTHONPATH": str(baseline)}, **found}
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round and server")
    parser.add_argument("--baseline", type=Path, help="another checkout's tree to compare with (tracing off)")
    parser.add_argument("--only", help="the servers to run, comma-separated (default: all): off,baseline")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "gru-bench")
    parser.add_argument("--results", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    build(args.work, (SMALL,))
    body = args.work / "tracing_body.json"
    body.write_bytes(request_body(SMALL))
    receiver = Receiver()
    running: dict[str, Running] = {}
    rows: dict[str, list[dict[str, float]]] = {}
    try:
        for name, env in servers(receiver, args.baseline).items():
            if args.only and name.split(" (")[0] not in args.only.split(","):
                continue
            running[name] = serving("gru-serve", args.work, 1, env)
            rows[name] = []
        for round_ in range(args.rounds):
            for name in list(running) if round_ % 2 == 0 else reversed(list(running)):
                server = running[name]
                cpu = process_tree_cpu_s(server.process.pid)
                result = load(server.url(SMALL.name), body, CLIENTS, args.duration)
                used = process_tree_cpu_s(server.process.pid) - cpu
                rows[name].append({"rps": result["rps"], "cpu_us": used / result["requests"] * 1e6,
                                   "errors": result["errors"]})
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {r[-1]['rps']:.0f}/s" for n, r in rows.items()),
                  file=sys.stderr)
    finally:
        for server in running.values():
            server.__exit__()
        receiver.server.stop(None)
    print("| server | req/s (median) | server CPU per request (median) | req/s to off (geometric mean) |")
    print("|---|---|---|---|")
    for name, runs in rows.items():
        ratio = statistics.geometric_mean(r["rps"] / o["rps"] for r, o in zip(runs, rows["off"], strict=True))
        print(f"| {name} | {statistics.median(r['rps'] for r in runs):,.0f} | "
              f"{statistics.median(r['cpu_us'] for r in runs):.0f} µs | {ratio:.3f} |")
    print(f"spans received: {receiver.spans}; load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "tracing_cost.json").write_text(json.dumps({"clients": CLIENTS, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
