"""A hypothesis fuzz of Open Inference Protocol gRPC messages, beside the v2 REST one (test_fuzz_v2.py):
valid ModelInferRequests (raw or typed contents, with a state, outputs and sequence parameters) with none
to three parts changed (shapes of any int64, datatypes, contents of every type and length, parameters of
every type, input and output names, model versions). In process, the codec decodes or raises a domain
error naming the field; over gRPC, neither ModelInfer nor ModelStreamInfer answers INTERNAL or UNKNOWN,
and a stream answers every request (a refused one with its error_message) and goes on."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.bundle import read_manifest
from service.codecs.v2 import DATATYPES, decode_infer, model_inputs
from service.errors import ApiError
from service.grpc.generated import grpc_service_pb2 as pb
from service.grpc.generated import grpc_service_pb2_grpc as pb_grpc
from tests.helpers import Server

EXAMPLES_IN_PROCESS = 300
EXAMPLES_UNARY = 80
EXAMPLES_STREAM = 25
BROKEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

INT64 = st.integers(-(2**63), 2**63 - 1)
dims = st.sampled_from([0, 1, 2, 24, 2**31, 2**62, 2**63 - 1, -1]) | INT64
shapes = st.lists(dims, max_size=5)
texts = st.text(max_size=10) | st.sampled_from(["", "x", "state", "output", "next_state", "²", "٣", "01"])
floats = st.floats(width=32) | st.sampled_from([float("nan"), float("inf"), 3.5e38, -0.0])
PARAMETER_KEYS = ["sequence_id", "sequence_start", "sequence_end", "binary_data_output", "binary_data_size",
                  "binary_data", "priority", "timeout", ""]


@st.composite
def parameter(draw: st.DrawFn) -> pb.InferParameter:
    kind = draw(st.sampled_from(["bool_param", "int64_param", "string_param", "double_param", "uint64_param",
                                 None]))
    value = {"bool_param": st.booleans(), "int64_param": INT64, "string_param": st.text(max_size=200),
             "double_param": st.floats(), "uint64_param": st.integers(0, 2**64 - 1), None: st.none()}[kind]
    return pb.InferParameter(**({kind: draw(value)} if kind else {}))


def parameters(target: Any, draw: st.DrawFn) -> None:
    for key in draw(st.lists(st.sampled_from(PARAMETER_KEYS) | st.text(max_size=8), max_size=3)):
        target[key].CopyFrom(draw(parameter()))


def contents(draw: st.DrawFn, tensor: Any) -> None:
    field = draw(st.sampled_from(["bool_contents", "int_contents", "int64_contents", "uint_contents",
                                  "uint64_contents", "fp32_contents", "fp64_contents", "bytes_contents"]))
    values = {"bool_contents": st.booleans(), "int_contents": st.integers(-(2**31), 2**31 - 1),
              "int64_contents": INT64, "uint_contents": st.integers(0, 2**32 - 1),
              "uint64_contents": st.integers(0, 2**64 - 1), "fp32_contents": floats,
              "fp64_contents": st.floats(), "bytes_contents": st.binary(max_size=8)}[field]
    getattr(tensor.contents, field).extend(draw(st.lists(values, max_size=30)))


def mutations(request: pb.ModelInferRequest, draw: st.DrawFn) -> list[Callable[[], None]]:
    def tensor() -> Any:
        return request.inputs[draw(st.integers(0, len(request.inputs) - 1))] if request.inputs else None

    def shape() -> None:
        if (t := tensor()) is not None:
            t.ClearField("shape")
            t.shape.extend(draw(shapes))

    def datatype() -> None:
        if (t := tensor()) is not None:
            t.datatype = draw(st.sampled_from(sorted(DATATYPES)) | texts)

    def name() -> None:
        if (t := tensor()) is not None:
            t.name = draw(texts)

    def raw() -> None:
        request.raw_input_contents.append(draw(st.binary(max_size=120)))

    def swap_raw() -> None:
        if request.raw_input_contents:
            request.raw_input_contents[0] = draw(st.binary(max_size=120))

    def typed() -> None:
        if (t := tensor()) is not None:
            contents(draw, t)

    def input_parameters() -> None:
        if (t := tensor()) is not None:
            parameters(t.parameters, draw)

    def outputs() -> None:
        output = request.outputs.add(name=draw(texts))
        parameters(output.parameters, draw)

    def version() -> None:
        request.model_version = draw(texts | st.sampled_from(["1", "2", "99999999999999999999", "-1", " 1"]))

    def extra_input() -> None:
        request.inputs.add(name=draw(texts), datatype="FP32", shape=draw(shapes))

    def no_inputs() -> None:
        request.ClearField("inputs")

    def request_parameters() -> None:
        parameters(request.parameters, draw)

    def request_id() -> None:
        request.id = draw(texts)

    return [shape, datatype, name, raw, swap_raw, typed, input_parameters, outputs, version, extra_input,
            no_inputs, request_parameters, request_id]


@st.composite
def infer_requests(draw: st.DrawFn, state_size: int) -> pb.ModelInferRequest:
    """A valid request for italy, then none to three of its parts changed."""
    batch, steps = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    request = pb.ModelInferRequest(model_name="italy", model_version=draw(st.sampled_from(["", "1"])))
    typed = draw(st.booleans())
    tensors = [("x", [batch, steps, 1])] + ([("state", [batch, state_size])] if draw(st.booleans()) else [])
    for name, shape in tensors:
        count = batch * steps if name == "x" else batch * state_size
        values = draw(st.lists(st.floats(-100, 100, width=32), min_size=count, max_size=count))
        tensor = request.inputs.add(name=name, datatype="FP32", shape=shape)
        if typed:
            tensor.contents.fp32_contents.extend(values)
        else:
            request.raw_input_contents.append(struct.pack(f"<{count}f", *values))
    if draw(st.booleans()):
        for output in draw(st.sampled_from([["output"], ["next_state"], ["output", "next_state"]])):
            request.outputs.add(name=output)
    if batch == 1 and len(tensors) == 1 and draw(st.booleans()):
        sequence = draw(st.integers(1, 2**64 - 1).map(lambda n: pb.InferParameter(uint64_param=n))
                        | st.text(min_size=1, max_size=128).map(lambda s: pb.InferParameter(string_param=s)))
        request.parameters["sequence_id"].CopyFrom(sequence)
        request.parameters["sequence_start"].bool_param = True
        request.parameters["sequence_end"].bool_param = draw(st.booleans())
    changes = mutations(request, draw)
    for index in draw(st.lists(st.integers(0, len(changes) - 1), max_size=3)):
        changes[index]()
    return request


@given(data=st.data())
@settings(max_examples=EXAMPLES_IN_PROCESS, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_grpc_codec_refuses_with_domain_errors_only(manifest, data: st.DataObject) -> None:
    request = data.draw(infer_requests(manifest.state.size))
    try:
        x, _ = model_inputs(decode_infer(request), manifest, 1024)
    except ApiError as exc:
        assert exc.field and exc.message  # INVALID_ARGUMENT naming the field
    else:
        assert x.dtype.name == "float32" and x.ndim == 3


@given(data=st.data())
@settings(max_examples=EXAMPLES_UNARY, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_model_infer_is_internal_or_unknown(stub, manifest, data: st.DataObject) -> None:
    request = data.draw(infer_requests(manifest.state.size))
    try:
        stub.ModelInfer(request, timeout=10)
    except grpc.RpcError as exc:
        assert exc.code() not in BROKEN, exc
        assert exc.details()


@given(data=st.data())
@settings(max_examples=EXAMPLES_STREAM, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_model_stream_infer_is_internal_or_unknown(stub, manifest, data: st.DataObject) -> None:
    requests = data.draw(st.lists(infer_requests(manifest.state.size), min_size=1, max_size=4))
    answers = list(stub.ModelStreamInfer(iter(requests), timeout=20))  # a status other than OK raises
    assert len(answers) == len(requests)
    for answer in answers:
        assert answer.error_message or answer.HasField("infer_response")
        assert "internal error" not in answer.error_message, answer.error_message


@pytest.mark.parametrize("key", ["\x1f", "é", "k" * 100_000])
def test_an_error_quoting_any_parameter_name_is_invalid_argument(stub, key: str) -> None:
    """Found by the fuzz: the field named a control character, which gRPC metadata cannot carry (INTERNAL)."""
    request = pb.ModelInferRequest(model_name="italy", raw_input_contents=[b"\0" * 96])
    request.inputs.add(name="x", datatype="FP32", shape=[1, 24, 1])
    request.parameters[key].bool_param = True
    with pytest.raises(grpc.RpcError) as refused:
        stub.ModelInfer(request, timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    field = dict(refused.value.trailing_metadata())["gru-error-field"]
    assert field.startswith(("parameters.", "'parameters.")) and len(field) <= 2048


@pytest.fixture(scope="module")
def manifest(repository: Path):
    return read_manifest(repository / "italy" / "1")


@pytest.fixture(scope="module")
def stub(repository: Path):
    running = Server(repository, grpc=True).start()
    try:
        with grpc.insecure_channel(running.grpc_url) as channel:
            yield pb_grpc.GRPCInferenceServiceStub(channel)
        assert "Traceback" not in running.output()
    finally:
        running.stop()
