"""The Open Inference Protocol's gRPC service (Triton's `inference.GRPCInferenceService`, a superset of
KServe's), answered by the transport-free layer that REST's v2 routes use too: ModelInfer and
ModelStreamInfer are operations of the table (service/inference.py: the v2 codec's protobuf forms, the
model's scheduler, the server-held sequences), metadata, configuration and statistics come from
service/v2_model.py. Each RPC runs inside calls.scope: request id, auth, metrics, log, errors as gRPC
statuses.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from starlette.datastructures import State

from service.auth import Authenticator
from service.errors import ModelNotFound
from service.grpc import calls
from service.grpc.generated import grpc_service_pb2 as pb
from service.grpc.generated.grpc_service_pb2_grpc import GRPCInferenceServiceServicer
from service.inference import BY_VERB, Request, perform, resolve_model
from service.runtime import ModelRuntime
from service.v2_model import SERVER_NAME, SERVER_VERSION, metadata, model_config_for, statistics

M = TypeVar("M")
# The REST path of each operation: the Authenticator's rules for it apply unchanged.
LIVE_PATH, READY_PATH, SERVER_PATH, MODELS_PATH = "/v2/health/live", "/v2/health/ready", "/v2", "/v2/models"
EXTENSIONS = ["model_configuration", "statistics", "sequence"]  # the protocol's, as served over gRPC


class InferenceServicer(GRPCInferenceServiceServicer):
    """The RPCs gru-serve answers; the others (repository, shared memory, trace, log settings) answer
    UNIMPLEMENTED quietly (`unserved`, below: the generated base class's raise logs a traceback per call,
    which anyone without a token could flood the log with)."""

    def __init__(self, state: State, authenticator: Authenticator):
        self.state, self.auth = state, authenticator
        limit = state.settings.grpc_max_streams_per_client
        self.streams = calls.StreamCount(limit, "ModelStreamInfer streams open (GRU_GRPC_MAX_STREAMS_PER_"
                                         "CLIENT); close one, or send more requests on each stream")
        self.unary_calls = calls.StreamCount(limit, "unary calls open (GRU_GRPC_MAX_STREAMS_PER_CLIENT), "
                                             "each until its answer is read; read the answers, then call")
        self.closing = asyncio.Event()  # set at shutdown: open streams close (calls.until_idle)

    # -- health and metadata ------------------------------------------------------------------------

    async def ServerLive(self, request: pb.ServerLiveRequest, context: Any) -> pb.ServerLiveResponse:
        return await self._unary(request, context, "ServerLive", LIVE_PATH,
                                 lambda: pb.ServerLiveResponse(live=True), quiet=True)

    async def ServerReady(self, request: pb.ServerReadyRequest, context: Any) -> pb.ServerReadyResponse:
        return await self._unary(request, context, "ServerReady", READY_PATH, quiet=True,
                                 answer=lambda: pb.ServerReadyResponse(ready=self.state.repository.ready))

    async def ServerMetadata(self, request: pb.ServerMetadataRequest,
                             context: Any) -> pb.ServerMetadataResponse:
        answer = pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION,
                                           extensions=EXTENSIONS)
        return await self._unary(request, context, "ServerMetadata", SERVER_PATH, lambda: answer)

    async def ModelReady(self, request: pb.ModelReadyRequest, context: Any) -> pb.ModelReadyResponse:
        def ready() -> pb.ModelReadyResponse:  # not loaded is an answer here, not an error (as in Triton)
            try:
                self._model(request.name, request.version)
            except ModelNotFound:
                return pb.ModelReadyResponse(ready=False)
            return pb.ModelReadyResponse(ready=True)
        return await self._unary(request, context, "ModelReady", MODELS_PATH, ready)

    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Any) -> pb.ModelMetadataResponse:
        def describe() -> pb.ModelMetadataResponse:
            runtime = self._model(request.name, request.version)
            repository = self.state.repository
            versions = [runtime.manifest.version] if request.version else repository.versions(request.name)
            document = metadata(runtime.manifest, versions)
            return json_format.ParseDict(document, pb.ModelMetadataResponse())
        return await self._unary(request, context, "ModelMetadata", MODELS_PATH, describe)

    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Any) -> pb.ModelConfigResponse:
        def config() -> pb.ModelConfigResponse:
            document = model_config_for(self._model(request.name, request.version).manifest,
                                        self.state.services)
            if "sequence_batching" in document:  # Triton's ModelConfig holds one scheduler (a oneof)
                document.pop("dynamic_batching", None)
            return json_format.ParseDict({"config": document}, pb.ModelConfigResponse())
        return await self._unary(request, context, "ModelConfig", MODELS_PATH, config)

    async def ModelStatistics(self, request: pb.ModelStatisticsRequest,
                              context: Any) -> pb.ModelStatisticsResponse:
        """As GET /v2/models[/{name}[/versions/{v}]]/stats: no name, every loaded version of every model."""
        def stats() -> pb.ModelStatisticsResponse:
            repository = self.state.repository
            if not request.name:
                models = [(n, v) for n in sorted(repository.models) for v in repository.versions(n)]
            else:
                runtime = self._model(request.name, request.version)
                versions = [runtime.manifest.version] if request.version else None
                models = [(request.name, v) for v in versions or repository.versions(request.name)]
            return json_format.ParseDict(statistics(models), pb.ModelStatisticsResponse())
        return await self._unary(request, context, "ModelStatistics", MODELS_PATH, stats)

    # -- inference ----------------------------------------------------------------------------------

    async def ModelInfer(self, request: pb.ModelInferRequest, context: Any) -> pb.ModelInferResponse:
        return await self._unary(request, context, "ModelInfer", MODELS_PATH,
                                 lambda: self._infer("ModelInfer", request))

    async def ModelStreamInfer(self, requests: AsyncIterable[pb.ModelInferRequest],
                               context: Any) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """One answer per request, in order. A refused request is answered with its error_message and the
        stream goes on (as Triton's); a missing or wrong token, or a client over its stream limit, refuses
        the stream itself, and a stream idle for GRU_GRPC_STREAM_IDLE_S is closed. The chunks of a
        sequence (sequence_id, sequence_start, sequence_end parameters) use the REST stream's sessions."""
        client = calls.client_address(context.peer())
        async with calls.scope(self.state, self.auth, context, "ModelStreamInfer", MODELS_PATH, quiet=True):
            self.streams.open(client)  # after the token: a stranger cannot use up a client's streams
        try:
            async for request in calls.until_idle(requests, self.state.settings.grpc_stream_idle_s, context,
                                                  self.closing):
                try:
                    async with calls.scope(self.state, self.auth, context, "ModelStreamInfer", MODELS_PATH,
                                           abort=False, request_id=request.id, request=request):
                        response = pb.ModelStreamInferResponse(
                            infer_response=await self._infer("ModelStreamInfer", request))
                except calls.Failure as refused:
                    response = pb.ModelStreamInferResponse(error_message=refused.message)
                yield response
        finally:
            self.streams.close(client)

    async def _infer(self, method: str, message: pb.ModelInferRequest) -> pb.ModelInferResponse:
        """As POST /v2/models/{name}/infer: the operation of the table (service/inference.py)."""
        version = message.model_version or None  # "": the serving version
        return await perform(Request(BY_VERB[method], self.state.services, message.model_name, version,
                                     message).bind())

    def _model(self, name: str, version: str) -> ModelRuntime:
        return resolve_model(self.state.repository, name, version or None)  # "": the serving version

    async def _unary(self, request: Any, context: Any, method: str, path: str,
                     answer: Callable[[], M | Awaitable[M]], quiet: bool = False) -> M:
        async with calls.scope(self.state, self.auth, context, method, path, quiet=quiet, request=request):
            result = answer()
            return await result if inspect.isawaitable(result) else result
        raise AssertionError("unreachable: calls.scope aborts the call on every error")


def unserved(method: str) -> Callable[..., Awaitable[None]]:
    async def answer(self: InferenceServicer, request: Any, context: Any) -> None:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not served over gRPC by gru-serve"
                            + ("; the model repository is served over REST (/v2/repository/...)"
                               if method.startswith("Repository") else ""))
    return answer


for _method in vars(GRPCInferenceServiceServicer):
    if not _method.startswith("_") and _method not in vars(InferenceServicer):
        setattr(InferenceServicer, _method, unserved(_method))
