"""Open Inference Protocol messages (protobuf) <-> the v2 REST codec's typed request and NumPy.

A ModelInferRequest becomes the same `InferRequest` the REST route decodes from JSON, through the same
checks and messages (service/api/v2_codec.py), with the protobuf's names where they differ (`contents`,
`raw_input_contents`). Inputs come as typed `contents.fp32_contents` or as `raw_input_contents` (what
tritonclient sends); outputs go back as `raw_output_contents`, as Triton answers, which is also the only
form tritonclient's `as_numpy` reads.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from service.api.v2_codec import OUTPUT_NAMES, BadTensor, InferRequest
from service.bundle import Manifest
from service.grpc.generated import grpc_service_pb2 as pb

Tensor = pb.ModelInferRequest.InferInputTensor


def decode_infer(request: pb.ModelInferRequest) -> InferRequest:
    if not request.inputs:
        raise BadTensor("a ModelInferRequest needs inputs, e.g. x: datatype FP32, shape [1, 24, 1], with "
                        "raw_input_contents or contents.fp32_contents", "inputs")
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadTensor(f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} inputs; "
                        "send one per input, in the order of inputs", "raw_input_contents")
    inputs: dict[str, np.ndarray] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            raise BadTensor(f"inputs[{i}].name {tensor.name!r} is given twice; send each input once",
                            f"inputs[{i}].name")
        inputs[tensor.name] = _tensor(tensor, i, raw[i] if raw else None)
    return InferRequest(inputs, _outputs(request), set(), request.id or None, parameters(request.parameters))


def _tensor(tensor: Tensor, i: int, raw: bytes | None) -> np.ndarray:
    where, shape = f"inputs[{i}]", list(tensor.shape)
    if any(d < 0 for d in shape):
        raise BadTensor(f"{where}.shape must be a list of non-negative integers, e.g. [1, 24, 1]",
                        f"{where}.shape")
    check_datatype(tensor.datatype, f"{where}.datatype")
    count = math.prod(shape)
    if raw is not None:
        if tensor.HasField("contents"):
            raise BadTensor(f"{where} has contents and the request has raw_input_contents; send every "
                            "input one way", f"{where}.contents")
        if len(raw) != count * 4:
            raise BadTensor(f"raw_input_contents[{i}] holds {len(raw)} bytes; shape {shape} of FP32 needs "
                            f"{count * 4}", f"raw_input_contents[{i}]")
        return np.frombuffer(raw, dtype="<f4").reshape(shape)
    given = [f"contents.{field.name}" for field, _ in tensor.contents.ListFields()]
    if given != ["contents.fp32_contents"]:
        raise BadTensor(f"{where} holds its data in {given or 'nothing'}; an FP32 tensor takes "
                        "contents.fp32_contents (or raw_input_contents)", f"{where}.contents")
    values = tensor.contents.fp32_contents
    if len(values) != count:
        raise BadTensor(f"{where}.contents.fp32_contents holds {len(values)} value(s) but shape {shape} "
                        f"needs {count}", f"{where}.contents.fp32_contents")
    return np.array(values, dtype=np.float32).reshape(shape)


def check_datatype(datatype: str, where: str) -> None:
    if datatype != "FP32":
        raise BadTensor(f"{where} is {datatype!r}, but this model's inputs are FP32; convert on the "
                        "client (no conversion is applied here, as in Triton)", where)


def parameters(given: Any) -> dict[str, Any]:
    """A protobuf parameter map as the JSON request's `parameters` object: bool, int, str or float."""
    out: dict[str, Any] = {}
    for key, parameter in given.items():
        kind = parameter.WhichOneof("parameter_choice")
        out[key] = getattr(parameter, kind) if kind else None
    return out


def _outputs(request: pb.ModelInferRequest) -> list[str]:
    if not request.outputs:
        return list(OUTPUT_NAMES)
    names = []
    for i, output in enumerate(request.outputs):
        if output.name not in OUTPUT_NAMES:
            raise BadTensor(f"outputs[{i}].name is {output.name!r}; this model's outputs are "
                            f"{list(OUTPUT_NAMES)}", f"outputs[{i}].name")
        names.append(output.name)
    return names


def encode_infer(manifest: Manifest, request: InferRequest,
                 arrays: dict[str, np.ndarray]) -> pb.ModelInferResponse:
    response = pb.ModelInferResponse(model_name=manifest.name, model_version=str(manifest.version),
                                     id=request.id or "")
    for name in request.outputs:
        array = np.ascontiguousarray(arrays[name], dtype="<f4")
        response.outputs.add(name=name, datatype="FP32", shape=array.shape)
        response.raw_output_contents.append(array.tobytes())
    return response
