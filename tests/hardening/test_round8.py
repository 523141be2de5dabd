"""Hardening round 8 (HTTP/2 frames against the gRPC port, gRPC metadata, the v2 binary extension, the
repository while serving): each defect found, tried the way it was found. docs/guides/limits.md lists
them. The project has no HTTP/2 library: the frames are written here (HPACK literals, no Huffman)."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

import grpc
import httpx
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.helpers import Server

# -- raw HTTP/2 ---------------------------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING = 0, 1, 3, 4, 6
END_STREAM, END_HEADERS, ACK = 1, 4, 1
INITIAL_WINDOW_SIZE = 4
ATTACKER = "127.0.0.2"  # another client address than the good client's 127.0.0.1 (all of 127/8 is loopback)


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_length(n: int) -> bytes:  # an HPACK integer with a 7-bit prefix (a string's length, no Huffman)
    if n < 127:
        return bytes([n])
    out, n = [127], n - 127
    while n >= 128:
        out, n = [*out, n % 128 + 128], n // 128
    return bytes([*out, n])


def call_headers(method: str) -> bytes:
    """A gRPC call's request headers, each a literal field without indexing."""
    fields = [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"x"),
              (b":path", b"/inference.GRPCInferenceService/" + method.encode()),
              (b"content-type", b"application/grpc"), (b"te", b"trailers")]
    return b"".join(b"\x00" + hpack_length(len(k)) + k + hpack_length(len(v)) + v for k, v in fields)


def grpc_message(data: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", len(data)) + data


def unary_call(stream: int, data: bytes | None) -> bytes:
    """A ModelInfer call on `stream`: with its message and ended, or (data None) its headers only."""
    headers = frame(HEADERS, END_HEADERS, stream, call_headers("ModelInfer"))
    return headers if data is None else headers + frame(DATA, END_STREAM, stream, grpc_message(data))


class RawClient:
    """One HTTP/2 connection from ATTACKER that acknowledges the server's SETTINGS and PINGs, as a live
    client does, and sends a WINDOW_UPDATE only if asked: with window 0, no answer's DATA can come."""

    def __init__(self, address: str, window: int):
        host, port = address.rsplit(":", 1)
        self.sock = socket.socket()
        self.sock.bind((ATTACKER, 0))
        self.sock.connect((host, int(port)))
        self.lock, self.next_stream = threading.Lock(), 1
        self.send(PREFACE + frame(SETTINGS, 0, 0, struct.pack(">HI", INITIAL_WINDOW_SIZE, window)))
        threading.Thread(target=self._acknowledge, daemon=True).start()

    def send(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)

    def call(self, data: bytes | None) -> None:
        self.send(unary_call(self.next_stream, data))
        self.next_stream += 2

    def _acknowledge(self) -> None:
        with contextlib.suppress(OSError):
            while len(head := self.sock.recv(9, socket.MSG_WAITALL)) == 9:
                kind, flags, length = head[3], head[4], int.from_bytes(head[:3], "big")
                payload = self.sock.recv(length, socket.MSG_WAITALL) if length else b""
                if kind == SETTINGS and not flags & ACK:
                    self.send(frame(SETTINGS, ACK, 0))
                elif kind == PING and not flags & ACK:
                    self.send(frame(PING, ACK, 0, payload))

    def close(self) -> None:
        self.sock.close()


def infer_request() -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name="italy")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 5, 1])
    request.raw_input_contents.append(np.full((1, 5, 1), 0.5, np.float32).tobytes())
    return request


# -- 1. gRPC calls that hold their call slots --------------------------------------------------------------

@pytest.fixture(scope="module")
def few_slots(repository):
    """20 call slots (GRU_MAX_CONNECTIONS), at most 4 of them one client's."""
    running = Server(repository, grpc=True, GRU_MAX_CONNECTIONS="20", GRU_GRPC_MAX_STREAMS_PER_CLIENT="4",
                     GRU_BODY_TIMEOUT_S="3").start()
    yield running
    running.stop()


def good_calls_while(server: Server, attack: RawClient, seconds: float) -> list[str]:
    """The outcome of another client's ModelInfer calls, one every 0.5 s, while `attack` goes on."""
    outcomes = []
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                stub.ModelInfer(infer_request(), timeout=5)
                outcomes.append("OK")
            except grpc.RpcError as exc:
                outcomes.append(f"{exc.code().name} {exc.details()}")
            time.sleep(0.5)
            attack.call(b"\xff\xff")  # refused at once (not protobuf): keeps the connection from idling
    return outcomes


def test_calls_whose_answers_are_never_read_do_not_hold_every_slot(few_slots) -> None:
    # before: a client that never opens its HTTP/2 flow-control window (SETTINGS_INITIAL_WINDOW_SIZE 0,
    # no WINDOW_UPDATE) never reads an answer; grpc held each answered call, and its GRU_MAX_CONNECTIONS
    # slot, while the connection lived (a refused call every 2 s kept it from idling): 30 such calls on
    # one connection held all 20 slots, every other client RESOURCE_EXHAUSTED "Concurrent RPC limit
    # exceeded!" for as long as the attacker stayed. Now they count in GRU_GRPC_MAX_STREAMS_PER_CLIENT.
    attack = RawClient(few_slots.grpc_url, window=0)
    try:
        for _ in range(30):
            attack.call(infer_request().SerializeToString())
        time.sleep(1)
        outcomes = good_calls_while(few_slots, attack, 4)
    finally:
        attack.close()
    assert outcomes and set(outcomes) == {"OK"}, outcomes
    few_slots.output_with('"status":503')
    assert sum(line.get("status") == 503 for line in few_slots.json_lines()) >= 30 - 4


def test_calls_whose_message_never_comes_do_not_hold_every_slot(few_slots) -> None:
    # before: round 7 gave such a call's slot back after GRU_BODY_TIMEOUT_S, but a client opening 100
    # of them on a connection, anew as they ended, held all 20 slots for as long as it stayed
    attack = RawClient(few_slots.grpc_url, window=65535)
    try:
        for _ in range(100):
            attack.call(None)
        time.sleep(1)
        outcomes = good_calls_while(few_slots, attack, 4)
    finally:
        attack.close()
    assert outcomes and set(outcomes) == {"OK"}, outcomes


# -- 2. gRPC metadata grpc's core refuses ------------------------------------------------------------------

def call_with(stream: int, name: bytes, value: bytes) -> bytes:
    """A whole ModelInfer call on `stream` with one more request header (a literal field)."""
    extra = b"\x00" + hpack_length(len(name)) + name + hpack_length(len(value)) + value
    return (frame(HEADERS, END_HEADERS, stream, call_headers("ModelInfer") + extra)
            + frame(DATA, END_STREAM, stream, grpc_message(infer_request().SerializeToString())))


def test_bad_grpc_timeout_or_encoding_writes_no_line_outside_the_json_log(few_slots) -> None:
    # before: grpc's C core logged one ERROR line of its own format ("E1207 ... hpack_parser.cc:1048]
    # Error parsing 'grpc-encoding' metadata: invalid value") per call with an unknown grpc-encoding or a
    # bad grpc-timeout: 3,000 calls from one client without a token, 3,000 lines in 1.3 s. The answer
    # (INTERNAL "Error parsing 'grpc-timeout' metadata") is grpc's own and stays; the lines are gone.
    calls = [(b"grpc-encoding", b"snappy"), (b"grpc-timeout", b"garbage"), (b"grpc-timeout", b"-1S")] * 20
    with socket.create_connection(("127.0.0.1", int(few_slots.grpc_url.rsplit(":", 1)[1])), 10) as sock:
        sock.sendall(PREFACE + frame(SETTINGS, 0, 0)
                     + b"".join(call_with(2 * i + 1, *call) for i, call in enumerate(calls)))
        time.sleep(1)
    with grpc.insecure_channel(few_slots.grpc_url) as channel:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(infer_request(), timeout=10)
    lines = few_slots.output_with('"status":200').rpartition("\n")[0].splitlines()
    assert [line for line in lines if not line.startswith("{")] == []


# -- 3. the v2 binary extension's header length ------------------------------------------------------------

@pytest.mark.parametrize("cut", [0, -1, 1])  # 0; one byte short of the JSON; one byte into the tensor
def test_a_header_length_that_cuts_the_json_names_the_header(few_slots, cut) -> None:
    # before: Inference-Header-Content-Length 0 (or one that cut the JSON part) was 400 "the body is not
    # valid JSON: Input is a zero-length, empty document", field `body`: the JSON the client sent was
    # valid, the header was wrong
    header = (b'{"inputs": [{"name": "x", "shape": [1, 5, 1], "datatype": "FP32", '
              b'"parameters": {"binary_data_size": 20}}]}')
    length = 0 if cut == 0 else len(header) + cut
    answer = httpx.post(f"{few_slots.url}/v2/models/italy/infer", content=header + b"\0" * 20,
                        headers={"inference-header-content-length": str(length)}, timeout=10)
    assert answer.status_code == 400
    assert answer.json()["field"] == "inference-header-content-length"
    assert f"first {length} bytes" in answer.json()["error"]
