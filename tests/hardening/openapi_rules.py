"""schemathesis hooks: the request rules that JSON Schema cannot state, applied to the requests generated
as valid (positive mode), so that "valid under the schema" means "valid" (docs/results/hardening.md, fuzzing).
Invalid (negative) requests are left as generated.

- v2 infer: each tensor's data holds prod(shape) values (flat; nested data must follow the shape); the
  state has x's batch; a sequence chunk (sequence_id / sequence_start / sequence_end) is one sequence
  without a state, and continues a live sequence (server state): positive chunks start a new one.
- native predict, binary body: X-Shape (its pattern has the model's feature count) must match the body's
  byte count and the model's lengths, and the values must be finite: positive cases get zeros in every
  value and no X-Lengths. A JSON body takes neither header.
- native stream: a state token is one the server signed on an earlier answer, which a generator cannot
  make: positive requests start a sequence instead (state null); a sequence_id chunk starts a new one.

Two refusals of valid requests are accepted (filter_failure): 413 `body_too_large` (GRU_MAX_BODY_BYTES
limits bytes, which JSON Schema cannot count), and 422/400 `output_not_finite`, a model whose float32
arithmetic overflows for extreme values (a window-scaled forecaster's window level for values near
3.4e38): the service refuses to answer NaN, and which values a model can take is not in its manifest.

Used by tests/hardening/test_fuzz_openapi.py, and by the CLI:
    SCHEMATHESIS_HOOKS=tests/hardening/openapi_rules.py schemathesis run URL/openapi.json --mode all
"""

from __future__ import annotations

import math
import os
import uuid
from typing import Any

import schemathesis

MAX_VALUES = 50_000  # values per tensor after filling: about 1 MB of JSON


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    meta = case.meta
    if meta is not None and not meta.generation.mode.is_positive:  # no meta: the schema's own examples
        return case
    if case.path.endswith("/predict") and case.media_type == "application/octet-stream":
        _binary_steps(case)
    elif case.path.endswith("/predict") and case.headers:  # binary bodies' headers: refused on JSON
        for name in ("X-Shape", "X-Lengths"):
            case.headers.pop(name, None)
    if not isinstance(case.body, dict):
        return case
    if case.path.endswith("/infer"):
        _whole_tensors(case.body)
    elif case.path.endswith("/stream"):
        if case.body.get("state") is not None:
            case.body["state"] = None
        if case.body.get("sequence_id") is not None:
            case.body.update(sequence_id=_new_sequence(), start=True)
    return case


def _binary_steps(case: Any) -> None:
    """A shape the model takes (its features and lengths; the generated batch and time where they parse,
    as the coverage phase sends header values outside their pattern as valid ones) and a body to match."""
    headers = case.headers or {}
    try:
        batch, time, _ = (int(n) for n in str(headers.get("X-Shape", "")).split(","))
    except ValueError:
        batch, time = 1, 1
    low, high, features = _steps(case)
    batch, time = max(batch, 1), min(max(time, low), high)
    while batch * time * features > MAX_VALUES and batch > 1:  # valid either way, but small
        batch //= 2
    headers.update({"X-Shape": f"{batch},{time},{features}"})
    headers.pop("X-Lengths", None)
    case.headers = headers
    case.body = bytes(4 * batch * time * features)  # float32 zeros


def _steps(case: Any) -> tuple[int, int, int]:
    """The model's sequence lengths and features, from the operation's JSON body schema."""
    schema = case.operation.definition.raw["requestBody"]["content"]["application/json"]["schema"]
    steps = schema["properties"]["sequences"]["items"]
    steps = steps["anyOf"][0] if "anyOf" in steps else steps
    return steps["minItems"], steps["maxItems"], steps["items"]["minItems"]


def _new_sequence() -> str:
    return f"fuzz-{uuid.uuid4().hex[:12]}"


def _whole_tensors(body: dict[str, Any]) -> None:
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(t, dict) and isinstance(t.get("shape"), list)
                                               for t in inputs):
        return
    parameters = body.get("parameters") or {}
    chunk = (parameters.get("sequence_start") or parameters.get("sequence_end")
             or parameters.get("sequence_id") not in (None, 0, ""))
    if chunk:  # a new sequence each time: whether an id is live is the server's state, not the schema's
        parameters.update(sequence_id=_new_sequence(), sequence_start=True)
    x = next((t for t in inputs if t.get("name") == "x"), None)
    if x is None:
        return
    if chunk:
        x["shape"][0] = 1
        body["inputs"] = [x]
    while x["shape"][0] > 1 and math.prod(x["shape"]) > MAX_VALUES:
        x["shape"][0] = max(1, int(x["shape"][0]) // 2)  # valid either way; keeps bodies under the limit
    for tensor in body["inputs"]:
        tensor["shape"][0] = x["shape"][0]
        count = int(math.prod(tensor["shape"]))  # JSON Schema's integers include 2.0
        fill = 0.0 if tensor.get("name") == "state" else 0.5  # a zero state: valid for every model
        values = _flat(tensor.get("data")) or [fill]
        tensor["data"] = (values * (count // len(values) + 1))[:count]


def _flat(data: Any) -> list[float]:
    if isinstance(data, list):
        return [v for item in data for v in _flat(item)]
    return [data] if isinstance(data, (int, float)) and not isinstance(data, bool) else []


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure except a valid request refused for its byte size or a non-finite output."""
    if failure.code != "ST202":  # schema-valid request rejected
        return True
    try:
        body = response.json()
    except ValueError:
        return True
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else (body or {}).get("code")
    if code not in ("body_too_large", "output_not_finite"):
        return True
    if os.environ.get("OPENAPI_RULES_LOG"):  # the test counts what was forgiven
        with open(os.environ["OPENAPI_RULES_LOG"], "a") as log:
            log.write(f"{code}\n")
    return False
