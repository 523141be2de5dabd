"""schemathesis against the service's own OpenAPI schema, every operation, valid and invalid data:
no 5xx, every 4xx a JSON error with a message, and the server survives. A dedicated server, since
fuzzing may call any endpoint."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.helpers import Server

EXAMPLES = 25  # per operation and mode; scripts/fuzz.py takes more


@pytest.fixture(scope="module")
def fuzz_server(repository):
    # An admin token is configured and never sent: the fuzzer reaches the admin API's auth check (401)
    # without unloading the models every other operation is fuzzed against.
    running = Server(repository, GRU_ADMIN_TOKENS="fuzz-admin-secret").start()
    yield running
    running.stop()


def load_schema(url: str) -> schemathesis.BaseSchema:
    """The live schema, with model-name path parameters narrowed to loaded models plus one unknown, so
    that generated requests reach the models instead of stopping at 404."""
    raw = httpx.get(f"{url}/openapi.json").json()
    names = [m["name"] for m in httpx.get(f"{url}/models").json()["models"]] + ["no-such-model"]
    for path in raw["paths"].values():
        for operation in path.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] == "name":
                    parameter["schema"] = {"type": "string", "enum": names}
    return schemathesis.openapi.from_dict(raw)


def fuzz(url: str, mode: GenerationMode, examples: int) -> dict[str, Counter]:
    """Status counts per operation; fails on the first 5xx or non-JSON error."""
    statuses: dict[str, Counter] = {}
    for result in load_schema(url).get_all_operations():
        operation = result.ok()
        seen = statuses.setdefault(f"{operation.method.upper()} {operation.path}", Counter())
        try:
            _fuzz_operation(operation, url, mode, examples, seen)
        except Unsatisfiable:  # negative mode: an operation without inputs has nothing to break
            assert mode == GenerationMode.NEGATIVE
    return statuses


def _fuzz_operation(operation, url: str, mode: GenerationMode, examples: int, seen: Counter) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def call(case: schemathesis.Case) -> None:
        response = case.call(base_url=url, timeout=10)
        seen[response.status_code] += 1
        where = f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:300]}"
        assert response.status_code < 500, where
        if response.status_code >= 400:  # native {"error": {"message", ...}}; /v2: {"error": "..."}
            error = response.json()["error"]
            assert (error if case.path.startswith("/v2") else error["message"]), where

    call()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_fuzzing_finds_no_5xx(fuzz_server, mode: GenerationMode) -> None:
    statuses = fuzz(fuzz_server.url, mode, EXAMPLES)
    assert fuzz_server.process.poll() is None, "the server died"
    assert httpx.get(f"{fuzz_server.url}/health/ready").status_code == 200
    predict = statuses["POST /models/{name}/predict"]
    assert sum(predict.values()) >= EXAMPLES // 2  # the model routes were really exercised
