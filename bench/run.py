"""The serving benchmark, one command: `make bench DURATION=10` (or `python -m bench.run --duration 10`).

Trains and exports the two bench models (bench/models.py), measures in-process onnxruntime (batch 1 and
the max batch: the compute ceiling), then starts each system as users run it and drives it with wrk at
concurrency 1, 8, 32, 128 with single-sequence requests: `gru serve` (dynamic batching), the HTTP floor
(bench/baselines/bare_app.py: the same server, settings and workers answering a constant; small model's
bodies only) and the two plain apps in bench/baselines/. Then, on the same gru-serve: 64-sequence
requests of the mid model as JSON and as binary float32 (8 clients), and gRPC ModelInfer against the
HTTP JSON paths at 32 clients (bench/grpc_load.py, with h2load). Also measures one worker's idle RSS with
both models and its start to ready. Prints the table and the targets; writes bench/results/bench.json,
bench/results/bench.md (the table of docs/results/performance.md) and bench/results/bench.png.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench.inprocess import sequences_per_second
from bench.models import MID, MODELS, SMALL, build
from bench.placement import PLACEMENTS, Placement, loadavg, pin_tree, pinned, placements

RESULTS = Path(__file__).parent / "results"
LUA = Path(__file__).parent / "post.lua"
CONCURRENCY = (1, 8, 32, 128)
SYSTEMS = ("gru-serve", "bare-asgi", "fastapi-ort", "fastapi-torch")
LARGE = (MID, 64, 8)  # 64-sequence requests of the mid model, 8 clients: JSON against binary
BINARY_HEADERS = ("Content-Type: application/octet-stream",)
GRPC_CLIENTS = 32


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load level (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of every server (default 2)")
    parser.add_argument("--concurrency", default=",".join(map(str, CONCURRENCY)))
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--placements", default=",".join(PLACEMENTS),
                        help="core placements, interleaved (bench/placement.py; default split,shared)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("bench: the HTTP load generator `wrk` is not installed; on Debian/Ubuntu: "
                 "sudo apt-get install -y wrk")
    args.results.mkdir(parents=True, exist_ok=True)
    bundles = build(args.results / "work")
    started = time.perf_counter()
    report: dict = {"duration_s": args.duration, "workers": args.workers, "cores": os.cpu_count(),
                    "loadavg_start": os.getloadavg()[0], "inprocess": inprocess(bundles),
                    "startup": startup(bundles["small"].parent.parent), "http": [], "large": [], "grpc": []}
    print_inprocess(report)
    levels = [int(c) for c in args.concurrency.split(",")]
    places = placements(args.placements)
    report["placements"] = [p.describe() for p in places]
    work = args.results / "work"
    grpc_port = free_port()
    with contextlib.ExitStack() as stack:
        # All systems up at once, measured in turn at each level: drift in the machine's load
        # (other work on a shared box) then hits every system alike.
        servers = {system: stack.enter_context(serving(system, work, args.workers,
                                                       {"GRU_GRPC_PORT": str(grpc_port)}))
                   for system in args.systems.split(",")}
        for model in MODELS:
            body = work / f"{model.name}.body.json"
            body.write_bytes(request_body(model))
            for clients in levels:
                for place in places:
                    for system, server in servers.items():
                        if system == "bare-asgi" and model is not SMALL:
                            continue  # the floor answers a small model's answer, for the small model's bodies
                        row = measure(server, model.name, body, (), clients, args.duration, place)
                        report["http"].append({"system": system, "model": model.name, **row})
                        print(format_row(report["http"][-1]), flush=True)
        if "gru-serve" in servers:
            for place in places:
                report["large"] += large_requests(servers["gru-serve"], work, args.duration, place)
                report["grpc"] += grpc_rows(servers["gru-serve"], grpc_port, work, args.duration, place)
    report["loadavg_end"], report["wall_s"] = os.getloadavg()[0], time.perf_counter() - started
    report["targets"] = targets(report)
    (args.results / "bench.json").write_text(json.dumps(report, indent=2))
    print_summary(report)
    (args.results / "bench.md").write_text(markdown(report))
    plot(report, args.results / "bench.png")
    return 0


def request_body(model, sequences: int = 1) -> bytes:
    return json.dumps({"sequences": request_array(model, sequences).tolist()}).encode()


def request_array(model, sequences: int = 1) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((sequences, model.steps, model.features)).round(4)


def measure(server: Running, model: str, body: Path, headers: tuple[str, ...], clients: int,
            duration: float, place: Placement) -> dict:
    """One load level in one core placement: a 1 s warm-up (discarded), then `duration` seconds, with
    the server processes' CPU time over the run and the load average at its end."""
    pin_tree(server.process.pid, place.server)
    load(server.url(model), body, clients, 1, headers, place.generator)
    cpu = process_tree_cpu_s(server.process.pid)
    result = load(server.url(model), body, clients, duration, headers, place.generator)
    cpu = process_tree_cpu_s(server.process.pid) - cpu
    return {"clients": clients, "placement": place.name, **result,
            "cpu_us_per_req": 1e6 * cpu / max(result["requests"], 1), "rss_mb": server.rss_mb(),
            "loadavg": loadavg()}


def large_requests(server: Running, work: Path, duration: float, place: Placement) -> list[dict]:
    """64-sequence requests of the mid model, the same sequences as JSON and as binary float32 (native
    predict, X-Shape), in turn: sequences/s of each encoding."""
    model, sequences, clients = LARGE
    x = request_array(model, sequences)
    (work / "large.json").write_bytes(json.dumps({"sequences": x.tolist()}).encode())
    (work / "large.f32").write_bytes(x.astype("<f4").tobytes())
    shape = f"X-Shape: {sequences},{model.steps},{model.features}"
    rows = []
    for encoding, body, headers in (("json", work / "large.json", ()),
                                    ("binary", work / "large.f32", (*BINARY_HEADERS, shape))):
        row = {"model": model.name, "sequences": sequences, "encoding": encoding,
               **measure(server, model.name, body, headers, clients, duration, place)}
        row["seq_s"] = row["rps"] * sequences
        rows.append(row)
        print(f"large requests ({place.name}): mid, {sequences} sequences each, {clients} clients, "
              f"{encoding:<6} "
              f"{row['seq_s']:>8.0f} seq/s  p99 {row['p99_ms']:.1f} ms  {row['cpu_us_per_req']:.0f} "
              "CPU us/req", flush=True)
    return rows


def grpc_rows(server: Running, grpc_port: int, work: Path, duration: float, place: Placement) -> list[dict]:
    """gRPC ModelInfer against the HTTP JSON paths (v2 infer, native predict), small model, 32 clients,
    each driven by h2load (bench/grpc_load.py: the same tool for every API). Empty when this tree has no
    gRPC server or h2load is missing: the table then says so."""
    try:
        from bench.grpc_load import bodies, h2load
    except ImportError:
        print("gRPC: not measured (bench/grpc_load.py and service/grpc are not in this tree)")
        return []
    if shutil.which("h2load") is None:
        print("gRPC: not measured (h2load is missing: apt-get install -y nghttp2-client)")
        return []
    x = request_array(SMALL).astype(np.float32)
    rows = []
    base = f"http://127.0.0.1:{server.port}"
    pin_tree(server.process.pid, place.server)
    for api, (url, body, headers, h1) in bodies(work, SMALL.name, x, base, grpc_port).items():
        h2load(url, body, headers, h1, GRPC_CLIENTS, 1.0, work / "h2load.log", place.generator)  # warm-up
        cpu = process_tree_cpu_s(server.process.pid)
        result = h2load(url, body, headers, h1, GRPC_CLIENTS, duration, work / "h2load.log", place.generator)
        cpu = process_tree_cpu_s(server.process.pid) - cpu
        rows.append({"api": api, "model": SMALL.name, "clients": GRPC_CLIENTS, "placement": place.name,
                     **result, "cpu_us_per_req": 1e6 * cpu / max(result["requests"], 1),
                     "loadavg": loadavg()})
        print(f"h2load ({place.name}), small, {GRPC_CLIENTS} clients, {api:<8} {result['rps']:>8.0f} req/s  "
              f"p99 {result['p99_ms']:.2f} ms  {rows[-1]['cpu_us_per_req']:.0f} CPU us/req", flush=True)
    return rows


def inprocess(bundles: dict[str, Path]) -> dict:
    """The service's own runtime (same session options), batch 1 and the max batch size."""
    from service.runtime import ModelRuntime
    from service.settings import Settings

    settings = Settings()
    out = {}
    for name, bundle in bundles.items():
        runtime = ModelRuntime(bundle, settings)
        runtime.load()
        model = next(m for m in MODELS if m.name == name)
        seq_s = [sequences_per_second(runtime.predict, model.steps, model.features, batch, 2.0)
                 for batch in (1, settings.max_batch_size)]
        out[name] = {"batch1_seq_s": seq_s[0], "max_batch": settings.max_batch_size,
                     "max_batch_seq_s": seq_s[1]}
    return out


class Running:
    def __init__(self, process: subprocess.Popen, port: int, grpc_port: int | None = None):
        self.process, self.port, self.grpc_port = process, port, grpc_port

    def url(self, model: str) -> str:
        return f"http://127.0.0.1:{self.port}/models/{model}/predict"

    def rss_mb(self) -> float:
        return process_tree_rss(self.process.pid) / 2**20

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *_: object) -> None:
        stop(self.process)


def serving(system: str, work: Path, workers: int, env: dict[str, str] | None = None,
            grpc: bool = False) -> Running:
    """`env`: extra environment variables for the server (e.g. GRU_MAX_QUEUE_SIZE); `grpc`: gru-serve's
    gRPC too, on another free port."""
    port, grpc_port = free_port(), free_port() if grpc else None
    env = {**os.environ, "BENCH_MODELS": str(work / "models"), "BENCH_RUNS": str(work / "runs"),
           **({"GRU_GRPC_PORT": str(grpc_port)} if grpc_port else {}), **(env or {})}
    if system == "gru-serve":
        command = [str(Path(sys.executable).parent / "gru"), "serve", "--models", str(work / "models"),
                   "--port", str(port), "--workers", str(workers)]
    elif system == "bare-asgi":
        command = [sys.executable, "-m", "bench.baselines.bare_app", str(port), str(workers)]
    else:
        app = {"fastapi-ort": "bench.baselines.ort_app:app", "fastapi-torch": "bench.baselines.torch_app:app"}
        command = [sys.executable, "-m", "uvicorn", app[system], "--port", str(port),
                   "--workers", str(workers), "--no-access-log", "--log-level", "warning"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    wait_ready(process, port, timeout=120)
    return Running(process, port, grpc_port)


def wait_ready(process: subprocess.Popen, port: int, timeout: float) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).status_code == 200:
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    stop(process)
    raise TimeoutError(f"not ready within {timeout}s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: only what we started
            process.wait()


def startup(repository: Path) -> dict:
    """`gru serve` with one worker and both models: process start to ready, then idle RSS."""
    port = free_port()
    started = time.perf_counter()
    command = [str(Path(sys.executable).parent / "gru"), "serve", "--models", str(repository),
               "--port", str(port), "--workers", "1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        wait_ready(process, port, timeout=60)
        ready_s = time.perf_counter() - started
        time.sleep(1.0)
        return {"start_to_ready_s": ready_s, "idle_rss_mb": process_tree_rss(process.pid) / 2**20}
    finally:
        stop(process)


def load(url: str, body: Path, clients: int, duration: float, headers: tuple[str, ...] = (),
         cores: frozenset[int] | None = None) -> dict:
    """wrk POSTing `body` (JSON unless `headers` hold another "Content-Type: ..."), on `cores` if given."""
    threads = min(clients, 2)
    command = ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{max(1, round(duration))}s",
               "--timeout", "10s", "-s", str(LUA), url, "--", str(body), *headers]
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         preexec_fn=pinned(cores) if cores else None).stdout
    raw = json.loads(next(line for line in out.splitlines() if line.startswith("WRK_JSON"))[9:])
    errors = sum(v for k, v in raw.items() if k.startswith("errors_"))
    return {"rps": raw["requests"] / (raw["duration_us"] / 1e6), "p50_ms": raw["p50_us"] / 1e3,
            "p99_ms": raw["p99_us"] / 1e3, "errors": errors, "requests": raw["requests"]}


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants (uvicorn workers), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def process_tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process tree: the cost of serving, whatever else
    the machine is doing."""
    total = 0
    for current in process_tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def process_tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants (uvicorn workers), from /proc."""
    total = 0
    for current in process_tree(pid):
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find(report: dict, system: str, model: str, clients: int, placement: str) -> dict | None:
    key = (system, model, clients, placement)
    return next((r for r in report["http"] if (r["system"], r["model"], r["clients"], r["placement"]) == key),
                None)


def targets(report: dict) -> list[dict]:
    """The targets as ratios within this run, per core placement; a target whose rows were not run is
    left out."""
    out = []
    for place in dict.fromkeys(r["placement"] for r in report["http"]):
        out += placement_targets(report, place)
    start = report["startup"]
    out.append(target("one worker, both models: idle RSS MB", start["idle_rss_mb"], "<= 150",
                      start["idle_rss_mb"] <= 150))
    out.append(target("one worker, both models: start to ready s", start["start_to_ready_s"], "<= 2",
                      start["start_to_ready_s"] <= 2))
    errors = sum(r["errors"] for r in report["http"] if r["system"] == "gru-serve") + \
        sum(r["errors"] for r in report.get("large", []))
    out.append(target("gru-serve errors below the queue limit", errors, "0", errors == 0))
    return out


def target(what: str, value: float, goal: str, met: bool) -> dict:
    return {"target": what, "measured": round(value, 3), "goal": goal, "met": bool(met)}


def placement_targets(report: dict, place: str) -> list[dict]:
    out = []

    def add(what: str, value: float, goal: str, met: bool) -> None:
        out.append(target(f"{place}: {what}", value, goal, met))

    serve, bare, ort_, torch_ = (find(report, s, SMALL.name, 32, place) for s in SYSTEMS)
    if serve and bare:
        add("small, 32 clients: req/s vs the bare-ASGI floor", serve["rps"] / bare["rps"], ">= 0.4",
            serve["rps"] >= 0.4 * bare["rps"])
    if serve and ort_:
        add("small, 32 clients: req/s vs fastapi-ort", serve["rps"] / ort_["rps"], ">= 4x",
            serve["rps"] >= 4 * ort_["rps"])
    if serve and torch_:
        add("small, 32 clients: req/s vs fastapi-torch", serve["rps"] / torch_["rps"], ">= 8x",
            serve["rps"] >= 8 * torch_["rps"])
    if serve:
        add("small, 32 clients: p99 ms", serve["p99_ms"], "<= 10", serve["p99_ms"] <= 10)
    mid = find(report, "gru-serve", MID.name, 128, place)
    if mid:
        ceiling = report["inprocess"][MID.name]["max_batch_seq_s"]
        add("mid, 128 clients: seq/s vs in-process max batch", mid["rps"] / ceiling, ">= 0.6",
            mid["rps"] >= 0.6 * ceiling)
        add("mid, 128 clients: p99 ms", mid["p99_ms"], "<= 50", mid["p99_ms"] <= 50)
    bare1 = find(report, "bare-asgi", SMALL.name, 1, place)
    for model in MODELS:
        serve1 = find(report, "gru-serve", model.name, 1, place)
        if serve1 and bare1:  # the floor: HTTP alone, the model alone (batch 1), and 0.1 ms
            floor = bare1["p50_ms"] + 1e3 / report["inprocess"][model.name]["batch1_seq_s"] + 0.1
            add(f"{model.name}, 1 client: p50 ms vs bare p50 + ORT batch 1 + 0.1 = {floor:.2f}",
                serve1["p50_ms"], f"<= {floor:.2f}", serve1["p50_ms"] <= floor)
    encodings = {r["encoding"]: r for r in report.get("large", []) if r["placement"] == place}
    if {"json", "binary"} <= set(encodings) and encodings["json"]["seq_s"] > 0:
        ratio = encodings["binary"]["seq_s"] / encodings["json"]["seq_s"]
        add("mid, 64 sequences per request: binary seq/s vs JSON", ratio, ">= 1.5x", ratio >= 1.5)
    apis = {r["api"]: r for r in report.get("grpc", []) if r["placement"] == place}
    if {"grpc", "v2-json"} <= set(apis) and apis["v2-json"]["rps"] > 0:
        ratio = apis["grpc"]["rps"] / apis["v2-json"]["rps"]
        add(f"small, {GRPC_CLIENTS} clients: gRPC ModelInfer req/s vs HTTP v2 JSON", ratio, ">= 1x",
            ratio >= 1)
    return out


def format_row(row: dict) -> str:
    return (f"{row['system']:<14} {row['model']:<6} {row['placement']:<6} {row['clients']:>4} "
            f"{row['rps']:>10.0f} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f} {row['errors']:>6} "
            f"{row['cpu_us_per_req']:>9.0f} {row['rss_mb']:>8.0f}  {row['loadavg']}")


def print_inprocess(report: dict) -> None:
    print(f"in-process onnxruntime ({report['cores']} cores, 1 intra-op thread):")
    for name, r in report["inprocess"].items():
        print(f"  {name:<6} batch 1: {r['batch1_seq_s']:>8.0f} seq/s   batch {r['max_batch']}: "
              f"{r['max_batch_seq_s']:>8.0f} seq/s")
    s = report["startup"]
    print(f"gru serve, 1 worker, both models: start to ready {s['start_to_ready_s']:.2f} s, "
          f"idle RSS {s['idle_rss_mb']:.0f} MB")
    print(f"\n{'system':<14} {'model':<6} {'cores':<6} {'conc':>4} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'errors':>6} {'CPU us/req':>9} {'RSS MB':>8}  load average")
    print("(CPU us/req: server processes' CPU time per request, a figure that shared-machine noise "
          "disturbs less than req/s)")


def print_summary(report: dict) -> None:
    print(f"\ntargets (ratios within this run; load average {report['loadavg_start']:.1f} at the start, "
          f"{report['loadavg_end']:.1f} at the end; {report['wall_s'] / 60:.1f} min):")
    for t in report["targets"]:
        print(f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['measured']} (goal {t['goal']})")


def markdown(report: dict) -> str:
    """The docs' tables, from this run."""
    lines = [f"`make bench DURATION={report['duration_s']:g}` ({report['cores']} cores, {report['workers']} "
             f"workers per server, load average {report['loadavg_start']:.1f} → {report['loadavg_end']:.1f}; "
             "one sequence per request; cores: " + "; ".join(report.get("placements", [])) +
             "; CPU µs/req: the server processes' CPU time per request; load: `uptime`'s load averages "
             "at the row's end)", "",
             "| system | model | cores | clients | req/s | p50 ms | p99 ms | CPU µs/req | load |",
             "|---|---|---|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['system']} | {r['model']} | {r['placement']} | {r['clients']} | {r['rps']:,.0f} | "
              f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_us_per_req']:,.0f} | {r['loadavg']} |"
              for r in report["http"]]
    if report.get("large"):
        lines += ["", "| mid, 64 sequences per request, 8 clients | cores | sequences/s | p99 ms | "
                      "CPU µs/req |",
                  "|---|---|---:|---:|---:|"]
        lines += [f"| native predict, {r['encoding']} | {r['placement']} | {r['seq_s']:,.0f} | "
                  f"{r['p99_ms']:.1f} | {r['cpu_us_per_req']:,.0f} |" for r in report["large"]]
    if report.get("grpc"):
        lines += ["", f"| small, {GRPC_CLIENTS} clients, h2load | cores | req/s | p50 ms | p99 ms | "
                      "CPU µs/req |",
                  "|---|---|---:|---:|---:|---:|"]
        lines += [f"| {r['api']} | {r['placement']} | {r['rps']:,.0f} | {r['p50_ms']:.2f} | "
                  f"{r['p99_ms']:.2f} | "
                  f"{r['cpu_us_per_req']:,.0f} |" for r in report["grpc"]]
    else:
        lines += ["", "gRPC: not measured in this run (no gRPC server in this tree, or no h2load)."]
    lines += ["", "| target | measured | goal | |", "|---|---:|---|---|"]
    lines += [f"| {t['target']} | {t['measured']} | {t['goal']} | {'met' if t['met'] else '**missed**'} |"
              for t in report["targets"]]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    try:
        import matplotlib
    except ImportError:
        print("no plot: matplotlib is missing (pip install -e '.[bench]')")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5), gridspec_kw={"width_ratios": [3, 3, 2]})
    for ax, model in zip(axes, MODELS, strict=False):
        for system in SYSTEMS:
            rows = sorted((r for r in report["http"] if r["system"] == system and r["model"] == model.name
                           and r["placement"] == report["http"][0]["placement"]), key=lambda r: r["clients"])
            if rows:
                ax.plot([r["rps"] for r in rows], [r["p99_ms"] for r in rows], marker="o", label=system,
                        linestyle=":" if system == "bare-asgi" else "-")
                for r in rows:
                    ax.annotate(str(r["clients"]), (r["rps"], r["p99_ms"]), fontsize=7)
        ceiling = report["inprocess"][model.name]["max_batch_seq_s"]
        ax.axvline(ceiling, color="grey", linestyle="--", label="in-process ORT, max batch")
        ax.set(title=f"{model.name} ({model.features} feat, {model.steps} steps, hidden {model.hidden})",
               xlabel="requests/s (one sequence each)", ylabel="p99 latency (ms)", yscale="log")
        ax.legend(fontsize=8)
    bars = [(f"mid x64\n{r['encoding']}", r["seq_s"] / 1000, "seq/s") for r in report.get("large", [])]
    bars += [(f"small\n{r['api']}", r["rps"] / 1000, "req/s") for r in report.get("grpc", [])]
    ax = axes[2]
    colours = ["C0" if unit == "seq/s" else "C1" for _, _, unit in bars]
    ax.bar([name for name, _, _ in bars], [value for _, value, _ in bars], color=colours)
    ax.set(title="64-sequence requests (seq/s) and gRPC vs HTTP (req/s)", ylabel="thousands per second")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}, {path.with_name('bench.json')} and {path.with_name('bench.md')}")


if __name__ == "__main__":
    sys.exit(main())
