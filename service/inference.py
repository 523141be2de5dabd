"""The inference layer under every transport (REST: service/api/front.py; gRPC: service/grpc/servicer.py).

A transport finds the operation (`OPERATIONS`, the one table: api, verb, paths, decoder, handler,
renderer, the field an error points at, the error codes it documents), builds a `Request` naming the
model version, and calls `perform`: the scheduler is asked for room, the payload decoded (service/codecs/),
the handler runs it through the version's scheduler (service/batching.py), the renderer answers in the
API's own form. The REST dispatch, OpenAPI, the error forms, the log and metric labels and gRPC all read
the same table; nothing else answers "which operation is this?".
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.batching import Result, Scheduler, SchedulerPool, SchedulerStopped
from service.bundle import OUTPUT, STATE_INPUT, STATE_OUTPUT
from service.codecs import native, v2
from service.errors import (
    InvalidInput,
    InvalidState,
    ModelNotFound,
    SequenceGoneError,
    SequenceNotOpen,
    StreamingUnsupported,
)
from service.logs import note_model
from service.repository import VERSION_FOLDER, Repository
from service.runtime import ModelRuntime
from service.sessions import SequenceGone, SessionStore
from service.settings import Settings

GRPC_SERVICE = "/inference.GRPCInferenceService/"  # a gRPC call's path: this, then the method
JSON_HEADERS = [(b"content-type", b"application/json")]
SEQUENCE_PARAMETERS = ("sequence_id", "sequence_start", "sequence_end")
V2_ID_FIELD = "parameters.sequence_id"  # where v2 and gRPC name a sequence; the flags that open and end it
V2_FLAGS = ("parameters.sequence_start: true", "parameters.sequence_end: true")
Reply = tuple[bytes, list[tuple[bytes, bytes]]]  # a REST answer: body, headers (content-type at least)


@dataclass(frozen=True, slots=True)
class Services:
    """What the operations use, one of each per worker process (built by the app factory)."""

    settings: Settings
    repository: Repository
    schedulers: SchedulerPool
    tokens: native.StateCodec  # stateless streams' state tokens
    sessions: SessionStore  # server-held sequences (native stream and v2 sequence_id)


@dataclass(slots=True)
class Request:
    """One inference request as every transport builds it: the operation, the model version it names
    (bound to that version's runtime and scheduler), and what arrived."""

    operation: Operation
    services: Services
    name: str
    version: str | None  # as spelt (path segment, gRPC model_version); None: the serving version
    payload: Any = b""  # REST: the body; gRPC: the ModelInferRequest
    headers: Sequence[tuple[bytes, bytes]] = ()  # REST's (lower-case names); none over gRPC
    runtime: ModelRuntime = field(init=False)
    scheduler: Scheduler = field(init=False)

    def bind(self) -> Request:
        """Resolve the model version (ModelNotFound when not loaded) and its scheduler."""
        self.runtime = resolve_model(self.services.repository, self.name, self.version)
        self.scheduler = self.services.schedulers.get(self.runtime)
        return self

    def header(self, name: bytes) -> str | None:
        return next((v.decode("latin-1") for k, v in self.headers if k == name), None)

    def media_type(self) -> str:
        return (self.header(b"content-type") or "").split(";")[0].strip().lower()


@dataclass(frozen=True)
class Operation:
    api: str  # "native", "v2" or "grpc": the error form, and the api label of logs and metrics
    verb: str  # the path's last segment (REST) or the RPC's name (gRPC)
    paths: tuple[str, ...]  # templates ({name}, {version}); gRPC: the call's path
    decode: Callable[[Request], Any]
    handle: Callable[[Request, Any], Awaitable[Any]]  # (request, decoded) -> answer, through the scheduler
    render: Callable[[Request, Any, Any], Any]  # (request, decoded, answer) -> the API's answer
    error_field: str  # the request field a non-finite output is blamed on
    errors: tuple[str, ...]  # error codes it may answer besides every request's (OpenAPI documents them)
    summary: str = ""
    binary: bool = False  # REST: also takes float32 steps (application/octet-stream)


async def perform(request: Request) -> Any:
    """Decode, run and render one bound request; a version retired meanwhile: once more on the current."""
    try:
        return await _perform(request)
    except SchedulerStopped:
        return await _perform(request.bind())


async def _perform(request: Request) -> Any:
    op = request.operation
    request.scheduler.check_room()  # before decoding: refusing costs less than answering
    decoded = op.decode(request)
    return op.render(request, decoded, await op.handle(request, decoded))


def resolve_model(repository: Repository, name: str, version: str | None = None) -> ModelRuntime:
    """The runtime a request holds for its whole duration: a reload meanwhile does not change it.
    `version` as every API spells it (a path segment, gRPC's model_version): the version folders' own
    grammar, canonical ASCII digits; any other spelling ('01', '+1', '²', '٣') names no loaded version."""
    number = int(version) if version is not None and VERSION_FOLDER.fullmatch(version) else None
    runtime = repository.get(name, number) if version is None or number is not None else None
    if runtime is None:
        if version is not None and repository.get(name) is not None:
            raise ModelNotFound(f"model {name!r} has no loaded version {number or repr(version[:32])}; "
                                f"loaded versions: {repository.versions(name)}", "version")
        raise ModelNotFound(f"no model named {name!r}; loaded models: {sorted(repository.models)}", "name")
    note_model(name, runtime.manifest.version)
    return runtime


def json_reply(content: Any) -> Reply:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), JSON_HEADERS.copy()


# -- native predict ----------------------------------------------------------------------------------

def decode_predict(r: Request) -> list[np.ndarray]:
    return native.decode_predict(r.payload, r.media_type(), r.header(b"x-shape"), r.header(b"x-lengths"),
                                 r.runtime.manifest.inputs, r.services.settings.max_sequences_per_request)


async def run_sequences(r: Request, sequences: list[np.ndarray]) -> Result:
    return await r.scheduler.run(sequences)


def render_predict(r: Request, _: Any, result: Result) -> Reply:
    return json_reply(native.render_predict(r.runtime.manifest, result.outputs))


# -- native stream: stateless (a signed state token back and forth) or server-held (sequence id) ------

def decode_stream(r: Request) -> native.StreamChunk:
    manifest = r.runtime.manifest
    if manifest.streaming_refusal:
        raise StreamingUnsupported(f"model {manifest.name!r} cannot stream: {manifest.streaming_refusal}; "
                                   f"send whole sequences to /models/{manifest.name}/predict instead", "name")
    return native.decode_stream(r.payload, r.media_type(), manifest.inputs)


async def run_chunk(r: Request, chunk: native.StreamChunk) -> tuple[np.ndarray, np.ndarray, int]:
    """The output for the whole prefix so far, the state after the chunk (S,) and the steps seen."""
    if chunk.sequence_id is not None:
        return await held_chunk(r, chunk.sequence_id, chunk.start, chunk.end, chunk.steps)
    m, state, seen = r.runtime.manifest, None, 0
    if chunk.state is not None:
        try:
            state, seen = r.services.tokens.decode(chunk.state, m.name, m.version, m.onnx.sha256,
                                                   m.state.size)
        except native.StateTokenError as exc:
            raise InvalidState(str(exc), "state") from exc
    result = await r.scheduler.run([chunk.steps], None if state is None else state[None])
    return result.outputs[0], result.states[0], seen + len(chunk.steps)


def render_chunk(r: Request, chunk: native.StreamChunk, answer: tuple[np.ndarray, np.ndarray, int]) -> Reply:
    m, (output, state, seen) = r.runtime.manifest, answer
    document: dict[str, Any] = {"model": m.name, "version": m.version}
    if chunk.sequence_id is None:
        token = r.services.tokens.encode(m.name, m.version, m.onnx.sha256, state, seen)
        document |= {"steps_seen": seen, "prediction": native.prediction(m, output), "state": token}
    else:
        document |= {"sequence_id": chunk.sequence_id, "steps_seen": seen, "ended": chunk.end,
                     "prediction": native.prediction(m, output)}
    return json_reply(document)


async def held_chunk(r: Request, sequence_id: str | int, start: bool, end: bool, steps: np.ndarray,
                     id_field: str = "sequence_id") -> tuple[np.ndarray, np.ndarray, int]:
    """One chunk (T, F) of a server-held sequence (the native stream's and v2's sequence_id) through the
    version's scheduler: the output for the whole prefix, the new state (S,) and the steps seen so far.
    id_field: where the request names the sequence (v2: parameters.sequence_id), for its errors. An integer
    id and a string id are different sequences (7 and "7"), as Triton keeps them."""
    m, sessions = r.runtime.manifest, r.services.sessions
    key = (m.name, sequence_id)
    if start:
        session = sessions.start(key, m.version, m.onnx.sha256)
    else:
        with sequence_errors(id_field):
            session = sessions.get(key)
        if (session.version, session.graph) != (m.version, m.onnx.sha256):
            sessions.end(key)
            raise SequenceGoneError("ended", f"model {m.name!r} changed (now version {m.version}, graph "
                                    f"{m.onnx.sha256[:12]}) while sequence {sequence_id!r} was open; "
                                    "start it again", id_field)
    async with session.lock:  # chunks of one sequence run in arrival order
        with sequence_errors(id_field):
            sessions.confirm(key, session)  # not ended (or evicted) while this chunk waited
        carried = None if session.state is None else session.state[None]
        result = await r.scheduler.run([steps], carried)
        session.state = result.states[0]
        session.steps += len(steps)
    if end:
        sessions.end(key, session)
    return result.outputs[0], session.state, session.steps


@contextmanager
def sequence_errors(id_field: str) -> Iterator[None]:
    """A SequenceGone as the API's error: 404 for an unknown id, 410 naming why it is gone; the fix in the
    API's words (v2 and gRPC: parameters.sequence_start, not the native stream's "start")."""
    try:
        yield
    except SequenceGone as exc:
        message = exc.explain(*V2_FLAGS) if id_field == V2_ID_FIELD else str(exc)
        if exc.reason == "unknown":
            raise SequenceNotOpen(message, id_field) from exc
        raise SequenceGoneError(exc.reason, message, id_field) from exc


# -- Open Inference Protocol (v2) infer, over REST and gRPC ------------------------------------------

def decode_v2(r: Request) -> v2.InferRequest:
    return v2.decode_request(r.payload, r.header(v2.HEADER_LENGTH.encode()))


def decode_grpc(r: Request) -> v2.InferRequest:
    return v2.decode_infer(r.payload)


async def run_tensors(r: Request, decoded: v2.InferRequest) -> dict[str, np.ndarray]:
    """The outputs by name, from the model's scheduler or, with sequence_* parameters, a held sequence."""
    manifest = r.runtime.manifest
    x, state = v2.model_inputs(decoded, manifest, r.services.settings.max_sequences_per_request)
    if manifest.streaming_refusal and state is not None and state.any():  # zeros: a new sequence, exact
        raise StreamingUnsupported(f"model {manifest.name!r} cannot carry a state from an earlier request: "
                                   f"{manifest.streaming_refusal}; send each sequence whole, without "
                                   f"'{STATE_INPUT}' (or with zeros)", STATE_INPUT)
    if any(decoded.parameters.get(p) not in (None, 0, "", False) for p in SEQUENCE_PARAMETERS):
        output, next_state = await _sequence_chunk(r, decoded.parameters, x, state)
    else:
        result = await r.scheduler.run(list(x), state)
        output = np.stack(result.outputs) if isinstance(result.outputs, list) else result.outputs
        next_state = result.states
    return {OUTPUT: output, STATE_OUTPUT: next_state}


async def _sequence_chunk(r: Request, parameters: dict[str, Any], x: np.ndarray,
                          state: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """sequence_id / sequence_start / sequence_end: one chunk of a server-held sequence (the semantics of
    Triton's sequence batcher), sharing the native stream's sessions and the model's scheduler."""
    manifest = r.runtime.manifest
    if manifest.streaming_refusal:
        raise StreamingUnsupported(f"model {manifest.name!r} cannot stream: {manifest.streaming_refusal}",
                                   V2_ID_FIELD)
    sequence_id = parameters.get("sequence_id")
    if not isinstance(sequence_id, (int, str)) or isinstance(sequence_id, bool) or sequence_id in (0, ""):
        raise InvalidInput("sequence_start/sequence_end need a non-zero sequence_id (int or string)",
                           V2_ID_FIELD)
    if x.shape[0] != 1 or state is not None:
        raise InvalidInput("a sequence chunk is one sequence (x [1, time, features]) without a state: the "
                           "server holds the state", "x.shape")
    output, next_state, _ = await held_chunk(
        r, sequence_id, bool(parameters.get("sequence_start")),
        bool(parameters.get("sequence_end")), x[0], V2_ID_FIELD)
    return output[None], next_state[None]  # batch axis back: output [1, ...], next_state [1, S]


def render_v2(r: Request, decoded: v2.InferRequest, arrays: dict[str, np.ndarray]) -> Reply:
    content, headers = v2.encode_response(r.runtime.manifest, decoded, arrays)
    return content, [(k.encode(), v.encode()) for k, v in headers.items()]


def render_grpc(r: Request, decoded: v2.InferRequest, arrays: dict[str, np.ndarray]) -> Any:
    from service.grpc.generated.grpc_service_pb2 import ModelInferResponse  # only gRPC renders protobuf

    return v2.encode_infer(r.runtime.manifest, decoded, arrays, ModelInferResponse())


# -- the table ---------------------------------------------------------------------------------------

def _rest(prefix: str, verb: str) -> tuple[str, ...]:
    return f"{prefix}/models/{{name}}/{verb}", f"{prefix}/models/{{name}}/versions/{{version}}/{verb}"


REFUSALS = ("output_not_finite", "queue_full", "inference_failed")  # any operation that runs the model
SEQUENCES = ("sequence_not_found", "sequence_ended", "sequence_expired", "sequence_evicted")
OPERATIONS = (
    Operation("native", "predict", _rest("", "predict"), decode_predict, run_sequences, render_predict,
              "sequences", ("unsupported_media_type", *REFUSALS), "Predict whole sequences", binary=True),
    Operation("native", "stream", _rest("", "stream"), decode_stream, run_chunk, render_chunk, "steps",
              ("unsupported_media_type", "streaming_unsupported", "invalid_state", *SEQUENCES, *REFUSALS),
              "Stream a sequence in chunks (carried state)"),
    Operation("v2", "infer", _rest("/v2", "infer"), decode_v2, run_tensors, render_v2, "inputs",
              ("streaming_unsupported", *SEQUENCES, *REFUSALS), "Infer (KServe v2 / Triton)"),
    Operation("grpc", "ModelInfer", (GRPC_SERVICE + "ModelInfer",), decode_grpc, run_tensors, render_grpc,
              "inputs", ("streaming_unsupported", *SEQUENCES, *REFUSALS), "Infer (KServe v2 / Triton)"),
    Operation("grpc", "ModelStreamInfer", (GRPC_SERVICE + "ModelStreamInfer",), decode_grpc, run_tensors,
              render_grpc, "inputs", ("streaming_unsupported", *SEQUENCES, *REFUSALS),
              "Infer, many requests on one stream"),
)
BY_VERB = {op.verb: op for op in OPERATIONS if op.api == "grpc"}


def _pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(r"\{name\}", "(?P<name>[^/]+)")
                      .replace(r"\{version\}", "(?P<version>[^/]+)"))  # any spelling: resolve_model's 404


_ROUTES: dict[str, list[tuple[re.Pattern[str], Operation]]] = {}  # by the path's last segment
for _op in OPERATIONS:
    for _template in _op.paths:
        _ROUTES.setdefault(_template.rsplit("/", 1)[-1], []).append((_pattern(_template), _op))


def find(path: str) -> tuple[Operation, str, str | None] | None:
    """The operation a path names, with the model name and version it gives (None: not an operation)."""
    for pattern, op in _ROUTES.get(path[path.rfind("/") + 1:], ()):
        match = pattern.fullmatch(path)
        if match is not None:
            groups = match.groupdict()
            return op, groups.get("name") or "", groups.get("version")
    return None


def api_of(path: str) -> str:
    """The api a path belongs to, for its error form, logs and metrics: its operation's, or by prefix."""
    found = find(path)
    if found is not None:
        return found[0].api
    if path.startswith(GRPC_SERVICE):
        return "grpc"
    return "v2" if path == "/v2" or path.startswith("/v2/") else "native"
