"""The one error table: every gRPC status in it is one, and the same condition has one code on both APIs
with the body form of each API. (docs/reference/errors.md is generated from the table.)"""

from __future__ import annotations

import json

from service.api.errors import domain_error_response, error_response
from service.errors import ERROR_TABLE, InvalidInput
from service.runtime import NonFiniteOutput


def test_every_grpc_status_is_a_grpc_status_code() -> None:
    import grpc

    assert all(k.grpc in grpc.StatusCode.__members__ for k in ERROR_TABLE.values())


def test_one_code_two_forms() -> None:
    native = error_response("native", "invalid_input", "bad", "sequences[0]")
    v2 = error_response("v2", "invalid_input", "bad", "inputs[0].data")
    assert (native.status_code, v2.status_code) == (422, 400)
    assert json.loads(native.body) == {"error": {"code": "invalid_input", "message": "bad",
                                                 "field": "sequences[0]", "request_id": None}}
    assert json.loads(v2.body) == {"error": "bad", "code": "invalid_input", "field": "inputs[0].data",
                                   "request_id": None}
    assert domain_error_response(InvalidInput("x", "f"), "v2").status_code == 400
    refused = domain_error_response(NonFiniteOutput("nan"), "native", "sequences")
    assert refused.status_code == 422 and json.loads(refused.body)["error"]["field"] == "sequences"


def test_streaming_unsupported_is_one_code() -> None:
    """Once `streaming_unavailable` (400) on v2 and `streaming_unsupported` (422) natively."""
    assert "streaming_unavailable" not in ERROR_TABLE
    kind = ERROR_TABLE["streaming_unsupported"]
    assert (kind.status, kind.v2_status) == (422, 400)
