"""Smoke tests of the benchmark harnesses (bench/run.py, bench/grpc_load.py): `gru serve` started as the
bench starts it, one second of wrk (or h2load) per request kind, the summary parsed. No timing
assertions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bench.run import load, process_tree_rss, serving

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None,
                                reason="the load generator wrk is not installed (apt-get install -y wrk)")


def test_harness_drives_the_service_with_wrk(repository: Path, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"sequences": [[[0.1], [0.5], [-0.2]] * 8]}))
    with serving("gru-serve", repository.parent, workers=1) as server:
        result = load(server.url("italy"), body, clients=2, duration=1)
        assert process_tree_rss(server.process.pid) > 10 * 2**20
    assert result["requests"] > 0 and result["errors"] == 0
    assert result["p99_ms"] >= result["p50_ms"] > 0


@pytest.mark.skipif(shutil.which("h2load") is None,
                    reason="h2load is not installed (apt-get install -y nghttp2-client)")
def test_grpc_load_frames_requests_the_server_answers(repository: Path, tmp_path: Path) -> None:
    """bench/grpc_load.py: one second of h2load per API; the server answers every request with a 200.
    The calls still in flight when h2load's window closes (not counted by h2load) are answered too, or,
    where the server sees the client leave first, logged as client gone (499): 2 such calls in 2 of 7
    runs since gRPC unary calls count per client until grpc has finished them (round 8), none before."""
    from bench.grpc_load import API_LABEL, answered, bodies, h2load

    with serving("gru-serve", repository.parent, workers=1, grpc=True) as server:
        base, grpc_port = f"http://127.0.0.1:{server.port}", server.grpc_port
        assert grpc_port is not None
        x = np.random.default_rng(0).standard_normal((1, 24, 1)).astype(np.float32)
        for api, (url, body, headers, h1) in bodies(tmp_path, "italy", x, base, grpc_port).items():
            before = answered(base)
            result = h2load(url, body, headers, h1, clients=2, duration=1, log=tmp_path / f"{api}.log")
            counted = {status: n - before.get((a, status), 0) for (a, status), n in answered(base).items()
                       if a == API_LABEL[api]}
            assert result["requests"] > 0 and result["failed"] == 0, (api, result)
            answered_ok, gone = counted.pop("200"), counted.pop("499", 0)
            in_window = result["requests"]
            assert in_window <= answered_ok <= answered_ok + gone <= in_window + 4, (api, result, gone)
            assert not any(counted.values()), (api, counted)
