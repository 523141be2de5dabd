"""Metrics written many at a time (service/metrics.py observe_many) equal one observe() per value, and
the request log's batched access lines and counts equal what one line per request gave."""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, Summary

from service import logs, metrics
from service.api.middleware import RequestLog


def samples(metric: Histogram | Summary, registry: CollectorRegistry) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in registry.collect() for s in f.samples}


def test_observe_many_equals_one_observe_per_value() -> None:
    values = [0.0, 0.0005, 0.0007, 0.001, 0.3, 7.0, 20.0, *np.random.default_rng(0).exponential(0.01, 200)]
    for kind in (Histogram, Summary):
        one, many = CollectorRegistry(), CollectorRegistry()
        singly = kind("m", "d", ["k"], registry=one, **({"buckets": metrics.LATENCY_BUCKETS}
                                                         if kind is Histogram else {}))
        batched = kind("m", "d", ["k"], registry=many, **({"buckets": metrics.LATENCY_BUCKETS}
                                                           if kind is Histogram else {}))
        for value in values:
            singly.labels("a").observe(value)
        metrics.observe_many(batched.labels("a"), values)
        metrics.observe_many(batched.labels("a"), [])  # nothing: nothing changes
        got, want = samples(batched, many), samples(singly, one)
        assert got.keys() == want.keys()
        assert all(abs(got[k] - want[k]) < 1e-9 for k in want), (kind, got, want)


def test_request_log_writes_every_line_and_count(caplog) -> None:
    async def run() -> RequestLog:
        requests = RequestLog()
        for i in range(600):  # over LINES_PER_WRITE: several writes
            context = logs.RequestContext(f"id-{i}", "POST", "/models/m/predict", "m", 3)
            requests.answered(context, 200 if i % 3 else 422, 0.002)
        requests.answered(logs.RequestContext("probe", "GET", "/health/live"), 200, 0.001)
        return requests

    before = metrics.REQUESTS.labels("m", "3", "native", "422")._value.get()
    with caplog.at_level(logging.INFO, logger="gru_serve.access"):
        requests = asyncio.run(run())
        metrics.registry()  # reading the metrics flushes first
    lines = [r for r in caplog.records if r.name == "gru_serve.access"]
    assert [r.request_id for r in lines] == [f"id-{i}" for i in range(600)]  # probes: not at INFO
    assert lines[0].getMessage() == "POST /models/m/predict 422" and lines[1].status == 200
    assert (lines[0].model, lines[0].version, lines[0].duration_ms) == ("m", 3, 2.0)
    formatted = json.loads(logs.JsonFormatter().format(lines[0]))
    assert {"time", "level", "logger", "message", "request_id", "model", "status"} <= set(formatted)
    assert metrics.REQUESTS.labels("m", "3", "native", "422")._value.get() - before == 200
    assert not requests._answered
