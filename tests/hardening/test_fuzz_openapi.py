"""`schemathesis run --mode all --checks all` against the service's own /openapi.json, every operation
(one per loaded model for the inference operations), with the request rules JSON Schema cannot state
applied by tests/hardening/openapi_rules.py: no 5xx, no response outside the schema (status, body,
content type, headers), no valid request refused, no invalid one accepted, auth enforced where declared,
405 with a true Allow header for other methods; the server stays up with its models loaded.

A dedicated server, since fuzzing calls every endpoint: an admin token is configured and never sent, so
the admin API answers 401 instead of unloading the models. EXAMPLES per operation and mode; a long run:
FUZZ_EXAMPLES=500 pytest tests/hardening/test_fuzz_openapi.py -s
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.helpers import Server

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
RULES = Path(__file__).with_name("openapi_rules.py")
FORGIVEN = {"body_too_large", "output_not_finite"}  # valid requests the schema cannot tell apart


@pytest.fixture(scope="module")
def fuzz_server(repository):
    running = Server(repository, GRU_ADMIN_TOKENS="fuzz-admin-secret", GRU_ACCESS_LOG="false").start()
    yield running
    running.stop()


def test_schemathesis_finds_nothing(fuzz_server: Server, tmp_path: Path) -> None:
    forgiven_log = tmp_path / "forgiven.txt"
    command = [str(Path(sys.executable).parent / "schemathesis"), "run", f"{fuzz_server.url}/openapi.json",
               "--mode", "all", "--checks", "all", "--max-examples", str(EXAMPLES), "--workers", "1",
               "--continue-on-failure", "--no-color"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(RULES), "OPENAPI_RULES_LOG": str(forgiven_log)}
    # In tmp_path: schemathesis keeps a crash cache in its working directory and replays it next time.
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    summary = result.stdout[result.stdout.rfind("SUMMARY"):]
    forgiven = Counter(forgiven_log.read_text().split()) if forgiven_log.exists() else Counter()
    print(f"\n{summary}\nforgiven refusals of valid requests: {dict(forgiven)}")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", summary)
    generated = re.search(r"(\d+) generated, (\d+) passed", summary)
    assert tested and int(tested[1]) >= 25, summary  # every operation, inference ones per model
    assert generated and generated[1] == generated[2] and int(generated[1]) > 50 * EXAMPLES, summary
    assert set(forgiven) <= FORGIVEN
    assert fuzz_server.process.poll() is None, "the server died"
    ready = httpx.get(f"{fuzz_server.url}/health/ready").json()
    assert ready["ready"] and set(ready["models"]) == {"italy", "airline"}


def test_the_description_is_per_model_and_secured(fuzz_server: Server) -> None:
    doc = httpx.get(f"{fuzz_server.url}/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    paths = doc["paths"]
    assert "/models/{name}/predict" not in paths and "/v2/models/{name}/infer" not in paths
    predict = paths["/models/italy/predict"]["post"]
    sequences = predict["requestBody"]["content"]["application/json"]["schema"]["properties"]["sequences"]
    steps = sequences["items"]["anyOf"][0]
    assert steps["minItems"] == 1 and steps["items"]["minItems"] == steps["items"]["maxItems"] == 1
    assert {"400", "404", "408", "413", "415", "422", "431", "503"} <= set(predict["responses"])
    assert "/models/airline/stream" not in paths  # airline cannot stream: no operation to call
    admin = paths["/v2/repository/index"]["get"]
    assert admin["security"] == [{"bearer": []}] and {"401", "403"} <= set(admin["responses"])
    assert "security" not in predict and "401" not in predict["responses"]  # predict needs no token here
    infer = paths["/v2/models/italy/infer"]["post"]
    assert "422" not in infer["responses"] and "400" in infer["responses"]  # v2 refuses with 400
    error = infer["responses"]["400"]["content"]["application/json"]["schema"]
    assert error["$ref"].endswith("V2ErrorResponse")
