"""Which HTTP server: the bare ASGI app (bench/baselines/bare_app.py) and gru-serve's app, each under
several servers and settings, in one run, interleaved rounds, with the same load generator (wrk, small
model, one sequence per request). Reports req/s and the server processes' CPU time per request.

    pip install granian          # optional: its rows are skipped when it is missing
    python -m bench.servers --duration 5 --rounds 3 --clients 32

uvicorn (gru serve)  uvicorn as `gru serve` runs it: httptools with the HTTP-limits protocol
                     (service/api/transport.py), uvloop, no Server header, no proxy headers
uvicorn httptools    uvicorn's plain httptools protocol (no transport limits), uvloop
uvicorn h11          the pure-Python h11 protocol
uvicorn asyncio      httptools on the standard asyncio loop
granian              granian (Rust; --interface asgi --loop uvloop), multi-threaded runtime
granian st           granian's single-threaded runtime
Writes bench/results/servers.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.models import SMALL, build
from bench.run import RESULTS, Running, load, process_tree_cpu_s, request_body, wait_ready

SERVERS = {
    "uvicorn (gru serve)": [],
    "uvicorn httptools": ["--http", "httptools"],
    "uvicorn h11": ["--http", "h11"],
    "uvicorn asyncio": ["--http", "httptools", "--loop", "asyncio"],
    "granian": [],
    "granian st": ["--runtime-mode", "st"],
}
APPS = {"bare-asgi": "bench.baselines.bare_app:app", "gru-serve": "service.api.app:create_app"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per server and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    servers = [s for s in args.servers.split(",") if not s.startswith("granian") or shutil.which("granian")
               or (Path(sys.executable).parent / "granian").exists()]
    args.results.mkdir(parents=True, exist_ok=True)
    work = args.results / "work"
    build(work, (SMALL,))
    body = work / "small.body.json"
    body.write_bytes(request_body(SMALL))
    rows = []
    with contextlib.ExitStack() as stack:
        running = {(server, app): stack.enter_context(serve(server, app, work, args.workers))
                   for server in servers for app in APPS}
        for round_ in range(args.rounds):
            for (server, app), process in running.items():
                load(process.url(SMALL.name), body, args.clients, 1)  # warm-up, discarded
                cpu = process_tree_cpu_s(process.process.pid)
                result = load(process.url(SMALL.name), body, args.clients, args.duration)
                cpu = process_tree_cpu_s(process.process.pid) - cpu
                rows.append({"server": server, "app": app, "round": round_, **result,
                             "cpu_us_per_req": 1e6 * cpu / max(result["requests"], 1),
                             "loadavg": os.getloadavg()[0]})
                print(f"{server:<20} {app:<10} round {round_}  {result['rps']:>8.0f} req/s  p99 "
                      f"{result['p99_ms']:>7.2f} ms  {rows[-1]['cpu_us_per_req']:>6.0f} CPU us/req  "
                      f"errors {result['errors']}", flush=True)
    summary = {f"{server} / {app}": {k: statistics.median(r[k] for r in rows if (r["server"], r["app"]) ==
                                                           (server, app)) for k in ("rps", "cpu_us_per_req")}
               for server in servers for app in APPS}
    print(f"\nmedians over {args.rounds} rounds, {args.clients} clients, {args.workers} workers:")
    print(f"{'server':<20} {'bare req/s':>11} {'bare CPU us':>12} {'gru req/s':>10} {'gru CPU us':>11}")
    for server in servers:
        bare, gru = summary[f"{server} / bare-asgi"], summary[f"{server} / gru-serve"]
        print(f"{server:<20} {bare['rps']:>11.0f} {bare['cpu_us_per_req']:>12.1f} {gru['rps']:>10.0f} "
              f"{gru['cpu_us_per_req']:>11.1f}")
    (args.results / "servers.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))
    return 0


@contextlib.contextmanager
def serve(server: str, app: str, work: Path, workers: int) -> Iterator[Running]:
    """`app` under `server` on a free port, configured as `gru serve` configures its own (the models,
    multiprocess metrics, one state secret, the JSON log config)."""
    from bench.run import free_port
    from service.cli import uvicorn_options
    from service.logs import logging_config
    from service.settings import Settings

    port = free_port()
    with tempfile.TemporaryDirectory(prefix="gru-bench-servers-") as scratch:
        env = {**os.environ, "GRU_MODEL_REPOSITORY": str(work / "models"), "GRU_STATE_SECRET":
               secrets.token_hex(32), "PROMETHEUS_MULTIPROC_DIR": scratch, "GRU_POLL_INTERVAL_S": "0"}
        settings = Settings()
        log_config = logging_config(settings.log_level, settings.log_format)
        factory = ["--factory"] if app == "gru-serve" else []
        if server.startswith("granian"):
            config = Path(scratch) / "logging.json"
            config.write_text(json.dumps(log_config))
            granian = shutil.which("granian") or str(Path(sys.executable).parent / "granian")
            command = [granian, "--interface", "asgi", *factory, APPS[app], "--port", str(port), "--workers",
                       str(workers), "--loop", "uvloop", "--http", "1", "--log-config", str(config),
                       "--no-access-log", *SERVERS[server]]
        else:
            options = uvicorn_options(settings, log_config)
            if SERVERS[server]:
                options.pop("http")
            options |= {"factory": bool(factory), "workers": workers, **_flags(SERVERS[server])}
            command = [sys.executable, "-m", "bench.servers", "--uvicorn", APPS[app], str(port),
                       json.dumps(options)]
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        try:
            wait_ready(process, port, timeout=120)
            yield Running(process, port)
        finally:
            Running(process, port).__exit__()


def _flags(flags: list[str]) -> dict[str, str]:
    """uvicorn's --http/--loop flags as uvicorn.run() keywords."""
    return {flags[i].lstrip("-"): flags[i + 1] for i in range(0, len(flags), 2)}


def run_uvicorn(app: str, port: str, options: str) -> None:
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(port), **json.loads(options))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--uvicorn"]:  # a server process of serve()
        run_uvicorn(*sys.argv[2:])
        sys.exit(0)
    sys.exit(main())
