"""Open Inference Protocol messages (protobuf) <-> the v2 REST codec's typed request and NumPy.

A ModelInferRequest becomes the same `InferRequest` the REST route decodes from JSON, through the REST
codec's own checks and messages (service/api/v2_codec.py: datatype, shape, finite FP32 values,
parameters, outputs), plus the protobuf's own forms: `raw_input_contents` (what tritonclient sends) or
typed `contents.fp32_contents`. Outputs go back as `raw_output_contents`, as Triton answers, which is
also the only form tritonclient's `as_numpy` reads.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.api.errors import InvalidInput
from service.api.v2_codec import (  # the REST codec's checks, so that both APIs refuse alike
    InferRequest,
    _datatype,
    _in_range,
    _parameters,
    _requested_outputs,
    _shape,
)
from service.bundle import Manifest
from service.grpc.generated import grpc_service_pb2 as pb

Tensor = pb.ModelInferRequest.InferInputTensor


def decode_infer(request: pb.ModelInferRequest) -> InferRequest:
    if not request.inputs:
        raise InvalidInput("a ModelInferRequest needs inputs, e.g. x: datatype FP32, shape [1, 24, 1], with "
                           "raw_input_contents or contents.fp32_contents", "inputs")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidInput(f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} inputs; "
                           "send one per input, in the order of inputs", "raw_input_contents")
    parameters = _parameters(values(request.parameters))
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            raise InvalidInput(f"inputs[{i}].name {tensor.name!r} is given twice; send each input once",
                               f"inputs[{i}].name")
        inputs[tensor.name] = _tensor(tensor, i, raw[i] if raw else None)
    asked = [{"name": o.name} | ({"parameters": values(o.parameters)} if o.parameters else {})
             for o in request.outputs]
    outputs, _ = _requested_outputs(asked or None, parameters)
    return InferRequest(inputs, outputs, set(), request.id or None, parameters)


def _tensor(tensor: Tensor, i: int, raw: bytes | None) -> np.ndarray:
    where = f"inputs[{i}]"
    if tensor.parameters:
        raise InvalidInput(f"{where}.parameters: an input takes no parameters here", f"{where}.parameters")
    shape = _shape(list(tensor.shape), f"{where}.shape")
    _datatype(tensor.datatype, f"{where}.datatype")
    count = math.prod(shape)
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidInput(f"{where} has contents and the request has raw_input_contents; send every "
                               "input one way", f"{where}.contents")
        if len(raw) != count * 4:
            raise InvalidInput(f"raw_input_contents[{i}] holds {len(raw)} bytes; shape {shape} of FP32 "
                               f"needs {count * 4}", f"raw_input_contents[{i}]")
        return _in_range(np.frombuffer(raw, dtype="<f4"), where).reshape(shape)
    given = [f"contents.{field.name}" for field, _ in tensor.contents.ListFields()]
    if given != ["contents.fp32_contents"]:
        raise InvalidInput(f"{where} holds its data in {given or 'nothing'}; an FP32 tensor takes "
                           "contents.fp32_contents (or raw_input_contents)", f"{where}.contents")
    data = tensor.contents.fp32_contents
    if len(data) != count:
        raise InvalidInput(f"{where}.contents.fp32_contents holds {len(data)} value(s) but its shape needs "
                           f"{count}", f"{where}.contents.fp32_contents")
    return _in_range(np.array(data, dtype=np.float32), where).reshape(shape)


def values(parameters: Any) -> dict[str, Any]:
    """A protobuf parameter map as a JSON request's `parameters` object: bool, int, str or float."""
    out: dict[str, Any] = {}
    for key, parameter in parameters.items():
        kind = parameter.WhichOneof("parameter_choice")
        out[key] = getattr(parameter, kind) if kind else None
    return out


def encode_infer(manifest: Manifest, request: InferRequest,
                 arrays: dict[str, np.ndarray]) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=manifest.name, model_version=str(manifest.version),
                                     id=request.id or "")
    for name in request.outputs:
        array = np.ascontiguousarray(arrays[name], dtype="<f4")
        response.outputs.add(name=name, datatype="FP32", shape=array.shape)
        response.raw_output_contents.append(array.tobytes())
    return response
