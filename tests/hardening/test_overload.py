"""Overload and soak, short: the logic of bench/overload.py and bench/soak.py against `gru serve`, and
how bench/grpc_loadgen.py classifies gRPC outcomes.

The precise targets (goodput >= 90 % of capacity at 4x and 16x, refusal p99 <= 50 ms, the 200s' wait
within (queue + one batch) / capacity, RSS growth < 5 %) live in the scripts' printed checks; on this
shared 2-core machine, where the load generator competes with the server for the cores, these tests
assert structure and generous ratios only.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from bench.grpc_loadgen import generate
from bench.loadgen import ERROR, KIND_NAMES, OK, OTHER, REFUSED, UNSENT, Phase
from bench.models import BenchModel
from bench.overload import APIS, MAX_BATCH, Plan, api_request, api_url, overload, wait_bound_ms
from bench.soak import checks as soak_checks
from bench.soak import mixed_bodies, soak
from tests.helpers import Server, free_port, train_tiny

ITALY = BenchModel("italy", features=1, steps=24, hidden=16, classes=2)
# Inference, not HTTP, must limit capacity (as in bench/overload.py): hidden 256 x 2 layers, 128 steps.
HEAVY = BenchModel("italy_heavy", features=1, steps=128, hidden=256, classes=2)
QUEUE = 16
HTTP_APIS = [api for api in APIS if api != "grpc"]


@pytest.fixture(scope="module")
def heavy_server(tmp_path_factory: pytest.TempPathFactory):
    from export.bundle import export_checkpoint

    run = train_tiny(tmp_path_factory.mktemp("runs"), HEAVY.name, "data.dataset=ItalyPowerDemand",
                     f"model.hidden_size={HEAVY.hidden}", "model.num_layers=2", "optim.max_epochs=1")
    root = tmp_path_factory.mktemp("heavy") / "models"
    export_checkpoint(run.checkpoint, root, HEAVY.name)
    server = Server(root, grpc=True, GRU_MAX_QUEUE_SIZE=str(QUEUE), GRU_ACCESS_LOG="false").start()
    yield server
    server.stop()


def url(server: Server, api: str, path: str) -> str:
    return api_url(api, path, server.port, int(server.grpc_url.rsplit(":", 1)[1]))


def burst(server: Server, api: str) -> dict:
    plan = Plan(capacity_s=1.0, clients=8, before_s=0.5, burst_s=2.0, after_s=0.5, multiplier=4.0,
                settle_s=0.5)
    path, body = api_request(api, HEAVY)
    return overload(url(server, api, path), [body], plan, QUEUE, server_pid=server.process.pid)


@pytest.mark.parametrize("api", HTTP_APIS)
def test_a_burst_on_every_api_is_shed_with_fast_503s_while_the_model_keeps_answering(
        heavy_server: Server, api: str) -> None:
    report = burst(heavy_server, api)
    cap = report["capacity"]["rps"]
    assert cap > 0 and report["refused"] > 0, report["timeline"]  # 503 queue_full with Retry-After
    # Every answer was a 200 or such a refusal; no socket error, nothing left unsent.
    assert (report["other"], report["error"], report["unsent"]) == (0, 0, 0), report["generator"]
    # Refusing does not starve the model: the 200s keep coming at a good share of capacity (the script
    # asks for 90 %; here the load generator and other jobs share the two cores, and the capacity and
    # the burst are measured seconds apart, so the share the machine gives the model moves between them).
    # the model keeps answering a fifth of its capacity at least: with the generator on the same 2 cores
    # the share was 0.27 in a CI run (157 of 587 req/s) and under 0.3 in 2 of 4 runs pinned to one core
    assert report["goodput_rps"] >= 0.2 * cap, (report["goodput_rps"], cap, report["server_cpu_cores"])
    # A refusal skips the queue and the model: it comes back faster than an answer from the same burst,
    # and an answer waits about what the bounded queue holds, not what the burst offered: at capacity, or
    # at the rate the model answered during the burst where the machine gave it less then.
    assert report["refused_p50_ms"] < report["ok_p50_ms"], report
    during_burst = wait_bound_ms(QUEUE, min(MAX_BATCH, QUEUE), report["goodput_rps"])
    bound_ms = max(report["wait_bound_ms"], during_burst)
    assert report["ok_p50_ms"] <= 3 * bound_ms, report
    assert {"ok_rps", "refused_rps", "unsent"} <= set(report["timeline"][0]) and set(KIND_NAMES) >= {"ok"}


def test_a_grpc_burst_is_shed_with_queue_full_refusals_while_the_model_keeps_answering(
        heavy_server: Server) -> None:
    """As over HTTP, less what gRPC does not hold: a call costs the server's event loop ~170 µs, refused or
    not (docs/results/latency.md, gRPC ModelInfer under overload), so on a loaded machine the loop falls
    behind a burst, calls wait in grpcio before the queue check, the generator reaches its cap on calls
    in flight (unsent) and grpc core drops part of its backlog (CANCELLED). bench/overload.py measures
    those; here each call's outcome and the model's share are checked."""
    report = burst(heavy_server, "grpc")
    cap = report["capacity"]["rps"]
    # UNAVAILABLE with gru-error-code queue_full and retry-after metadata
    assert cap > 0 and report["refused"] > 0, report["timeline"]
    generator, cancelled = report["generator"], grpc.StatusCode.CANCELLED.value[0]
    assert report["error"] == 0 and set(generator["other_statuses"]) <= {cancelled}, generator
    # the model keeps answering a fifth of its capacity at least: with the generator on the same 2 cores
    # the share was 0.27 in a CI run (157 of 587 req/s) and under 0.3 in 2 of 4 runs pinned to one core
    assert report["goodput_rps"] >= 0.2 * cap, (report["goodput_rps"], cap, report["server_cpu_cores"])


def test_sixteen_times_capacity_does_not_collapse_goodput(heavy_server: Server) -> None:
    """Before the scheduler, 512 clients against a 16-sequence queue got 2 % of capacity as 200s."""
    plan = Plan(capacity_s=1.0, clients=8, before_s=0.5, burst_s=2.0, after_s=0.5, multiplier=16.0,
                settle_s=0.5)
    path, body = api_request("native", HEAVY)
    report = overload(url(heavy_server, "native", path), [body], plan, QUEUE,
                      server_pid=heavy_server.process.pid)
    assert report["refused"] > 0 and (report["other"], report["error"]) == (0, 0), report["generator"]
    assert report["goodput_rps"] >= 0.2 * report["capacity"]["rps"], (report, report["server_cpu_cores"])


def test_the_grpc_generator_tells_other_statuses_and_socket_errors_from_answers(heavy_server: Server) -> None:
    """An unknown model's NOT_FOUND is `other` (counted by status, an example kept), never a refusal;
    a port nobody listens on gives socket errors. Two clients against a queue of 16: nothing refused."""
    path, body = api_request("grpc", HEAVY)
    _, unknown = api_request("grpc", BenchModel("no_such_model", HEAVY.features, HEAVY.steps, 1, 2))
    records = generate(url(heavy_server, "grpc", path), [body.content, unknown.content],
                       [Phase("closed", 1.0, connections=2)])
    kinds = [records.kind.count(k) for k in (OK, REFUSED, OTHER, ERROR, UNSENT)]
    not_found = grpc.StatusCode.NOT_FOUND.value[0]
    assert kinds[0] > 0 and kinds[1:] == [0, kinds[2], 0, 0] and kinds[2] > 0, (kinds, records.examples)
    assert records.statuses == {not_found: kinds[2]} and "no_such_model" in records.examples[not_found]
    closed = generate(f"grpc://127.0.0.1:{free_port()}{path}", [body.content],
                      [Phase("closed", 0.3, connections=1)])
    assert closed.kind and set(closed.kind) == {ERROR} and not closed.statuses, closed.examples


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
