"""Native stream, POST /models/{name}[/versions/{v}]/stream (routed by service/api/inference.py): one
chunk of a sequence in (service/api/stream_body.py), the answer for the whole prefix so far out.
Stateless (a signed state token goes back and forth) or server-held (sequence id, start/end flags).
Chunks run through the model's scheduler with their carried states, batched with every other API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from service.api.errors import InvalidState, SequenceGoneError, SequenceNotOpen, StreamingUnsupported
from service.api.routes.predict import prediction
from service.api.schemas import ERRORS as PREDICT_ERRORS
from service.api.stream_body import StreamChunk, parse_stream_body
from service.batching import Scheduler
from service.runtime import ModelRuntime
from service.streaming.hub import StreamingHub
from service.streaming.sessions import SequenceGone
from service.streaming.tokens import StateTokenError

if TYPE_CHECKING:
    from service.api.inference import Call, Reply

ERRORS = PREDICT_ERRORS | {
    404: {"description": "unknown model, or a sequence id that is not open"},
    410: {"description": "the sequence ended, expired (idle) or was evicted (too many open)"},
}


async def stream(call: Call) -> Reply:
    manifest = call.runtime.manifest
    refusal = manifest.streaming_refusal
    if refusal:
        raise StreamingUnsupported(f"model {manifest.name!r} cannot stream: {refusal}; send whole "
                                   f"sequences to /models/{manifest.name}/predict instead", "name")
    call.require_json()
    chunk = parse_stream_body(call.body, manifest.inputs)
    if chunk.sequence_id is None:
        return call.json(await _stateless(call, chunk))
    return call.json(await _held(call, chunk))


async def _stateless(call: Call, chunk: StreamChunk) -> dict[str, Any]:
    m, codec = call.runtime.manifest, call.streaming.codec
    state, seen = None, 0
    if chunk.state is not None:
        try:
            state, seen = codec.decode(chunk.state, m.name, m.version, m.onnx.sha256, m.state.size)
        except StateTokenError as exc:
            raise InvalidState(str(exc), "state") from exc
    result = await call.scheduler.run([chunk.steps], None if state is None else state[None])
    seen += len(chunk.steps)
    return {"model": m.name, "version": m.version, "steps_seen": seen,
            "prediction": prediction(m, result.outputs[0]),
            "state": codec.encode(m.name, m.version, m.onnx.sha256, result.states[0], seen)}


async def _held(call: Call, chunk: StreamChunk) -> dict[str, Any]:
    m = call.runtime.manifest
    output, _, steps_seen = await held_chunk(call.streaming, call.runtime, call.scheduler,
                                             chunk.sequence_id or "", chunk.start, chunk.end, chunk.steps)
    return {"model": m.name, "version": m.version, "sequence_id": chunk.sequence_id,
            "steps_seen": steps_seen, "ended": chunk.end, "prediction": prediction(m, output)}


async def held_chunk(hub: StreamingHub, runtime: ModelRuntime, scheduler: Scheduler, sequence_id: str,
                     start: bool, end: bool, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
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
        carried = None if session.state is None else session.state[None]
        result = await scheduler.run([steps], carried)
        session.state = result.states[0]
        session.steps += len(steps)
    if end:
        hub.sessions.end(key)
    return result.outputs[0], session.state, session.steps
