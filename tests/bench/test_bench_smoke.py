"""A smoke test of the benchmark harness (bench/run.py): `gru serve` started as the bench starts it,
one second of wrk through the Lua script, the summary parsed. No timing assertions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
