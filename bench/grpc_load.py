"""gRPC ModelInfer against the HTTP v2 JSON path (and native predict) on one server in one run, with the
gRPC floor beside them.

    python -m bench.grpc_load --duration 10 --clients 32 --rounds 2 [--model mid --sequences 64]

Starts `gru serve` (a bench model, --workers, gRPC on its own port) and drives each API in turn,
`rounds` times, with h2load (nghttp2's load generator, C; Debian: apt-get install -y nghttp2-client):
the same tool, clients and request (`--sequences` sequences) for every API, HTTP/1.1 keep-alive for
REST and one HTTP/2 connection per client for gRPC (one stream in flight each), so that the load
generator costs alike. A gRPC request is the raw_input_contents form tritonclient sends. Every answer
is checked through the server's own count (gru_requests_total by api and status): h2load sees only
HTTP statuses, and gRPC reports errors in trailers. One tritonclient.grpc call first checks that the
answer equals native predict's. `grpc-floor` is bench/baselines/grpc_floor.py (grpc.aio answering a
constant, as many processes as workers): what grpcio's Python server costs per call before any work.
Prints a table; writes bench/results/grpc_load-MODEL-SEQUENCES.json.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.models import MODELS, build
from bench.placement import PLACEMENTS, loadavg, pin_tree, pinned, placements
from bench.run import RESULTS, free_port, process_tree_cpu_s, serving
from service.api.middleware import FLUSH_INTERVAL_S

GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per API and round")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="each API this many times, interleaved")
    parser.add_argument("--model", choices=[m.name for m in MODELS], default="small")
    parser.add_argument("--sequences", type=int, default=1, help="sequences per request (default 1)")
    parser.add_argument("--placements", default=",".join(PLACEMENTS),
                        help="core placements, interleaved (bench/placement.py; default split,shared)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if shutil.which("h2load") is None:
        sys.exit("bench.grpc_load: the load generator `h2load` is not installed; on Debian/Ubuntu: "
                 "sudo apt-get install -y nghttp2-client")
    args.results.mkdir(parents=True, exist_ok=True)
    model = next(m for m in MODELS if m.name == args.model)
    bundles = build(args.results / "work", (model,))
    shape = (args.sequences, model.steps, model.features)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    rows = []
    with serving("gru-serve", args.results / "work", args.workers, grpc=True) as server, \
            grpc_floor(args.workers) as (floor, floor_port), tempfile.TemporaryDirectory() as scratch:
        base, grpc_port = f"http://127.0.0.1:{server.port}", server.grpc_port
        assert grpc_port is not None
        check_answer(base, grpc_port, model.name, x)
        apis = bodies(Path(scratch), model.name, x, base, grpc_port)
        url, body, headers, h1 = apis["grpc"]
        apis["grpc-floor"] = (url.replace(f":{grpc_port}/", f":{floor_port}/"), body, headers, h1)
        for round_, place, (api, (url, body, headers, h1)) in itertools.product(
                range(args.rounds), placements(args.placements), apis.items()):
            pid = floor.pid if api == "grpc-floor" else server.process.pid
            pin_tree(pid, place.server)
            h2load(url, body, headers, h1, args.clients, 1.0, Path(scratch) / "warm.log", place.generator)
            before_cpu, before = process_tree_cpu_s(pid), answered(base)
            result = h2load(url, body, headers, h1, args.clients, args.duration, Path(scratch) / "log",
                            place.generator)
            cpu, after = process_tree_cpu_s(pid) - before_cpu, answered(base)
            counted = {k: after.get(k, 0) - before.get(k, 0) for k in after if k[0] == API_LABEL[api]}
            row = {"api": api, "placement": place.name, "round": round_, "clients": args.clients, **result,
                   "server_ok": counted.pop((API_LABEL[api], "200"), 0),
                   "server_not_ok": sum(counted.values()),
                   "cpu_us_per_req": 1e6 * cpu / max(result["requests"], 1), "loadavg": loadavg()}
            rows.append(row)
            print(format_row(row), flush=True)
    report = {"model": model.name, "sequences_per_request": args.sequences, "workers": args.workers,
              "duration_s": args.duration, "cores": os.cpu_count(), "bundle": str(bundles[model.name]),
              "rows": rows,
              "summary": summary(rows)}
    name = f"grpc_load-{model.name}-{args.sequences}.json"
    (args.results / name).write_text(json.dumps(report, indent=2))
    print_summary(report["summary"])
    return 0


API_LABEL = {"grpc": "grpc", "v2-json": "v2", "native": "native", "grpc-floor": "-"}  # gru_requests_total's


@contextlib.contextmanager
def grpc_floor(workers: int) -> Iterator[tuple[subprocess.Popen, int]]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.baselines.grpc_floor", str(port), str(workers)],
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not port_open(port):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the gRPC floor server did not start")
            time.sleep(0.1)
        yield process, port
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # its own session: the parent and its worker processes
        process.wait()


def port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def bodies(scratch: Path, model: str, x: np.ndarray, base: str, grpc_port: int) -> dict[str, tuple]:
    """api -> (url, body file, headers, HTTP/1.1?), each sending the sequence `x` (1, time, features)."""
    message = infer_request(model, x)
    files = {"grpc": b"\0" + len(message).to_bytes(4, "big") + message,  # gRPC's length-prefixed frame
             "v2-json": json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                                "data": x.reshape(-1).tolist()}]}).encode(),
             "native": json.dumps({"sequences": x.tolist()}).encode()}
    for api, content in files.items():
        (scratch / f"{api}.body").write_bytes(content)
    json_headers = ["content-type: application/json"]
    return {
        "grpc": (f"http://127.0.0.1:{grpc_port}{GRPC_METHOD}", scratch / "grpc.body",
                 ["content-type: application/grpc", "te: trailers"], False),
        "v2-json": (f"{base}/v2/models/{model}/infer", scratch / "v2-json.body", json_headers, True),
        "native": (f"{base}/models/{model}/predict", scratch / "native.body", json_headers, True),
    }


def infer_request(model: str, x: np.ndarray) -> bytes:
    """A serialized ModelInferRequest of the sequences `x` (n, time, features): the raw_input_contents form
    that tritonclient sends."""
    from service.grpc.generated import grpc_service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="x", datatype="FP32", shape=list(x.shape))
    request.raw_input_contents.append(x.astype("<f4").tobytes())
    return request.SerializeToString()


def check_answer(base: str, grpc_port: int, name: str, x: np.ndarray) -> None:
    """The official client's answer over gRPC equals native predict's for the benchmark's sequence."""
    import tritonclient.grpc as triton

    with triton.InferenceServerClient(f"127.0.0.1:{grpc_port}") as client:
        tensor = triton.InferInput("x", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        got = client.infer(name, [tensor]).as_numpy("output")
    native = httpx.post(f"{base}/models/{name}/predict", json={"sequences": x.tolist()}).json()
    expected = np.array([p["probabilities"] for p in native["predictions"]], np.float32)
    if np.abs(got - expected).max() > 1e-6:
        raise SystemExit(f"gRPC and native predict disagree: {got} vs {expected}")


def h2load(url: str, body: Path, headers: list[str], h1: bool, clients: int, duration: float,
           log: Path, cores: frozenset[int] | None = None) -> dict:
    """h2load's req/s and latency percentiles (run on `cores` if given)."""
    command = ["h2load", "-c", str(clients), "-m", "1", "-D", str(max(1, round(duration))), "-d", str(body),
               "--log-file", str(log), *(["--h1"] if h1 else [])]
    for header in headers:
        command += ["-H", header]
    log.unlink(missing_ok=True)  # h2load appends to it
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True,
                         preexec_fn=pinned(cores) if cores else None).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
    if done is None:
        raise RuntimeError(f"h2load printed no request counts:\n{out}")
    latency_us = np.loadtxt(log, usecols=2, ndmin=1) if log.stat().st_size else np.zeros(1)
    return {"requests": int(done[1]), "succeeded": int(done[2]), "failed": int(done[3]),
            "rps": int(done[1]) / duration, "p50_ms": float(np.percentile(latency_us, 50)) / 1e3,
            "p99_ms": float(np.percentile(latency_us, 99)) / 1e3}


def answered(base: str) -> dict[tuple[str, str], float]:
    """gru_requests_total by (api, status), every worker's (another worker's requests are written on its
    flush timer: wait for it)."""
    time.sleep(FLUSH_INTERVAL_S + 0.2)
    counts: dict[tuple[str, str], float] = {}
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith("gru_requests_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            key = (labels["api"], labels["status"])
            counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def summary(rows: list[dict]) -> dict:
    """Per placement: each API's medians over the rounds, and the target."""
    return {place: _summary([r for r in rows if r["placement"] == place])
            for place in dict.fromkeys(r["placement"] for r in rows)}


def _summary(rows: list[dict]) -> dict:
    by_api = {api: [r for r in rows if r["api"] == api] for api in dict.fromkeys(r["api"] for r in rows)}
    out: dict[str, dict[str, Any]] = {api: {"rps": float(np.median([r["rps"] for r in rs])),
                 "p99_ms": float(np.median([r["p99_ms"] for r in rs])),
                 "cpu_us_per_req": float(np.median([r["cpu_us_per_req"] for r in rs]))}
           for api, rs in by_api.items()}
    if "grpc" in out and "v2-json" in out:
        ratio = out["grpc"]["rps"] / out["v2-json"]["rps"]
        out["target"] = {"what": "gRPC ModelInfer req/s >= the HTTP v2 JSON path's", "ratio": ratio,
                         "met": ratio >= 1.0}
    return out


def format_row(row: dict) -> str:
    checked = "" if row["api"] == "grpc-floor" else \
        f"server: {row['server_ok']:.0f} ok, {row['server_not_ok']:.0f} not  "
    return (f"{row['api']:10s} {row['placement']:<6} round {row['round']}  {row['clients']:3d} clients  "
            f"{row['rps']:8.0f} req/s  "
            f"p50 {row['p50_ms']:6.2f} ms  p99 {row['p99_ms']:6.2f} ms  {checked}"
            f"{row['cpu_us_per_req']:5.0f} CPU µs/req  load {row['loadavg']}")


def print_summary(summary: dict) -> None:
    for place, apis in summary.items():
        print(f"\nmedian over rounds, placement {place}:")
        for api, figures in apis.items():
            if api != "target":
                print(f"  {api:10s} {figures['rps']:8.0f} req/s  p99 {figures['p99_ms']:6.2f} ms  "
                      f"{figures['cpu_us_per_req']:5.0f} CPU µs/req (server processes)")
        if "target" in apis:
            target = apis["target"]
            print(f"  {target['what']}: {target['ratio']:.2f}x  {'met' if target['met'] else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
