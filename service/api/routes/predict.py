"""POST /models/{name}/predict: parse -> run (off the event loop) -> answer."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from service import metrics
from service.api.deps import ModelDep, ModelVersionDep, SettingsDep
from service.api.errors import UnsupportedMediaType
from service.api.parsing import parse_predict_body
from service.api.responses import NumpyJSONResponse
from service.api.schemas import ERRORS, PredictRequest, PredictResponse
from service.bundle import Manifest
from service.runtime import ModelRuntime
from service.settings import Settings

router = APIRouter(prefix="/models", tags=["predict"])

REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
    }
}


@router.post(
    "/{name}/predict",
    response_model=None,
    responses={200: {"model": PredictResponse}, **ERRORS},
    openapi_extra=REQUEST_BODY,
)
async def predict(request: Request, runtime: ModelDep, settings: SettingsDep) -> NumpyJSONResponse:
    return await _predict(request, runtime, settings)


@router.post(
    "/{name}/versions/{version}/predict",
    response_model=None,
    responses={200: {"model": PredictResponse}, **ERRORS},
    openapi_extra=REQUEST_BODY,
)
async def predict_version(
    request: Request, runtime: ModelVersionDep, settings: SettingsDep
) -> NumpyJSONResponse:
    """The same as /models/{name}/predict, on one loaded version (see GET /v2/models/{name})."""
    return await _predict(request, runtime, settings)


async def _predict(request: Request, runtime: ModelRuntime, settings: Settings) -> NumpyJSONResponse:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(
            f"content type {media_type or '(none)'!r} is not supported; send JSON with "
            "'Content-Type: application/json'", "content-type")
    body = await request.body()
    sequences = parse_predict_body(body, runtime.manifest.inputs, settings.max_sequences_per_request)
    metrics.SEQUENCES_PER_REQUEST.labels(runtime.manifest.name).observe(len(sequences))
    outputs = await run_in_threadpool(runtime.predict_many, sequences)
    return NumpyJSONResponse(render(runtime.manifest, outputs))


def render(manifest: Manifest, outputs: np.ndarray) -> dict[str, Any]:
    answer: dict[str, Any] = {"model": manifest.name, "version": manifest.version}
    if manifest.output.kind == "probabilities":
        labels = manifest.output.labels or []
        best = outputs.argmax(axis=1).tolist()
        answer["labels"] = labels
        answer["predictions"] = [
            {"label": labels[k], "probabilities": row} for k, row in zip(best, outputs, strict=True)
        ]
    else:
        answer["predictions"] = [{"forecast": row} for row in outputs]
    return answer
