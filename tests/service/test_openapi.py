"""The inference operations are answered by service/api/front.py, never by a FastAPI route, and the
OpenAPI description documents them from the same table (service/inference.py), request bodies included."""

from __future__ import annotations

from pathlib import Path

from fastapi.routing import APIRoute

from service.api.app import create_app
from service.inference import OPERATIONS
from service.settings import Settings

INFERENCE_PATHS = {path for op in OPERATIONS if op.api != "grpc" for path in op.paths}


def test_inference_operations_are_documented_per_model_and_have_no_dead_route(repository: Path) -> None:
    """service/api/openapi.py documents the table's operations once per loaded model and version, with the
    request schema that model accepts (no stream for a model that cannot), and never the templates."""
    app = create_app(Settings(model_repository=repository))
    app.state.repository.load_all()
    schema = app.openapi()
    routed = {route.path for route in app.routes if isinstance(route, APIRoute)}
    assert len(INFERENCE_PATHS) == 6 and not routed & INFERENCE_PATHS  # no handler the front would shadow
    assert not set(schema["paths"]) & INFERENCE_PATHS
    no_stream = {"/models/airline/stream", "/models/airline/versions/1/stream"}  # airline cannot stream
    concrete = {path.replace("{name}", name).replace("{version}", "1") for path in INFERENCE_PATHS
                for name in ("italy", "airline")} - no_stream
    assert set(schema["paths"]) >= concrete and not no_stream & set(schema["paths"])
    for path in concrete:
        operation = schema["paths"][path]["post"]
        assert {"200", "404", "503"} <= set(operation["responses"]), path
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert body["additionalProperties"] is False and body["required"], path
    ids = [operation["operationId"] for item in schema["paths"].values() for operation in item.values()]
    assert len(set(ids)) == len(ids)  # every operation, one id: a route of two methods included
    assert schema["paths"]["/v2/repository/index"]["post"]["operationId"] == "index_v2_repository_index_post"
    predict = schema["components"]["schemas"]["PredictRequest"]  # the generic model, for other docs
    assert predict["required"] == ["sequences"] and predict["additionalProperties"] is False
