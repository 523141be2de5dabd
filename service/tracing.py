"""OpenTelemetry tracing, off by default (GRU_TRACING=true turns it on; it needs the `tracing` extra).

One request is one server span, child of the caller's W3C `traceparent`/`tracestate` (REST headers, gRPC
metadata), with children that follow it through the service:

    decode      the body read (REST) or the call begun (gRPC) -> its sequences queued for the model
    queue wait  queued -> taken into a batch by the scheduler's thread
    batch run   the batch's onnxruntime runs: one span per batch, the child of its first request's span
                and linked to every request span in it (the others get a link back to it)
    render      the answer handed back -> the response sent (the gap before it: the event loop's wake-up)

Spans carry the model, version and batch size; the request span its request id, and the access log line
its trace id (service/logs.py). The spans of the scheduler's stages are made after the fact from the
times it keeps anyway, so the inference thread only builds them once the batch has run.

While tracing is off, `enabled` is False and nothing here runs: the HTTP layer (service/api/traced.py) is
not installed, and the scheduler and the gRPC calls (service/batching.py, service/grpc/calls.py) test that
one flag. The exporter (OTLP over gRPC or HTTP), the sampler, the service name and the batch processor's
timing come from the standard OTEL_* environment variables, which the SDK reads itself;
GRU_TRACING_ENDPOINT and GRU_TRACING_PROTOCOL (service/settings.py) are shortcuts for the first.
"""

from __future__ import annotations

import time
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from service import logs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from service.bundle import Manifest
    from service.settings import Settings

enabled = False  # read on the hot path; set by configure() in each worker process
_tracer: Tracer
_provider: TracerProvider | None = None
GRPC_SERVICE = "inference.GRPCInferenceService"


@dataclass(slots=True)
class RequestTrace:
    """One request's span and the times its children are built from (perf_counter seconds)."""

    span: Span
    context: Context  # the span's: its children's parent
    decode_from: float | None = None  # REST: the body arrived; gRPC: the call began
    queued_at: float | None = None
    answered_at: float | None = None
    tokens: tuple[Token[RequestTrace | None], Token[str | None]] | None = None


current: ContextVar[RequestTrace | None] = ContextVar("gru_trace", default=None)


def configure(settings: Settings) -> None:
    """Start exporting (in this worker process) when GRU_TRACING is on."""
    global enabled, _tracer, _provider
    if not settings.tracing or enabled:
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise SystemExit(f"GRU_TRACING=true needs OpenTelemetry ({exc.name} is missing): pip install "
                         "'gru-serve[tracing]', or unset GRU_TRACING") from None
    from service.metrics import package_version

    resource = Resource.create({"service.version": package_version()})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "gru-serve"}))  # OTEL_SERVICE_NAME unset
    _provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER (parent-based default)
    _provider.add_span_processor(BatchSpanProcessor(exporter(settings)))
    _tracer = _provider.get_tracer("gru_serve")
    enabled = True


def exporter(settings: Settings) -> Any:
    endpoint = settings.tracing_endpoint or None  # None: the OTEL_EXPORTER_OTLP_* variables, or localhost
    if settings.tracing_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]
    return OTLPSpanExporter(endpoint=endpoint)


def shutdown() -> None:
    """Export what is left (at the worker's exit)."""
    global enabled, _provider
    if _provider is not None:
        _provider.shutdown()
    enabled, _provider = False, None


def begin(carrier: dict[str, str], name: str, attributes: dict[str, Any]) -> RequestTrace:
    """A request's server span, the child of the caller's traceparent in `carrier` (lower-case names),
    made current: its trace id goes into the request's log context."""
    from opentelemetry import propagate, trace

    parent = propagate.extract(carrier)  # OTEL_PROPAGATORS: W3C tracecontext and baggage by default
    span = _tracer.start_span(name, context=parent, kind=trace.SpanKind.SERVER, attributes=attributes)
    request = RequestTrace(span, trace.set_span_in_context(span, parent))
    trace_id = span.get_span_context().trace_id
    request.tokens = (current.set(request), logs.trace_id.set(trace.format_trace_id(trace_id)))
    return request


def end(request: RequestTrace, context: logs.RequestContext | None, status: int,
        attributes: dict[str, Any]) -> None:
    """The request's answer is sent with `status` (gRPC: REST's status for the outcome): its decode (if it
    failed before the queue) and render spans, and the request span itself, with what the log context
    learnt (model, version, request id). A server error (5xx) marks the span an error."""
    span = request.span
    if span.is_recording():  # not sampled: nothing to record
        from opentelemetry.trace import Status, StatusCode

        now = time.perf_counter()
        if request.queued_at is None and request.decode_from is not None and status >= 400:
            _child(request, "decode", request.decode_from, now, {})  # refused while decoding
        if request.answered_at is not None:
            _child(request, "render", request.answered_at, now, {})
        if context is not None:
            span.set_attributes({"gru.request_id": context.request_id, **_model_attributes(context)})
        span.set_attributes(attributes)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
    if request.tokens is not None:
        current.reset(request.tokens[0])
        logs.trace_id.reset(request.tokens[1])


def begin_grpc(metadata: dict[str, str], method: str) -> RequestTrace:
    """A gRPC call's server span (one per request on a stream), the child of its `traceparent` metadata."""
    request = begin(metadata, f"{GRPC_SERVICE}/{method}", {
        "rpc.system": "grpc", "rpc.service": GRPC_SERVICE, "rpc.method": method, "gru.api": "grpc"})
    request.decode_from = time.perf_counter()  # the message is in: decoding its tensors starts
    return request


def end_grpc(request: RequestTrace, context: logs.RequestContext, status: int, code: Any) -> None:
    """`status`: REST's status for the outcome; `code`: the grpc.StatusCode sent."""
    end(request, context, status, {"rpc.grpc.status_code": code.value[0]})


def queued(queued_at: float, sequences: int) -> RequestTrace | None:
    """The current request's sequences are queued (on the event loop): its decode span ends here."""
    request = current.get()
    if request is None or not request.span.is_recording():
        return None
    request.queued_at = queued_at
    if request.decode_from is not None:
        _child(request, "decode", request.decode_from, queued_at, {"gru.sequences": sequences})
    return request


def answered(request: RequestTrace) -> None:
    request.answered_at = time.perf_counter()


class Work(Protocol):
    """A queued request as batch_ran reads it (service/batching.py's Work; a protocol, so that the
    scheduler, which calls this module, is not imported by it)."""
    sequences: list[Any]
    queued_at: float
    trace: RequestTrace | None
    future: Any


def batch_ran(manifest: Manifest, batch: Sequence[Work], started: float, ended: float) -> None:
    """On the inference thread, after a batch ran: each traced request's queue wait span, and the batch
    run span, the child of the first traced request and linked to all of them."""
    from opentelemetry.trace import Link

    traced = [(w, w.trace) for w in batch if w.trace is not None and not w.future.done()]
    if not traced:
        return
    model = {"gru.model": manifest.name, "gru.model.version": manifest.version}
    for work, request in traced:
        sequences = {"gru.sequences": len(work.sequences)}
        _child(request, "queue wait", work.queued_at, started, {**model, **sequences})
    first = traced[0][1]
    links = [Link(request.span.get_span_context()) for _, request in traced]
    size = {"gru.batch.size": sum(len(w.sequences) for w in batch), "gru.batch.requests": len(batch)}
    run = _child(first, "batch run", started, ended, {**model, **size}, links)
    for _, request in traced[1:]:
        request.span.add_link(run.get_span_context(), {"gru.link": "batch run"})


def _child(request: RequestTrace, name: str, start: float, stop: float, attributes: dict[str, Any],
           links: list[Any] | None = None) -> Span:
    """A finished child span of the request's, from perf_counter times."""
    to_ns = time.time_ns() - time.perf_counter_ns()
    span = _tracer.start_span(name, context=request.context, attributes=attributes, links=links,
                              start_time=int(start * 1e9) + to_ns)
    span.end(end_time=int(stop * 1e9) + to_ns)
    return span


def _model_attributes(context: logs.RequestContext) -> dict[str, Any]:
    if context.model is None:
        return {}
    return {"gru.model": context.model, "gru.model.version": context.version or 0}
