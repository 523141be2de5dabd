"""POST /models/{name}/stream: one chunk of a sequence in, the answer for the whole prefix so far out.
Stateless (a signed state token goes back and forth) or server-held (sequence id, start/end flags)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Request

from service.api.deps import ModelDep
from service.api.errors import UnsupportedMediaType
from service.api.responses import NumpyJSONResponse
from service.api.routes.predict import prediction
from service.api.schemas import ERRORS, StreamRequest, StreamResponse
from service.api.stream_body import (
    InvalidState,
    SequenceGoneError,
    SequenceNotOpen,
    StreamChunk,
    StreamingUnsupported,
    parse_stream_body,
)
from service.runtime import ModelRuntime
from service.streaming.hub import StreamingHub
from service.streaming.sessions import SequenceGone
from service.streaming.tokens import StateTokenError

router = APIRouter(prefix="/models", tags=["stream"])

STREAM_ERRORS = ERRORS | {
    404: {"description": "unknown model, or a sequence id that is not open"},
    410: {"description": "the sequence ended, expired (idle) or was evicted (too many open)"},
}


@router.post(
    "/{name}/stream",
    response_model=None,
    responses={200: {"model": StreamResponse}, **STREAM_ERRORS},
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": StreamRequest.model_json_schema()}}}},
)
async def stream(request: Request, runtime: ModelDep) -> NumpyJSONResponse:
    manifest = runtime.manifest
    refusal = manifest.streaming_refusal
    if refusal:
        raise StreamingUnsupported(f"model {manifest.name!r} cannot stream: {refusal}; send whole "
                                   f"sequences to /models/{manifest.name}/predict instead", "name")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaType("send JSON with 'Content-Type: application/json'", "content-type")
    chunk = parse_stream_body(await request.body(), manifest.inputs)
    hub: StreamingHub = request.app.state.streaming
    if chunk.sequence_id is None:
        return NumpyJSONResponse(await _stateless(hub, runtime, chunk))
    return NumpyJSONResponse(await _held(hub, runtime, chunk))


async def _stateless(hub: StreamingHub, runtime: ModelRuntime, chunk: StreamChunk) -> dict[str, Any]:
    m = runtime.manifest
    state, seen = None, 0
    if chunk.state is not None:
        try:
            state, seen = hub.codec.decode(chunk.state, m.name, m.version, m.onnx.sha256, m.state.size)
        except StateTokenError as exc:
            raise InvalidState(str(exc), "state") from exc
    output, new_state = await hub.batcher(runtime).submit(chunk.steps, state)
    seen += len(chunk.steps)
    return {"model": m.name, "version": m.version, "steps_seen": seen,
            "prediction": prediction(m, output),
            "state": hub.codec.encode(m.name, m.version, m.onnx.sha256, new_state, seen)}


async def _held(hub: StreamingHub, runtime: ModelRuntime, chunk: StreamChunk) -> dict[str, Any]:
    m = runtime.manifest
    output, _, steps_seen = await held_chunk(hub, runtime, chunk.sequence_id or "", chunk.start,
                                             chunk.end, chunk.steps)
    return {"model": m.name, "version": m.version, "sequence_id": chunk.sequence_id,
            "steps_seen": steps_seen, "ended": chunk.end, "prediction": prediction(m, output)}


async def held_chunk(hub: StreamingHub, runtime: ModelRuntime, sequence_id: str, start: bool, end: bool,
                     steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """One chunk of a server-held sequence (also the Open Inference Protocol's sequence_id route):
    the output for the whole prefix, the new state (S,) and the steps seen so far."""
    m = runtime.manifest
    key = (m.name, sequence_id)
    if start:
        session = hub.sessions.start(key, m.version, m.onnx.sha256)
    else:
        try:
            session = hub.sessions.get(key)
        except SequenceGone as exc:
            if exc.reason == "unknown":
                raise SequenceNotOpen(str(exc), "sequence_id") from exc
            raise SequenceGoneError(exc.reason, str(exc)) from exc
        if (session.version, session.graph) != (m.version, m.onnx.sha256):
            hub.sessions.end(key)
            raise SequenceGoneError("ended", f"model {m.name!r} changed (now version {m.version}, graph "
                                    f"{m.onnx.sha256[:12]}) while sequence {sequence_id!r} was open; "
                                    "start it again")
    async with session.lock:  # chunks of one sequence run in arrival order
        output, session.state = await hub.batcher(runtime).submit(steps, session.state)
        session.steps += len(steps)
    if end:
        hub.sessions.end(key)
    return output, session.state, session.steps
