"""The inference operations are answered by service/api/inference.py, never by a FastAPI route, and the
OpenAPI description documents them from the same table, request bodies included."""

from __future__ import annotations

from pathlib import Path

from fastapi.routing import APIRoute

from service.api.app import create_app
from service.api.inference import OPERATIONS
from service.settings import Settings

INFERENCE_PATHS = {f"{'/v2' if op.api else ''}/models/{{name}}{version}/{op.verb}"
                   for op in OPERATIONS for version in ("", "/versions/{version}")}


def test_inference_operations_are_documented_and_have_no_dead_route() -> None:
    app = create_app(Settings(model_repository=Path("unused")))
    schema = app.openapi()
    assert len(INFERENCE_PATHS) == 6 and set(schema["paths"]) >= INFERENCE_PATHS
    routed = {route.path for route in app.routes if isinstance(route, APIRoute)}
    assert not routed & INFERENCE_PATHS  # no FastAPI handler that the front would shadow
    for path in INFERENCE_PATHS:
        operation = schema["paths"][path]["post"]
        assert {"200", "404", "503"} <= set(operation["responses"]), path
        if not path.startswith("/v2/"):
            body = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            name = body.rsplit("/", 1)[1]
            assert name in ("PredictRequest", "StreamRequest") and name in schema["components"]["schemas"]
    predict = schema["components"]["schemas"]["PredictRequest"]
    assert predict["required"] == ["sequences"] and predict["additionalProperties"] is False
    assert len({op["post"]["operationId"] for p, op in schema["paths"].items() if p in INFERENCE_PATHS}) == 6
