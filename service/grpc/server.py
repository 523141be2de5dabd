"""The gRPC server's life: started in the app's lifespan on the worker's event loop (so that it shares
the repository, the schedulers and the sessions with the HTTP routes), stopped before them.

With several worker processes each one listens on GRU_GRPC_PORT with SO_REUSEPORT and the kernel
spreads connections over them, as uvicorn's shared socket spreads HTTP connections. A gRPC channel is
one HTTP/2 connection, so one client's calls all go to one worker (its streamed sequences too)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from starlette.datastructures import State

from service.auth import Authenticator
from service.grpc import calls
from service.grpc.generated import grpc_service_pb2 as pb
from service.grpc.servicer import MODELS_PATH, READY_PATH, InferenceServicer
from service.settings import INT32_MAX, Settings

log = logging.getLogger("gru_serve.grpc")
SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]


def address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def options(settings: Settings) -> list[tuple[str, int]]:
    """The HTTP limits, as gRPC states them (a call over them gets RESOURCE_EXHAUSTED), and the calls one
    connection may have open at once (the servicer caps a client's streams and closes idle ones)."""
    limits = [
        ("grpc.max_receive_message_length", settings.max_body_bytes),
        ("grpc.max_metadata_size", settings.max_header_bytes),
        ("grpc.absolute_max_metadata_size", settings.max_header_bytes),
        ("grpc.server_handshake_timeout_ms", settings.header_timeout_s * 1000),
        ("grpc.max_connection_idle_ms", settings.keep_alive_timeout_s * 1000),
        ("grpc.max_concurrent_streams", settings.grpc_max_streams_per_connection),
    ]
    # gRPC's options are 32-bit: a larger setting (GRU_MAX_BODY_BYTES=5e9) failed start-up with a
    # traceback. Its largest value is as good as no limit (2 GiB, 24 days).
    clamped = [(name, min(int(value), INT32_MAX)) for name, value in limits]
    return [*clamped, ("grpc.so_reuseport", int(settings.workers != 1))]  # one worker: a busy port fails


def register(servicer: InferenceServicer, server: grpc.aio.Server, body_timeout_s: float) -> None:
    """As the generated add_GRPCInferenceServiceServicer_to_server, with requests parsed by
    calls.readable (a message that is not valid protobuf is INVALID_ARGUMENT naming it, not grpc's UNKNOWN
    and a traceback in the log) and the unary RPCs' messages awaited within GRU_BODY_TIMEOUT_S
    (calls.one_message)."""
    handlers = {}
    for method in SERVICE.methods:  # ModelStreamInfer streams both ways, the others are unary
        request, response = getattr(pb, method.input_type.name), getattr(pb, method.output_type.name)
        behavior = getattr(servicer, method.name)
        if method.client_streaming:
            kind = grpc.stream_stream_rpc_method_handler
        else:
            kind, behavior = grpc.stream_unary_rpc_method_handler, calls.one_message(
                behavior, method.input_type.name, body_timeout_s, servicer.unary_calls)
        handlers[method.name] = kind(behavior, request_deserializer=calls.readable(request),
                                     response_serializer=response.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
    server.add_registered_method_handlers(SERVICE.full_name, handlers)


@dataclass
class GrpcService:
    server: grpc.aio.Server
    servicer: InferenceServicer

    async def stop(self, grace_s: float) -> None:
        """New calls are refused; calls in flight finish (within grace_s); open streams close after the
        answer in progress."""
        self.servicer.closing.set()
        await self.server.stop(grace_s)


async def start(state: State, authenticator: Authenticator) -> GrpcService:
    """Listen on GRU_GRPC_PORT; a port that cannot be bound stops start-up with the reason."""
    settings: Settings = state.settings
    # GRU_MAX_CONNECTIONS bounds the open HTTP connections, each one request at a time; here the calls.
    server = grpc.aio.server(options=options(settings), maximum_concurrent_rpcs=settings.max_connections)
    servicer = InferenceServicer(state, authenticator)
    register(servicer, server, settings.body_timeout_s)
    where = address(settings.host, settings.grpc_port)
    try:
        server.add_insecure_port(where)
    except RuntimeError as exc:
        raise RuntimeError(f"GRU_GRPC_PORT: cannot listen on {where} ({exc}); choose a free port or 0 "
                           "to turn gRPC off") from None
    await server.start()
    log.info("gRPC: Open Inference Protocol (inference.GRPCInferenceService) on %s; inference and metadata: "
             "%s; health: %s", where, authenticator.rule(MODELS_PATH), authenticator.rule(READY_PATH))
    return GrpcService(server, servicer)

