"""Overload and soak, short: the logic of bench/overload.py and bench/soak.py against `gru serve`.

The precise targets (4x capacity, refusal p99 in milliseconds, recovery within seconds, RSS growth
< 5 %) live in the scripts' printed checks; on this shared 2-core machine, where the load generator
competes with the server for the cores, these tests assert structure and generous ratios only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.loadgen import KIND_NAMES
from bench.models import BenchModel
from bench.overload import Plan, overload
from bench.run import request_body
from bench.soak import checks as soak_checks
from bench.soak import mixed_bodies, soak
from tests.helpers import Server

ITALY = BenchModel("italy", features=1, steps=24, hidden=16, classes=2)


@pytest.fixture(scope="module")
def shedding_server(repository: Path):
    """A short queue (16 sequences) so that a burst surely overflows it; no access log lines."""
    server = Server(repository, GRU_MAX_QUEUE_SIZE="16", GRU_ACCESS_LOG="false").start()
    yield server
    server.stop()


def test_a_burst_is_shed_with_fast_503s_and_latency_recovers(shedding_server: Server) -> None:
    # Capacity with 8 clients, fewer than the queue holds, so that it is measured without refusals.
    plan = Plan(capacity_s=1.0, clients=8, before_s=2.5, burst_s=1.5, after_s=4.0, multiplier=4.0)
    report = overload(f"{shedding_server.url}/models/italy/predict", [request_body(ITALY)], plan)
    burst, phases = report["phases"]["burst"], report["phases"]
    assert burst["refused"] > 0, report["phases"]  # 503 queue_full with Retry-After (bench/loadgen.py)
    # Every answer was a 200 or such a refusal; no socket error, nothing left unanswered.
    assert all(p["other"] == 0 and p["error"] == 0 for p in phases.values()), (phases, report["generator"])
    assert sum(p["ok"] for p in phases.values()) > 0
    # A refusal skips the queue and the model: it comes back faster than an answer from the same burst.
    assert burst["refused_p50_ms"] <= burst["ok_p50_ms"], burst
    # Recovered: in the last 2 s the 200s' p99 is a fraction of the burst's, and refusals (a busy
    # machine can stall the server long enough to fill 16 places even at half load) a small share
    # of the answers. The script's recovery time, against 1.5x the pre-burst p99, is finer.
    last = [row for row in report["timeline"] if row["t"] >= plan.before_s + plan.burst_s + 2.0]
    assert last and all(row["ok_p99_ms"] is not None for row in last)
    assert max(row["ok_p99_ms"] for row in last) <= 0.2 * burst["ok_p99_ms"], report["timeline"]
    refused_share = sum(r["refused_rps"] for r in last) / sum(r["refused_rps"] + r["ok_rps"] for r in last)
    assert refused_share <= 0.5 * burst["refused"] / (burst["refused"] + burst["ok"]), report["timeline"]
    assert set(KIND_NAMES) <= set(burst)


def test_a_short_soak_has_no_errors_and_flat_memory(repository: Path) -> None:
    server = Server(repository, GRU_ACCESS_LOG="false").start()
    try:
        assert server.process is not None
        report = soak(f"{server.url}/models/italy/predict", server.process.pid,
                      mixed_bodies(ITALY.features, ITALY.steps), warmup_s=4.0, duration_s=10.0,
                      interval_s=2.5, clients=32)
    finally:
        server.stop()
    # The RSS bound is 5 % as in the script; a short run allows p99 to vary 5x (a busy shared machine).
    results = {c["check"]: c for c in soak_checks(report, p99_factor=5.0, rss_growth=0.05)}
    summary = report["summary"]
    assert summary["requests"] > 0 and report["warmup_unexpected"] == 0
    assert results["unexpected answers or socket errors"]["met"], report["other_statuses"]
    assert results["RSS growth after warm-up"]["met"], report["intervals"]
    assert all(row["rss_mb"] for row in report["intervals"])
