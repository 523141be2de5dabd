"""A hypothesis fuzz of Open Inference Protocol (v2) request bodies: valid requests (JSON or binary
tensors, with a state, outputs and sequence parameters) with none to three fields swapped for any JSON value
(wrong types, huge or negative integers, booleans, strings, nesting, datatypes) and junk bytes after
them. In process, the codec either decodes or raises a domain error (which the
edge maps to a 400 naming the field); over HTTP, no answer is a 5xx and every refusal is a JSON error with
its field and request id."""

from __future__ import annotations

import contextlib
import copy
import json
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.bundle import read_manifest
from service.codecs.v2 import HEADER_LENGTH, decode_request, model_inputs
from service.errors import ApiError

EXAMPLES_IN_PROCESS = 400
EXAMPLES_HTTP = 120

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
           | st.text(max_size=12))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
nasty = json_values | st.sampled_from([2**40, 2**63, 2**64, -1, 1e39, "0.1", "false", True, [True], ["FP32"],
                                       {}, [], [[[]]], "s" * 200, "INT32", "FP64", "UINT8", 0])
FIELDS = ["inputs", "inputs.0", "inputs.0.name", "inputs.0.shape", "inputs.0.shape.0", "inputs.0.datatype",
          "inputs.0.data", "inputs.0.data.0", "inputs.0.parameters", "inputs.-1", "outputs", "outputs.0",
          "outputs.0.name", "parameters", "parameters.sequence_id", "parameters.sequence_start",
          "parameters.sequence_end", "parameters.binary_data_output", "id", "extra"]


def _tensor(name: str, shape: list[int], values: list[float], binary: bool) -> tuple[dict, bytes]:
    if binary:
        raw = b"".join(struct.pack("<f", v) for v in values)
        return {"name": name, "shape": shape, "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)}}, raw
    return {"name": name, "shape": shape, "datatype": "FP32", "data": values}, b""


@st.composite
def requests(draw: st.DrawFn, state_size: int) -> tuple[Any, bytes]:
    """A valid request for italy, then none to three of its fields replaced by nasty JSON values."""
    batch, steps = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    binary = draw(st.booleans())
    values = draw(st.lists(st.floats(-100, 100, width=32), min_size=batch * steps, max_size=batch * steps))
    x, raw = _tensor("x", [batch, steps, 1], values, binary)
    document: dict[str, Any] = {"inputs": [x]}
    if draw(st.booleans()):
        state, state_raw = _tensor("state", [batch, state_size], [0.0] * batch * state_size, binary)
        document["inputs"].append(state)
        raw += state_raw
    if draw(st.booleans()):
        names = draw(st.sampled_from([["output"], ["next_state"], ["output", "next_state"]]))
        document["outputs"] = [{"name": n, "parameters": {"binary_data": draw(st.booleans())}} for n in names]
    if batch == 1 and len(document["inputs"]) == 1 and draw(st.booleans()):
        document["parameters"] = {"sequence_id": draw(st.integers(1, 2**64 - 1) | st.text(min_size=1,
                                                                                            max_size=128)),
                                  "sequence_start": True, "sequence_end": draw(st.booleans())}
    for path in draw(st.lists(st.sampled_from(FIELDS), max_size=3)):
        _replace(document, path.split("."), copy.deepcopy(draw(nasty)))  # sampled values are shared
    return document, raw


def _replace(document: Any, keys: list[str], value: Any) -> None:
    """Set the value at a dotted path when its parents exist (list indexes as numbers)."""
    target = document
    for key in keys[:-1]:
        index: Any = int(key) if key.lstrip("-").isdigit() else key
        try:
            target = target[index]
        except (KeyError, IndexError, TypeError):
            return
    last: Any = int(keys[-1]) if keys[-1].lstrip("-").isdigit() else keys[-1]
    with contextlib.suppress(IndexError, TypeError):
        target[last] = value


def encode(document: Any, tail: bytes) -> tuple[bytes, str | None]:
    body = json.dumps(document).encode()
    return (body + tail, str(len(body))) if tail else (body, None)


tails = st.just(b"") | st.binary(max_size=16)  # sometimes bytes the header does not describe


@given(data=st.data(), junk=tails)
@settings(max_examples=EXAMPLES_IN_PROCESS, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_codec_refuses_with_domain_errors_only(manifest, data: st.DataObject, junk: bytes) -> None:
    document, binary = data.draw(requests(manifest.state.size))
    body, header = encode(document, binary + junk)
    try:
        decoded = decode_request(body, header)
        x, _ = model_inputs(decoded, manifest, 1024)
    except ApiError as exc:
        assert exc.field and exc.message  # a 400 that names the field
    else:
        assert x.dtype.name == "float32" and x.ndim == 3


@given(data=st.data(), junk=tails)
@settings(max_examples=EXAMPLES_HTTP, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_v2_body_gets_a_5xx(server, manifest, data: st.DataObject, junk: bytes) -> None:
    document, binary = data.draw(requests(manifest.state.size))
    body, header = encode(document, binary + junk)
    headers = {"content-type": "application/json", "x-request-id": "fuzz-1"} | ({HEADER_LENGTH: header}
                                                                                 if header else {})
    response = httpx.post(f"{server.url}/v2/models/italy/infer", content=body, headers=headers, timeout=10)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()
        assert error["error"] and error["code"] and error["request_id"] == "fuzz-1", error


@pytest.fixture(scope="module")
def manifest(repository: Path):
    return read_manifest(repository / "italy" / "1")


# Header values that str.isdigit() takes but int() does not ("²": a 500 before), signs, forms, too large
ODD_LENGTHS = ["²", "1³", "¹²", "-1", "+5", "", "0x10", "1e3", "99999999999999999999"]


@pytest.mark.parametrize("header", ODD_LENGTHS)
def test_an_odd_header_length_is_a_400_naming_the_header(server, header: str) -> None:
    body = json.dumps({"inputs": [{"name": "x", "shape": [1, 1, 1], "datatype": "FP32", "data": [1.0]}]})
    with pytest.raises(ApiError) as refused:
        decode_request(body.encode(), header)
    assert refused.value.field == HEADER_LENGTH
    headers = {"content-type": "application/json", HEADER_LENGTH: header.encode("latin-1")}
    response = httpx.post(f"{server.url}/v2/models/italy/infer", content=body.encode(), headers=headers,
                          timeout=10)
    assert response.status_code == 400 and HEADER_LENGTH in response.text, response.text
