"""The Open Inference Protocol's gRPC service (Triton's `inference.GRPCInferenceService`, a superset of
KServe's), answered from the same objects as the REST routes: the repository, the v2 codec's checks,
the model's scheduler and the server-held streaming sessions.

Every call gets what an HTTP request gets from RequestMiddleware: a request id (the caller's
`x-request-id` metadata or a new one, sent back in the trailing metadata), the bearer token in the
`authorization` metadata checked by the same Authenticator under the REST path of the same operation,
one access log line, and gru_requests_total / gru_request_duration_seconds with api="grpc" and, as
`status`, the HTTP status the REST API gives for the same outcome. Errors carry the gRPC status of
that HTTP status (STATUS_CODES), the REST message, and `gru-error-code` / `gru-error-field` metadata.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from starlette.datastructures import State

from service import logs, metrics
from service.api.auth import Authenticator, Denial
from service.api.deps import resolve_model
from service.api.errors import DOMAIN_ERRORS, RETRY_AFTER_S, ApiError, ModelNotFound
from service.api.inference import Call
from service.api.routes import v2
from service.batching import QueueFull, SchedulerStopped
from service.grpc.codec import decode_infer, encode_infer
from service.grpc.generated import grpc_service_pb2 as pb
from service.grpc.generated.grpc_service_pb2_grpc import GRPCInferenceServiceServicer
from service.runtime import ModelRuntime

log = logging.getLogger("gru_serve.access")
M = TypeVar("M")
SERVICE = "/inference.GRPCInferenceService/"
# The REST path of each operation: the Authenticator's rules for it apply unchanged.
LIVE_PATH, READY_PATH, SERVER_PATH, MODELS_PATH = "/v2/health/live", "/v2/health/ready", "/v2", "/v2/models"
EXTENSIONS = ["model_configuration", "sequence"]  # of the protocol's, those served over gRPC
QUIET = {"ServerLive", "ServerReady"}  # probes: logged at debug, not counted (as the REST health routes)
STATUS_CODES = {  # the REST API's HTTP status -> the gRPC status of the same outcome
    400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED, 410: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED, 415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT, 431: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL, 503: grpc.StatusCode.UNAVAILABLE,
}


@dataclass
class Failure(Exception):
    """A refused call: the REST API's status and code for it, the message, and extra metadata."""

    status: int
    code: str
    message: str
    field: str | None = None
    retry_after_s: int | None = None

    def metadata(self, request_id: str) -> tuple[tuple[str, str], ...]:
        items = [("x-request-id", request_id), ("gru-error-code", self.code)]
        if self.field:
            items.append(("gru-error-field", self.field))
        if self.retry_after_s is not None:  # gRPC's retry pushback and the REST header's seconds
            items += [("grpc-retry-pushback-ms", str(self.retry_after_s * 1000)),
                      ("retry-after", str(self.retry_after_s))]
        return tuple(items)


def failure(exc: BaseException) -> Failure:
    if isinstance(exc, Failure):
        return exc
    if isinstance(exc, ApiError):
        return Failure(exc.status, exc.code, exc.message, exc.field)
    if isinstance(exc, QueueFull):
        message = f"{exc}; retry after {RETRY_AFTER_S} s, or raise GRU_MAX_QUEUE_SIZE or GRU_WORKERS"
        return Failure(503, "queue_full", message, retry_after_s=RETRY_AFTER_S)
    if isinstance(exc, DOMAIN_ERRORS):  # InferenceError
        log.error("inference failed: %s", exc)
        return Failure(500, "inference_failed", str(exc))
    log.exception("unexpected error")
    return Failure(500, "internal", "internal error; the server log has it under this request id")


def denied(denial: Denial) -> Failure:
    return Failure(denial.status, "unauthorized" if denial.status == 401 else "forbidden",
                   denial.message.replace("'Authorization: Bearer <token>'",
                                          "'authorization: Bearer <token>' metadata"), "authorization")


class InferenceServicer(GRPCInferenceServiceServicer):
    """The RPCs gru-serve answers; the others (repository, shared memory, trace, log settings) answer
    UNIMPLEMENTED through the generated base class."""

    def __init__(self, state: State, authenticator: Authenticator):
        self.state, self.auth = state, authenticator

    # -- health and metadata ------------------------------------------------------------------------

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return await self._unary(context, "ServerLive", LIVE_PATH, lambda: pb.ServerLiveResponse(live=True))

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return await self._unary(context, "ServerReady", READY_PATH,
                                 lambda: pb.ServerReadyResponse(ready=self.state.repository.ready))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: Any) -> pb.ServerMetadataResponse:
        answer = pb.ServerMetadataResponse(name=v2.SERVER_NAME, version=v2.SERVER_VERSION,
                                           extensions=EXTENSIONS)
        return await self._unary(context, "ServerMetadata", SERVER_PATH, lambda: answer)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        def ready() -> pb.ModelReadyResponse:  # not loaded is an answer here, not an error (as in Triton)
            try:
                self._model(request.name, request.version)
            except ModelNotFound:
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=True)
        return await self._unary(context, "ModelReady", MODELS_PATH, ready)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        def metadata() -> pb.ModelMetadataResponse:
            runtime = self._model(request.name, request.version)
            versions = [runtime.manifest.version] if request.version else self.state.repository.versions(
                request.name)
            document = v2.metadata(self.state.repository, runtime, versions)
            return json_format.ParseDict(document, pb.ModelMetadataResponse())
        return await self._unary(context, "ModelMetadata", MODELS_PATH, metadata)

    # -- inference ----------------------------------------------------------------------------------

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return await self._unary(context, "ModelInfer", MODELS_PATH, lambda: self._infer(request))

    async def ModelStreamInfer(self, requests: AsyncIterable[pb.ModelInferRequest],
                               context: Any) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """One answer per request, in order. A refused request is answered with its error_message and the
        stream goes on (as Triton's); a missing or wrong token refuses the stream itself. The chunks of a
        sequence (sequence_id, sequence_start, sequence_end parameters) use the REST stream's sessions."""
        async with self._call(context, "ModelStreamInfer", MODELS_PATH, quiet=True):
            pass  # the token, checked once for the stream
        async for request in requests:
            try:
                async with self._call(context, "ModelStreamInfer", MODELS_PATH, abort=False,
                                      request_id=request.id):
                    response = pb.ModelStreamInferResponse(infer_response=await self._infer(request))
            except Failure as refused:
                response = pb.ModelStreamInferResponse(error_message=refused.message)
            yield response

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """As POST /v2/models/{name}/infer: the scheduler is asked for room before anything is decoded,
        then the REST route's own code runs the decoded request."""
        call = self._v2_call(request)
        call.scheduler.check_room()
        decoded = decode_infer(request)
        try:
            arrays = await v2.answer(call, decoded)
        except SchedulerStopped:  # the version was retired meanwhile: the one serving now
            call = self._v2_call(request)
            arrays = await v2.answer(call, decoded)
        return encode_infer(call.runtime.manifest, decoded, arrays)

    def _v2_call(self, request: pb.ModelInferRequest) -> Call:
        runtime = self._model(request.model_name, request.model_version)
        state = self.state
        return Call(runtime, state.schedulers.get(runtime), state.settings, state.streaming, [], b"")

    def _model(self, name: str, version: str) -> ModelRuntime:
        if version and not version.isdigit():
            raise ModelNotFound(f"model version {version!r} is not a version number; loaded versions of "
                                f"{name!r}: {self.state.repository.versions(name)}", "version")
        return resolve_model(self.state.repository, name, int(version) if version else None)

    # -- what every call gets -----------------------------------------------------------------------

    async def _unary(self, context: Any, method: str, path: str, answer: Callable[[], M | Awaitable[M]]) -> M:
        async with self._call(context, method, path):
            result = answer()
            return await result if inspect.isawaitable(result) else result
        raise AssertionError("unreachable: _call aborts the call on every error")

    @asynccontextmanager
    async def _call(self, context: Any, method: str, path: str, quiet: bool = False, abort: bool = True,
                    request_id: str | None = None) -> AsyncIterator[None]:
        """Request id, auth, metrics and the access log around one call (quiet: debug log, not counted).
        An error becomes a Failure: the call is aborted with its gRPC status, or (abort=False, a request
        on a stream) the Failure is raised."""
        metadata = dict(context.invocation_metadata() or ())
        given = metadata.get("x-request-id") or request_id
        context_var = logs.RequestContext(logs.request_id_from(given), method="gRPC", path=SERVICE + method)
        token = logs.current.set(context_var)
        quiet, started = quiet or method in QUIET, time.perf_counter()
        refused: Failure | None = None
        if not quiet:
            metrics.IN_FLIGHT.inc()
        try:
            denial = self.auth.check(path, metadata.get("authorization"))
            if denial is not None:
                raise denied(denial)
            yield
        except Exception as exc:
            refused = failure(exc)
        finally:
            if not quiet:
                metrics.IN_FLIGHT.dec()
            self._account(context_var, refused, time.perf_counter() - started, quiet)
            logs.current.reset(token)
        if refused is not None:
            if not abort:
                raise refused
            await context.abort(STATUS_CODES.get(refused.status, grpc.StatusCode.UNKNOWN), refused.message,
                                refused.metadata(context_var.request_id))
        elif abort:
            context.set_trailing_metadata((("x-request-id", context_var.request_id),))

    def _account(self, call: logs.RequestContext, refused: Failure | None, duration: float,
                 quiet: bool) -> None:
        """The request counter, the latency histogram and the access log line; a queue_full refusal goes
        into the per-second refusal summary instead, as the REST APIs' refusals do."""
        status = refused.status if refused is not None else 200
        if refused is not None and refused.code == "queue_full" and call.model is not None:
            self.state.refusals.add(call.model, call.version, "grpc")
            quiet = True
        elif not quiet:
            model, version = call.model or "", str(call.version) if call.version is not None else ""
            metrics.REQUESTS.labels(model, version, "grpc", str(status)).inc()
            if model:
                metrics.REQUEST_SECONDS.labels(model, "grpc").observe(duration)
        level = logging.DEBUG if quiet or not self.state.settings.access_log else logging.INFO
        if log.isEnabledFor(level):
            log.log(level, "gRPC %s %s", call.path, status,
                    extra={"status": status, "duration_ms": round(duration * 1000, 3)})

