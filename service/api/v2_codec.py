"""Open Inference Protocol (KServe v2) tensors <-> NumPy, including Triton's binary tensor data extension
(a JSON header of `Inference-Header-Content-Length` bytes, then the raw tensors in order), which the
official `tritonclient` uses by default."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.api.errors import ApiError, MalformedBody
from service.bundle import LENGTHS_INPUT, OUTPUT, STATE_INPUT, STATE_OUTPUT, X_INPUT, Manifest

HEADER_LENGTH = "inference-header-content-length"
DTYPES: dict[str, np.dtype] = {name: np.dtype(t) for name, t in {
    "FP32": np.float32, "FP64": np.float64, "FP16": np.float16, "INT8": np.int8, "INT16": np.int16,
    "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32,
    "UINT64": np.uint64}.items()}


class BadTensor(ApiError):
    status, code = 400, "invalid_input"


@dataclass
class InferRequest:
    inputs: dict[str, np.ndarray]
    outputs: list[str]
    binary_outputs: set[str]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    json_part, binary = body, b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise MalformedBody(f"{HEADER_LENGTH} is {header_length!r}; it must be the byte length of the "
                                "JSON part of the body", HEADER_LENGTH)
        json_part, binary = body[:int(header_length)], body[int(header_length):]
    try:
        document = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}", "body") from exc
    inputs_given = isinstance(document, dict) and isinstance(document.get("inputs"), list)
    if not inputs_given or not document["inputs"]:
        raise BadTensor('the body must be an inference request like {"inputs": [{"name": "x", "shape": '
                        '[1, 24, 1], "datatype": "FP32", "data": [...]}]}', "inputs")
    parameters = _object(document.get("parameters"), "parameters")
    inputs, offset = {}, 0
    may_hold_bools = b"true" in json_part or b"false" in json_part
    for i, spec in enumerate(document["inputs"]):
        array, offset = _decode_tensor(spec, f"inputs[{i}]", binary, offset, may_hold_bools)
        inputs[spec["name"]] = array
    if offset != len(binary):
        raise BadTensor(f"{len(binary) - offset} byte(s) of binary data follow the tensors the header "
                        "describes; check each input's binary_data_size", "body")
    outputs, binary_outputs = _requested_outputs(document.get("outputs"), parameters)
    request_id = document.get("id")
    return InferRequest(inputs, outputs, binary_outputs, str(request_id) if request_id is not None else None,
                        parameters)


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadTensor(f"{where} must be a JSON object", where)
    return value


def _decode_tensor(spec: Any, where: str, binary: bytes, offset: int,
                   may_hold_bools: bool) -> tuple[np.ndarray, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise BadTensor(f"{where} must be an object with name, shape, datatype and data", where)
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise BadTensor(f"{where}.shape must be a list of non-negative integers", f"{where}.shape")
    dtype = DTYPES.get(spec.get("datatype"))  # type: ignore[arg-type]
    if dtype is None:
        raise BadTensor(f"{where}.datatype {spec.get('datatype')!r} is not supported; send FP32",
                        f"{where}.datatype")
    count = math.prod(shape)
    size = _object(spec.get("parameters"), f"{where}.parameters").get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or size != count * dtype.itemsize or offset + size > len(binary):
            raise BadTensor(f"{where}: binary_data_size {size} does not match shape {shape} of "
                            f"{spec['datatype']} ({count * dtype.itemsize} bytes) or the body", where)
        flat = np.frombuffer(binary, dtype=dtype.newbyteorder("<"), count=count, offset=offset)
        return flat.reshape(shape), offset + size
    data = spec.get("data")
    if data is None:
        raise BadTensor(f"{where} has neither data nor binary_data_size", f"{where}.data")
    try:
        flat = np.asarray(data, dtype=dtype).reshape(-1)
    except (ValueError, TypeError) as exc:
        raise BadTensor(f"{where}.data must hold only numbers, flattened row-major (or nested to the "
                        f"shape): {exc}", f"{where}.data") from exc
    if may_hold_bools and _has_bool(data):
        raise BadTensor(f"{where}.data must hold only numbers (no booleans)", f"{where}.data")
    if flat.size != count:
        raise BadTensor(f"{where}.data holds {flat.size} value(s) but shape {shape} needs {count}",
                        f"{where}.data")
    return flat.reshape(shape), offset


def _has_bool(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_bool(v) for v in value)
    return isinstance(value, bool)


OUTPUT_NAMES = (OUTPUT, STATE_OUTPUT)


def _requested_outputs(outputs: Any, parameters: dict[str, Any]) -> tuple[list[str], set[str]]:
    binary_default = bool(parameters.get("binary_data_output", False))
    if outputs is None:
        return list(OUTPUT_NAMES), set(OUTPUT_NAMES) if binary_default else set()
    if not isinstance(outputs, list):
        raise BadTensor("outputs must be a list of {name, parameters}", "outputs")
    names, binary = [], set()
    for i, spec in enumerate(outputs):
        name = spec.get("name") if isinstance(spec, dict) else None
        if name not in OUTPUT_NAMES:
            raise BadTensor(f"outputs[{i}].name is {name!r}; this model's outputs are {list(OUTPUT_NAMES)}",
                            f"outputs[{i}].name")
        names.append(name)
        if _object(spec.get("parameters"), f"outputs[{i}].parameters").get("binary_data", binary_default):
            binary.add(name)
    return names, binary


def model_inputs(request: InferRequest, manifest: Manifest,
                 max_sequences: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Check x [batch, time, features] and the optional state [batch, S] against the model; return
    them as float32."""
    allowed = {X_INPUT, STATE_INPUT} if manifest.state.size else {X_INPUT}
    unknown = sorted(set(request.inputs) - allowed)
    if unknown or X_INPUT not in request.inputs:
        size = manifest.state.size
        optional = f" and optionally '{STATE_INPUT}' [batch, {size}]" if size else ""
        raise BadTensor(f"inputs are {sorted(request.inputs)}; this model takes '{X_INPUT}' "
                        f"[batch, time, features]{optional}", "inputs")
    spec = manifest.inputs
    x = request.inputs[X_INPUT]
    if x.ndim != 3 or x.shape[2] != spec.num_features or x.shape[0] < 1:
        raise BadTensor(f"x has shape {list(x.shape)}; expected [batch, time, {spec.num_features}] "
                        f"(features: {', '.join(spec.features)})", "x.shape")
    if not spec.min_length <= x.shape[1] <= spec.max_length:
        raise BadTensor(f"x has {x.shape[1]} steps; this model accepts {spec.min_length} to "
                        f"{spec.max_length}", "x.shape")
    if x.shape[0] > max_sequences:
        raise BadTensor(f"x holds {x.shape[0]} sequences; the limit is {max_sequences}", "x.shape")
    state = request.inputs.get(STATE_INPUT)
    expected = [x.shape[0], manifest.state.size]
    if state is not None and list(state.shape) != expected:
        raise BadTensor(f"{STATE_INPUT} has shape {list(state.shape)}; expected {expected} [batch, state "
                        "size]: the next_state of an earlier answer, or zeros", f"{STATE_INPUT}.shape")
    x = _finite_float32(x, X_INPUT)
    return x, None if state is None else _finite_float32(state, STATE_INPUT)


def _finite_float32(array: np.ndarray, name: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        where = [int(i) for i in np.argwhere(~np.isfinite(array))[0]]
        raise BadTensor(f"{name}{where} is not a finite float32 number", f"{name}.data")
    return array


def model_tensors(manifest: Manifest) -> tuple[list[dict], list[dict]]:
    """Metadata shapes: -1 for dynamic axes (batch, time), as the protocol writes them. The graph's
    `lengths` input is not offered here: a v2 request's sequences are whole (all steps valid).
    The state is optional: omitted, each sequence starts from zeros."""
    def tensors(specs: list) -> list[dict]:
        return [{"name": t.name, "datatype": "FP32",
                 "shape": [d if isinstance(d, int) else -1 for d in t.shape]}
                for t in specs if t.name != LENGTHS_INPUT]
    return tensors(manifest.onnx.inputs), tensors(manifest.onnx.outputs)


def encode_response(manifest: Manifest, request: InferRequest,
                    arrays: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """The response body and headers: JSON, with the binary outputs appended after it when asked for."""
    outputs, chunks = [], []
    for name in request.outputs:
        array = np.ascontiguousarray(arrays[name], dtype="<f4")
        entry: dict[str, Any] = {"name": name, "datatype": "FP32", "shape": list(array.shape)}
        if name in request.binary_outputs:
            entry["parameters"] = {"binary_data_size": array.nbytes}
            chunks.append(array.tobytes())
        else:
            entry["data"] = array.reshape(-1)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": manifest.name, "model_version": str(manifest.version),
                                "outputs": outputs}
    if request.id is not None:
        document["id"] = request.id
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {"content-type": "application/json"}
    return header + b"".join(chunks), {"content-type": "application/octet-stream",
                                       HEADER_LENGTH: str(len(header))}
