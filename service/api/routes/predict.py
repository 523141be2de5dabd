"""POST /models/{name}/predict: parse -> batcher (queue, run off the event loop) -> answer."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from service import metrics
from service.api.deps import BatchersDep, ModelDep, ModelVersionDep, SettingsDep
from service.api.errors import UnsupportedMediaType
from service.api.parsing import parse_predict_body
from service.api.responses import NumpyJSONResponse
from service.api.schemas import ERRORS, PredictRequest, PredictResponse
from service.batching import BatcherPool
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
async def predict(request: Request, runtime: ModelDep, settings: SettingsDep,
                  batchers: BatchersDep) -> NumpyJSONResponse:
    """Documents the endpoint; requests are answered by the same `answer` in service/api/fastpath.py."""
    content_type, body = request.headers.get("content-type"), await request.body()
    return NumpyJSONResponse(await answer(runtime, settings, batchers, content_type, body))


@router.post(
    "/{name}/versions/{version}/predict",
    response_model=None,
    responses={200: {"model": PredictResponse}, **ERRORS},
    openapi_extra=REQUEST_BODY,
)
async def predict_version(request: Request, runtime: ModelVersionDep, settings: SettingsDep,
                          batchers: BatchersDep) -> NumpyJSONResponse:
    """The same as /models/{name}/predict, on one loaded version (see GET /v2/models/{name})."""
    content_type, body = request.headers.get("content-type"), await request.body()
    return NumpyJSONResponse(await answer(runtime, settings, batchers, content_type, body))


async def answer(runtime: ModelRuntime, settings: Settings, batchers: BatcherPool, content_type: str | None,
                 body: bytes) -> dict[str, Any]:
    """media type -> parse -> batcher (queued, run off the event loop) -> the answer's content."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType(
            f"content type {media_type or '(none)'!r} is not supported; send JSON with "
            "'Content-Type: application/json'", "content-type")
    sequences = parse_predict_body(body, runtime.manifest.inputs, settings.max_sequences_per_request)
    metrics.SEQUENCES_PER_REQUEST.labels(runtime.manifest.name).observe(len(sequences))
    outputs = await batchers.get(runtime).submit(sequences)
    return render(runtime.manifest, outputs)


def render(manifest: Manifest, outputs: np.ndarray | list[np.ndarray]) -> dict[str, Any]:
    answer: dict[str, Any] = {"model": manifest.name, "version": manifest.version}
    if manifest.output.kind == "step_probabilities":
        answer["labels"] = manifest.output.labels or []
        answer["predictions"] = [prediction(manifest, steps) for steps in outputs]
    elif isinstance(outputs, list):
        raise TypeError("per-step outputs for a model that is not a tagging model")
    elif manifest.output.kind == "probabilities":
        labels = manifest.output.labels or []
        best = outputs.argmax(axis=1).tolist()
        answer["labels"] = labels
        answer["predictions"] = [
            {"label": labels[k], "probabilities": row} for k, row in zip(best, outputs, strict=True)
        ]
    else:
        answer["predictions"] = [{"forecast": row} for row in outputs]
    return answer


def prediction(manifest: Manifest, output: np.ndarray) -> dict[str, Any]:
    """One sequence's answer: output (O,), or (T, O) per-step probabilities for tagging."""
    labels = manifest.output.labels or []
    if manifest.output.kind == "step_probabilities":
        return {"steps": [labels[k] for k in output.argmax(axis=1).tolist()], "probabilities": output}
    if manifest.output.kind == "probabilities":
        return {"label": labels[int(output.argmax())], "probabilities": output}
    return {"forecast": output}
