"""HTTP attacks over raw sockets, with a good client's latency measured during each:
`python -m bench.http_attacks --duration 15` (over the 10 s header timeout, or no 408 can arrive).

Starts `gru serve` as users run it (its default limits) on the small bench model. For each attack, a good
client (one keep-alive connection, one predict request after another) measures its latency for
`--duration` s unloaded, then for `--duration` s while the attack runs in another process:

- endless-header: one connection sending a header value that never ends (reconnecting when closed)
- many-headers:   requests with 10,000 header fields, one after another
- huge-header:    requests with a 10 MB header value, one after another
- slowloris:      200 connections sending one header byte a second (reopened when closed)
- connection-flood: GRU_MAX_CONNECTIONS + 100 connections held open (reopened when closed)

It prints, per attack, the good client's p50/p99 unloaded and attacked, their ratio, its failed requests,
the answers the attacker got (status codes; "closed": closed without an answer) and the server's RSS
(process tree), and checks: attacked p99 <= `--p99-factor` x unloaded p99, no failed good request, the
attacker got the documented answers (431; 408 or closed; 503), and RSS never more than `--rss-growth-mb`
above its value before the first attack. Writes bench/results/http_attacks.json; exit status 1 when a
check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import multiprocessing
import select
import selectors
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.models import SMALL, build
from bench.run import RESULTS, request_body, serving
from bench.soak import RssSampler
from service.settings import Settings

Attack = Callable[[int, Any, dict[str, Any]], Counter]
SLOWLORIS_CONNECTIONS = 200
FLOOD_EXTRA = 100
EXPECTED: dict[str, set[int | str]] = {"endless-header": {431}, "many-headers": {431}, "huge-header": {431},
            "slowloris": {408, "closed"}, "connection-flood": {503, "closed"}}


def _status(data: bytes) -> int | str:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else "closed"


def _exchange(port: int, request: bytes, chunk: bytes = b"", stop: Any = None) -> int | str:
    """Send `request`, then `chunk` again and again until the server answers or closes; its status."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(request)
            while chunk and not (stop and stop.is_set()):
                sock.sendall(chunk)
        except OSError:
            pass  # the server stopped reading and closed: its answer may still be readable
        try:
            return _status(sock.recv(4096))
        except OSError:
            return "closed"


HEAD = b"GET /health/live HTTP/1.1\r\nHost: x\r\n"
ENDLESS = HEAD + b"X-Endless: "
MANY = HEAD + b"".join(b"X-%d: y\r\n" % i for i in range(10_000)) + b"\r\n"
HUGE = HEAD + b"X-Huge: " + b"a" * 10_000_000 + b"\r\n\r\n"
SLOW = HEAD + b"X-Slow: "


def endless_header(port: int, stop: Any, options: dict[str, Any]) -> Counter:
    answers: Counter = Counter()
    while not stop.is_set():
        answers[_exchange(port, ENDLESS, b"a" * 65536, stop)] += 1
    return answers


def many_headers(port: int, stop: Any, options: dict[str, Any]) -> Counter:
    answers: Counter = Counter()
    while not stop.is_set():
        answers[_exchange(port, MANY)] += 1
    return answers


def huge_header(port: int, stop: Any, options: dict[str, Any]) -> Counter:
    answers: Counter = Counter()
    while not stop.is_set():
        answers[_exchange(port, HUGE)] += 1
    return answers


def _hold(port: int, stop: Any, count: int, first: bytes, every_second: bytes,
          reopen_after_s: float) -> Counter:
    """Keep `count` connections open: send `first` on opening and `every_second` once a second; count
    the answers of those the server closes, and open a new one `reopen_after_s` later in its place."""
    answers: Counter = Counter()
    reopen: list[float] = [0.0] * count  # when to open the next connection in a free slot
    with selectors.DefaultSelector() as selector:
        next_tick = time.monotonic() + 1
        while not stop.is_set():
            now = time.monotonic()
            while reopen and reopen[0] <= now:
                reopen.pop(0)
                answers.update(_open(selector, port, first))
            for key, _ in selector.select(timeout=0.05):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                answers[_status(data)] += 1
                selector.unregister(sock)
                sock.close()
                reopen.append(time.monotonic() + reopen_after_s)
            if every_second and now >= next_tick:
                next_tick += 1
                for key in list(selector.get_map().values()):
                    with contextlib.suppress(OSError):  # answered or closed: the select above sees it
                        key.fileobj.send(every_second)  # type: ignore[union-attr]
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
    return answers


def _open(selector: selectors.BaseSelector, port: int, first: bytes) -> Counter:
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    except OSError:
        return Counter({"connect failed": 1})
    sock.setblocking(False)
    if first:
        sock.send(first)
    selector.register(sock, selectors.EVENT_READ)
    return Counter()


def slowloris(port: int, stop: Any, options: dict[str, Any]) -> Counter:
    """Closed connections are replaced at once."""
    return _hold(port, stop, options.get("connections", SLOWLORIS_CONNECTIONS), SLOW, b"a", 0.0)


def connection_flood(port: int, stop: Any, options: dict[str, Any]) -> Counter:
    """Idle connections, GRU_MAX_CONNECTIONS + 100; a refused one is retried after the Retry-After second
    (a client that reconnects in a tight loop is a connect flood: a job for a firewall, not for HTTP)."""
    return _hold(port, stop, options["max_connections"] + FLOOD_EXTRA, b"", b"", 1.0)


ATTACKS: dict[str, Attack] = {"endless-header": endless_header, "many-headers": many_headers,
                              "huge-header": huge_header, "slowloris": slowloris,
                              "connection-flood": connection_flood}


def _attacker(attack: str, port: int, stop: Any, options: dict[str, Any], results: Any) -> None:
    results.put(dict(ATTACKS[attack](port, stop, options)))


class GoodClient:
    """One keep-alive connection, one predict request after another; latencies in seconds."""

    def __init__(self, port: int, path: str, body: bytes):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.path, self.body = path, body
        self.failed = 0

    def run(self, seconds: float) -> list[float]:
        latencies, end = [], time.perf_counter() + seconds
        while time.perf_counter() < end:
            self._drop_if_closed()
            started = time.perf_counter()
            try:
                self.connection.request("POST", self.path, self.body, {"content-type": "application/json"})
                response = self.connection.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                self.connection.close()  # reconnects on the next request
                ok = False
            latencies.append(time.perf_counter() - started)
            self.failed += not ok
        return latencies

    def _drop_if_closed(self) -> None:
        """A keep-alive connection the server closed while it was idle (between runs, or when this process
        was not scheduled for longer than GRU_KEEP_ALIVE_TIMEOUT_S) is readable: reconnect rather than
        count the next request as failed, as an HTTP client's connection pool does."""
        sock = self.connection.sock
        if sock is not None and select.select([sock], [], [], 0)[0]:
            self.connection.close()


def ms(latencies: list[float], q: float) -> float:
    return float(np.percentile(latencies, q) * 1000) if latencies else float("nan")


def run_attack(attack: str, port: int, client: GoodClient, seconds: float, rss: RssSampler | None = None,
               options: dict[str, Any] | None = None, settle_s: float = 0.5) -> dict[str, Any]:
    """The good client unloaded for `seconds`, then attacked for `seconds` (after `settle_s` for the
    attack to get going)."""
    failed_before = client.failed
    unloaded = client.run(seconds)
    context = multiprocessing.get_context("fork")
    stop, results = context.Event(), context.Queue()
    process = context.Process(target=_attacker, args=(attack, port, stop, options or {}, results),
                              daemon=True)
    started = time.perf_counter()
    process.start()
    time.sleep(settle_s)
    attacked = client.run(seconds)
    stop.set()
    answers = results.get(timeout=30)
    process.join(timeout=10)
    row: dict[str, Any] = {
        "attack": attack, "requests": len(attacked), "failed": client.failed - failed_before,
        "unloaded_p50_ms": ms(unloaded, 50), "unloaded_p99_ms": ms(unloaded, 99),
        "attacked_p50_ms": ms(attacked, 50), "attacked_p99_ms": ms(attacked, 99),
        "answers": {str(k): v for k, v in sorted(answers.items(), key=str)}}
    row["p99_ratio"] = row["attacked_p99_ms"] / row["unloaded_p99_ms"]
    if rss is not None:
        during = rss.between(started, time.perf_counter())
        row["rss_max_mb"] = max(during) / 2**20 if during else None
    return row


def checks(rows: list[dict[str, Any]], rss_start_mb: float, p99_factor: float,
           rss_growth_mb: float) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        attack = row["attack"]
        seen = {int(k) if k.isdigit() else k for k in row["answers"]}
        out += [
            {"check": f"{attack}: attacked p99 <= {p99_factor:g} x unloaded", "measured": row["p99_ratio"],
             "met": row["p99_ratio"] <= p99_factor},
            {"check": f"{attack}: good requests failed", "measured": row["failed"],
             "met": row["failed"] == 0},
            {"check": f"{attack}: attacker answered {sorted(map(str, EXPECTED[attack]))}",
             "measured": row["answers"], "met": bool(seen) and seen <= EXPECTED[attack]},
        ]
        if row.get("rss_max_mb") is not None:
            growth = row["rss_max_mb"] - rss_start_mb
            out.append({"check": f"{attack}: RSS growth <= {rss_growth_mb:g} MB",
                        "measured": round(growth, 1), "met": growth <= rss_growth_mb})
    return out


def print_report(rows: list[dict[str, Any]], report: dict[str, Any]) -> None:
    print(f"\nload average before: {report['loadavg']}; RSS before: {report['rss_start_mb']:.1f} MB")
    print("| attack | good requests | p50 unloaded / attacked | p99 unloaded / attacked | p99 ratio | "
          "failed | attacker got | RSS max |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        answers = ", ".join(f"{k} × {v}" for k, v in r["answers"].items())
        rss = f"{r['rss_max_mb']:.1f} MB" if r.get("rss_max_mb") else "–"
        print(f"| {r['attack']} | {r['requests']} | {r['unloaded_p50_ms']:.2f} / {r['attacked_p50_ms']:.2f} "
              f"ms | {r['unloaded_p99_ms']:.2f} / {r['attacked_p99_ms']:.2f} ms | {r['p99_ratio']:.2f} | "
              f"{r['failed']} | {answers} | {rss} |")
    for c in report["checks"]:
        print(f"{'ok    ' if c['met'] else 'MISSED'} {c['check']}: {c['measured']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0,
                        help="seconds unloaded and attacked, each; more than GRU_HEADER_TIMEOUT_S (10) so "
                        "that slowloris connections are seen closed (default 15)")
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--p99-factor", type=float, default=2.0)
    parser.add_argument("--rss-growth-mb", type=float, default=50.0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    work = args.results / "work"
    build(work, (SMALL,))
    max_connections = Settings.model_fields["max_connections"].default  # the server runs with its defaults
    loadavg = Path("/proc/loadavg").read_text().strip()
    report: dict[str, Any] = {"duration_s": args.duration, "loadavg": loadavg}
    with serving("gru-serve", work, 1) as server, RssSampler(server.process.pid) as rss:
        client = GoodClient(server.port, f"/models/{SMALL.name}/predict", request_body(SMALL))
        client.run(1.0)  # warm-up
        time.sleep(1.0)
        report["rss_start_mb"] = float(np.median(rss.between(0, time.perf_counter()))) / 2**20
        rows = [run_attack(a, server.port, client, args.duration, rss, {"max_connections": max_connections})
                for a in args.attacks.split(",")]
    report["rows"] = rows
    report["checks"] = checks(rows, report["rss_start_mb"], args.p99_factor, args.rss_growth_mb)
    print_report(rows, report)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "http_attacks.json").write_text(json.dumps(report, indent=2))
    return 0 if all(c["met"] for c in report["checks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
