"""OpenTelemetry tracing through a running `gru serve`, received by a real OTLP receiver started here:
opentelemetry-proto's TraceService over gRPC, and OTLP/HTTP's POST /v1/traces. A caller's traceparent
becomes the parent of the server span, which holds decode, queue wait, batch run and render."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as collector
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as collector_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

from tests.helpers import Server, free_port

SEQUENCE = [0.1] * 24
CALLER_TRACE, CALLER_SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
STAGES = ["decode", "queue wait", "batch run", "render"]


class Received:
    """Every span an OTLP receiver got, with its resource's attributes."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict, trace_pb2.Span]] = []
        self.lock = threading.Lock()

    def add(self, request: collector.ExportTraceServiceRequest) -> None:
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                self.spans += [(resource, s) for scope in resource_spans.scope_spans for s in scope.spans]

    def trace(self, trace_id: str, count: int, timeout: float = 15.0) -> list[trace_pb2.Span]:
        """The spans of one trace, once `count` of them arrived."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [s for _, s in self.spans if s.trace_id.hex() == trace_id]
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise TimeoutError(f"{len(found)} of {count} spans of trace {trace_id} arrived")


class GrpcReceiver(collector_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.received, self.port = Received(), free_port()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        collector_grpc.add_TraceServiceServicer_to_server(self, self.server)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def Export(self, request, context):  # noqa: N802 - the service's method name
        self.received.add(request)
        return collector.ExportTraceServiceResponse()


class HttpReceiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        self.received = Received()
        super().__init__(("127.0.0.1", free_port()), OtlpHttpHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


class OtlpHttpHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        assert self.path == "/v1/traces" and self.headers["content-type"] == "application/x-protobuf"
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.received.add(collector.ExportTraceServiceRequest.FromString(body))  # type: ignore[attr-defined]
        answer = collector.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def receiver():
    running = GrpcReceiver()
    yield running
    running.server.stop(None)


@pytest.fixture(scope="module")
def traced(repository: Path, receiver: GrpcReceiver):
    """`gru serve` (REST and gRPC) exporting to the receiver, spans sent every 50 ms; a 20 ms batching delay,
    so that concurrent requests share batches (no lone request runs on the event loop)."""
    running = Server(repository, GRU_TRACING="true", GRU_TRACING_ENDPOINT=f"http://127.0.0.1:{receiver.port}",
                     OTEL_BSP_SCHEDULE_DELAY="50", GRU_MAX_QUEUE_DELAY_MS="20", grpc=True).start()
    yield running
    running.stop()


def attributes(span: trace_pb2.Span) -> dict:
    values = {}
    for a in span.attributes:
        kind = a.value.WhichOneof("value")
        values[a.key] = getattr(a.value, kind)
    return values


def check_request_trace(spans: list[trace_pb2.Span], name: str, sequences: int) -> trace_pb2.Span:
    """One server span, the child of the caller's span, and its four stages in order inside it."""
    [server] = [s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER]
    assert server.name == name and server.parent_span_id.hex() == CALLER_SPAN
    stages = {s.name: s for s in spans if s.parent_span_id == server.span_id}
    assert sorted(stages) == sorted(STAGES)
    order = [stages[n] for n in STAGES]
    assert server.start_time_unix_nano <= order[0].start_time_unix_nano
    for before, after in zip(order, order[1:], strict=False):  # each ends where, or before, the next begins
        assert before.end_time_unix_nano <= after.start_time_unix_nano + 1000, (before.name, after.name)
    assert order[-1].end_time_unix_nano <= server.end_time_unix_nano
    model = {"gru.model": "italy", "gru.model.version": 1}
    assert attributes(server).items() >= model.items()
    batch = attributes(stages["batch run"])
    assert batch.items() >= model.items() and batch["gru.batch.size"] >= sequences
    assert server.span_id in {link.span_id for link in stages["batch run"].links}
    return server


def test_rest_request_is_traced_under_the_callers_span(traced: Server, receiver: GrpcReceiver) -> None:
    headers = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "tracestate": "caller=yes"}
    answer = httpx.post(f"{traced.url}/models/italy/predict", json={"sequences": [SEQUENCE, SEQUENCE]},
                        headers=headers)
    assert answer.status_code == 200
    spans = receiver.received.trace(CALLER_TRACE, 5)
    server = check_request_trace(spans, "POST /models/{name}/predict", 2)
    assert server.trace_state == "caller=yes"
    request_id = answer.headers["x-request-id"]
    assert attributes(server) | {"gru.request_id": request_id, "http.response.status_code": 200} == \
        attributes(server)
    [resource] = {json.dumps(r) for r, s in receiver.received.spans if s.span_id == server.span_id}
    assert json.loads(resource)["service.name"] == "gru-serve"
    traced.output_with(request_id)
    [access] = [e for e in traced.json_lines()
                if e.get("request_id") == request_id and e["logger"] == "gru_serve.access"]
    assert access["trace_id"] == CALLER_TRACE


def test_refused_requests_are_traced_too(traced: Server, receiver: GrpcReceiver) -> None:
    """A body refused while decoding: its server span and a decode span, no queue; a 4xx is no error."""
    trace = "5bf92f3577b34da6a3ce929d0e0e4736"
    bad = httpx.post(f"{traced.url}/models/italy/predict", json={"sequences": [[[1, 2]]]},
                     headers={"traceparent": f"00-{trace}-{CALLER_SPAN}-01"})
    assert bad.status_code == 422
    spans = receiver.received.trace(trace, 2)
    server, decode = sorted(spans, key=lambda s: s.kind != trace_pb2.Span.SPAN_KIND_SERVER)
    assert server.parent_span_id.hex() == CALLER_SPAN and decode.name == "decode"
    assert decode.parent_span_id == server.span_id
    assert attributes(server)["http.response.status_code"] == 422
    assert server.status.code == trace_pb2.Status.STATUS_CODE_UNSET
    time.sleep(0.3)  # nothing more arrives for it
    assert len(receiver.received.trace(trace, 2)) == 2


def test_grpc_call_is_traced_from_its_metadata(traced: Server, receiver: GrpcReceiver) -> None:
    trace = "0af7651916cd43dd8448eb211c80319c"
    x = triton_grpc.InferInput("x", [3, 24, 1], "FP32")
    x.set_data_from_numpy(np.full((3, 24, 1), 0.1, np.float32))
    with triton_grpc.InferenceServerClient(f"127.0.0.1:{traced.env['GRU_GRPC_PORT']}") as client:
        client.infer("italy", [x], headers={"traceparent": f"00-{trace}-{CALLER_SPAN}-01"})
    spans = receiver.received.trace(trace, 5)
    server = check_request_trace(spans, "inference.GRPCInferenceService/ModelInfer", 3)
    assert attributes(server)["rpc.grpc.status_code"] == 0


def test_a_batch_of_requests_is_one_span_linked_to_each(traced: Server, receiver: GrpcReceiver) -> None:
    """Concurrent requests share batches: a batch's span links every request span in it, and each of
    those requests (but the one it is the child of) links back to it."""
    for attempt in range(5):
        traces = [f"{attempt + 1:02x}{i + 1:030x}" for i in range(16)]
        with futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda t: httpx.post(
                f"{traced.url}/models/italy/predict", json={"sequences": [SEQUENCE]},
                headers={"traceparent": f"00-{t}-{CALLER_SPAN}-01"}), traces))
        spans = [s for t in traces for s in receiver.received.trace(t, 4)]  # 5 with the batch's child
        shared = [s for s in spans if s.name == "batch run" and len(s.links) > 1]
        if shared:
            break
    else:
        pytest.fail("no batch held two requests in 5 rounds of 16 concurrent requests")
    batch = shared[0]
    servers = {s.span_id: s for s in spans if s.kind == trace_pb2.Span.SPAN_KIND_SERVER}
    linked = [servers[link.span_id] for link in batch.links]
    assert attributes(batch)["gru.batch.requests"] == len(linked)
    assert batch.parent_span_id == linked[0].span_id
    for other in linked[1:]:
        assert [link.span_id for link in other.links] == [batch.span_id]


def test_otlp_over_http_and_a_bad_traceparent(repository: Path) -> None:
    receiver = HttpReceiver()
    server = Server(repository, GRU_TRACING="true", OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
                    OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{receiver.server_port}",
                    OTEL_BSP_SCHEDULE_DELAY="50", OTEL_SERVICE_NAME="gru-test").start()
    try:
        good = f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"
        url = f"{server.url}/v2/models/italy/infer"
        body = {"inputs": [{"name": "x", "shape": [1, 24, 1], "datatype": "FP32", "data": SEQUENCE}]}
        assert httpx.post(url, json=body, headers={"traceparent": good}).status_code == 200
        spans = receiver.received.trace(CALLER_TRACE, 5)
        check_request_trace(spans, "POST /v2/models/{name}/infer", 1)
        assert {r["service.name"] for r, _ in receiver.received.spans} == {"gru-test"}
        answer = httpx.post(url, json=body, headers={"traceparent": "00-not-a-trace-01"})
        assert answer.status_code == 200  # a malformed traceparent starts a new trace
        deadline, server_kind = time.monotonic() + 10, trace_pb2.Span.SPAN_KIND_SERVER
        while not (roots := [s for _, s in receiver.received.spans if s.kind == server_kind
                             and not s.parent_span_id]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert roots and roots[0].trace_id.hex() != CALLER_TRACE
    finally:
        server.stop()
        receiver.shutdown()


def run_python(code: str, repository: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GRU_MODEL_REPOSITORY": str(repository), **env})


def test_tracing_off_loads_no_sdk_and_on_without_it_says_what_to_install(repository: Path) -> None:
    """FastAPI imports the OpenTelemetry API itself; the SDK and exporters are the `tracing` extra's."""
    off = run_python("import sys; from service.api.app import create_app; create_app(); print(sorted(m for m "
                     "in sys.modules if m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter'))))",
                     repository)
    assert off.returncode == 0 and off.stdout.strip() == "[]", off.stderr
    missing = run_python("import sys; sys.modules['opentelemetry.sdk'] = None; from service.api.app import "
                         "create_app; create_app()", repository, GRU_TRACING="true")
    assert missing.returncode == 1
    assert "GRU_TRACING=true needs OpenTelemetry" in missing.stderr and "gru-serve[tracing]" in missing.stderr
