"""Open Inference Protocol (KServe v2) tensors <-> NumPy, in the protocol's three forms, through the same
checks and messages: JSON; JSON with Triton's binary tensor data extension (a JSON header of
`Inference-Header-Content-Length` bytes, then the raw tensors in order), which the official `tritonclient`
uses by default over REST; and gRPC's protobuf messages (`decode_infer`, `encode_infer`:
`raw_input_contents`, what tritonclient sends, or typed `contents.fp32_contents`; outputs go back as
`raw_output_contents`, as Triton answers, the only form tritonclient's `as_numpy` reads). The protobuf
messages are read and filled by attribute: this module does not import them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from service.bundle import LENGTHS_INPUT, OUTPUT, STATE_INPUT, STATE_OUTPUT, X_INPUT, Manifest
from service.codecs.native import FLOAT32_MAX, has_bool
from service.errors import InvalidInput, MalformedBody

HEADER_LENGTH = "inference-header-content-length"
# Every input this server offers (x, state) is FP32 and no conversion is applied: another datatype is
# refused, as Triton refuses a datatype that differs from the model's (convert on the client, visibly).
MODEL_DATATYPE = "FP32"
DATATYPES = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32",
             "FP64", "BF16", "BYTES"}  # the protocol's; only MODEL_DATATYPE is accepted
OUTPUT_NAMES = (OUTPUT, STATE_OUTPUT)
REQUEST_KEYS = {"id", "parameters", "inputs", "outputs"}
INPUT_KEYS = {"name", "shape", "datatype", "parameters", "data"}
OUTPUT_KEYS = {"name", "parameters"}
# triton_enable_empty_final_response: tritonclient's stream_infer(enable_empty_final_response=True); each
# request has one answer, so that answer says it is the final one (Triton's triton_final_response). It
# was refused as an unknown field, every request of such a client.
FINAL_RESPONSE = "triton_enable_empty_final_response"
REQUEST_PARAMETERS = {"sequence_id", "sequence_start", "sequence_end", "binary_data_output", FINAL_RESPONSE}
SEQUENCE_ID_MAX_CHARS = 128  # a string sequence_id is a server-held session's key
UINT64_MAX = 2**64 - 1
# A shape's dimensions multiply to at most this, zeros left out: a tensor of zero elements is still given a
# NumPy shape, which must fit in memory's address space (2**62 x 2**62 x 0 does not).
MAX_ELEMENTS = 2**31
EXAMPLE = '{"inputs": [{"name": "x", "shape": [1, 24, 1], "datatype": "FP32", "data": [...]}]}'


@dataclass
class InferRequest:
    inputs: dict[str, np.ndarray]
    outputs: list[str]
    binary_outputs: set[str]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)  # sequence_* checked: see _parameters


def decode_request(body: bytes, header_length: str | None) -> InferRequest:
    """A v2 inference request, JSON or with binary tensors, checked as strictly as Triton checks it: every
    refusal is a 400 naming the field."""
    json_part, binary = body, b""
    if header_length is not None:
        # ASCII digits only: str.isdigit() also takes '²', which int() refuses
        if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
            raise MalformedBody(f"{HEADER_LENGTH} is {header_length!r}; it must be the byte length of the "
                                "JSON part of the body", HEADER_LENGTH)
        json_part, binary = body[:int(header_length)], body[int(header_length):]
    try:
        document = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        if header_length is None:
            raise MalformedBody(f"the body is not valid JSON: {exc}", "body") from exc
        # The header cut the JSON (0, or a length inside it): "the body is not valid JSON" did not say which
        raise MalformedBody(f"the body's first {header_length} bytes ({HEADER_LENGTH}) are not valid JSON "
                            f"({exc}); it must be the byte length of the JSON part of the body",
                            HEADER_LENGTH) from exc
    inputs_given = isinstance(document, dict) and isinstance(document.get("inputs"), list)
    if not inputs_given or not document["inputs"]:
        raise InvalidInput(f"the body must be an inference request like {EXAMPLE}", "inputs")
    _known_keys(document, REQUEST_KEYS, "")
    parameters = _parameters(document.get("parameters"))
    inputs: dict[str, np.ndarray] = {}
    offset, may_hold_bools = 0, b"true" in json_part or b"false" in json_part
    for i, spec in enumerate(document["inputs"]):
        array, offset = _decode_tensor(spec, f"inputs[{i}]", binary, offset, may_hold_bools)
        if spec["name"] in inputs:
            raise InvalidInput(f"inputs[{i}].name {spec['name']!r} is given twice; send each input once",
                               f"inputs[{i}].name")
        inputs[spec["name"]] = array
    if offset != len(binary):
        raise InvalidInput(f"{len(binary) - offset} byte(s) of binary data follow the tensors the header "
                           "describes; check each input's binary_data_size", "body")
    outputs, binary_outputs = _requested_outputs(document.get("outputs"), parameters)
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInput("id must be a string; it is echoed in the response", "id")
    return InferRequest(inputs, outputs, binary_outputs, request_id, parameters)


# Parameters of Triton's that name what gru-serve does not serve: refused saying so (they were "unknown
# field 'outputs[0].parameters.shared_memory_byte_size'", which did not say why nor what to do instead).
SHARED_MEMORY = ("Triton's shared-memory extension is not served by gru-serve: send the tensor in the "
                 "request (data or binary data; over gRPC contents or raw_input_contents)")
UNSERVED = {"shared_memory_region": SHARED_MEMORY, "shared_memory_byte_size": SHARED_MEMORY,
            "shared_memory_offset": SHARED_MEMORY,
            "classification": "classification (class_count) is not served by gru-serve: ask for the output "
                              "itself (a classifier's: its class probabilities, in the order of the "
                              "labels in the model's metadata)"}


def _known_keys(value: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(value) - allowed)
    if not unknown:
        return
    key = next((k for k in unknown if k in UNSERVED), unknown[0])
    field = f"{where}.{key}" if where else key
    if key in UNSERVED:
        raise InvalidInput(f"{field}: {UNSERVED[key]}", field)
    holds = f"may hold {sorted(allowed)}" if allowed else "takes none here"
    raise InvalidInput(f"unknown field {field!r}; {where or 'an inference request'} {holds}", field)


def _object(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{where} must be a JSON object", where)
    return value


def _parameters(value: Any) -> dict[str, Any]:
    """Request parameters: the sequence ones as Triton's sequence batcher takes them, binary_data_output."""
    parameters = _object(value, "parameters")
    _known_keys(parameters, REQUEST_PARAMETERS, "parameters")  # e.g. Triton's priority, timeout: not served
    for flag in ("sequence_start", "sequence_end", "binary_data_output", FINAL_RESPONSE):
        if flag in parameters and not isinstance(parameters[flag], bool):
            raise InvalidInput(f"parameters.{flag} must be true or false (not {parameters[flag]!r})",
                               f"parameters.{flag}")
    sequence_id = parameters.get("sequence_id", 0)
    if isinstance(sequence_id, str):
        valid = len(sequence_id) <= SEQUENCE_ID_MAX_CHARS
    else:
        valid = _integer(sequence_id) and 0 <= sequence_id <= UINT64_MAX
        if valid and "sequence_id" in parameters:
            sequence_id = parameters["sequence_id"] = int(sequence_id)  # 7.0 is 7
    if not valid:
        raise InvalidInput(f"parameters.sequence_id must be an unsigned 64-bit integer or a string of at "
                           f"most {SEQUENCE_ID_MAX_CHARS} characters", "parameters.sequence_id")
    if sequence_id in (0, "") and (parameters.get("sequence_start") or parameters.get("sequence_end")):
        raise InvalidInput("sequence_start and sequence_end need a non-zero sequence_id (an integer or a "
                           "string) naming the sequence", "parameters.sequence_id")
    return parameters


def _decode_tensor(spec: Any, where: str, binary: bytes, offset: int,
                   may_hold_bools: bool) -> tuple[np.ndarray, int]:
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"]:
        raise InvalidInput(f"{where} must be an object with name, shape, datatype and data", where)
    _known_keys(spec, INPUT_KEYS, where)
    shape = _shape(spec.get("shape"), f"{where}.shape")
    _datatype(spec.get("datatype"), f"{where}.datatype")
    count = math.prod(shape)
    parameters = _object(spec.get("parameters"), f"{where}.parameters")
    _known_keys(parameters, {"binary_data_size"}, f"{where}.parameters")
    size = parameters.get("binary_data_size")
    if size is not None:
        if spec.get("data") is not None:
            raise InvalidInput(f"{where} has both data and binary_data_size; send one", f"{where}.data")
        if not _integer(size) or size != count * 4 or offset + size > len(binary):
            raise InvalidInput(f"{where}: binary_data_size {size!r} does not match shape {shape} of FP32 "
                               f"({count * 4} bytes) or the body", f"{where}.parameters.binary_data_size")
        flat = np.frombuffer(binary, dtype="<f4", count=count, offset=offset)
        return _in_range(flat, where).reshape(shape), offset + int(size)
    return _json_data(spec.get("data"), where, shape, may_hold_bools).reshape(shape), offset


def _shape(shape: Any, where: str) -> list[int]:
    if not isinstance(shape, list) or not all(_integer(d) and 0 <= d < 2**63 for d in shape):
        raise InvalidInput(f"{where} must be a list of non-negative integers, e.g. [1, 24, 1]", where)
    dims = [int(d) for d in shape]
    if math.prod(d for d in dims if d) > MAX_ELEMENTS:
        raise InvalidInput(f"{where} {dims} is too large: its non-zero dimensions multiply to more than "
                           f"{MAX_ELEMENTS}, far beyond any request's size", where)
    return dims


def _integer(value: Any) -> bool:
    """An integer as JSON Schema counts them: 3 or 3.0 (so the OpenAPI schema says exactly this)."""
    return type(value) is int or (type(value) is float and value.is_integer())


def _datatype(datatype: Any, where: str) -> None:
    if datatype == MODEL_DATATYPE:
        return
    if not isinstance(datatype, str):
        raise InvalidInput(f"{where} must be a string: {MODEL_DATATYPE!r}", where)
    if datatype in DATATYPES:
        raise InvalidInput(f"{where} is {datatype!r}, but this model's inputs are {MODEL_DATATYPE}; convert "
                           "on the client (no conversion is applied here, as in Triton)", where)
    raise InvalidInput(f"{where} {datatype!r} is not a datatype of the protocol; send {MODEL_DATATYPE!r}",
                       where)


def _json_data(data: Any, where: str, shape: list[int], may_hold_bools: bool) -> np.ndarray:
    if data is None:
        raise InvalidInput(f"{where} has neither data nor parameters.binary_data_size", f"{where}.data")
    numbers = f"{where}.data must hold only numbers (no strings, booleans or nulls), flattened row-major " \
              "or nested to the shape"
    if not isinstance(data, list):
        raise InvalidInput(numbers, f"{where}.data")
    try:
        array = np.asarray(data)
    except ValueError:  # ragged nesting
        raise InvalidInput(f"{numbers}; the nesting is ragged", f"{where}.data") from None
    if array.dtype.kind not in "iuf" or (may_hold_bools and has_bool(data)):
        raise InvalidInput(numbers, f"{where}.data")
    if array.size != math.prod(shape):
        raise InvalidInput(f"{where}.data holds {array.size} value(s) but its shape needs {math.prod(shape)}",
                           f"{where}.data")
    if array.ndim != 1 and list(array.shape) != shape:
        raise InvalidInput(f"{where}.data is nested as {list(array.shape)}; nest it as its shape {shape}, or "
                           "send it flat (row-major)", f"{where}.data")
    return _in_range(array.reshape(-1), where)


def _in_range(flat: np.ndarray, where: str) -> np.ndarray:
    """FP32 values, finite: NaN, infinities and numbers beyond FP32's range are refused."""
    with np.errstate(over="ignore", invalid="ignore"):
        wide = flat.astype(np.float64)
        finite = np.isfinite(wide) & (np.abs(wide) <= FLOAT32_MAX)  # no rounding down to FP32's max
    if not finite.all():
        index = int(np.argmin(finite))
        value = float(wide[index])  # NumPy 2's repr would say np.float32(nan)
        raise InvalidInput(f"{where}.data[{index}] is {value!r}: not a finite FP32 number (at most "
                           f"{FLOAT32_MAX:.6g} in magnitude)", f"{where}.data")
    return wide.astype(np.float32)


def _requested_outputs(outputs: Any, parameters: dict[str, Any]) -> tuple[list[str], set[str]]:
    binary_default = parameters.get("binary_data_output", False)
    if outputs is None or outputs == []:  # none asked for: all (Triton's rule; gRPC cannot tell [] apart)
        return list(OUTPUT_NAMES), set(OUTPUT_NAMES) if binary_default else set()
    if not isinstance(outputs, list):
        raise InvalidInput("outputs must be a list of {name, parameters}", "outputs")
    names: list[str] = []
    binary = set()
    for i, spec in enumerate(outputs):
        if not isinstance(spec, dict):
            raise InvalidInput(f"outputs[{i}] must be an object {{name, parameters}}, e.g. {{\"name\": "
                               f"\"{OUTPUT_NAMES[0]}\"}}", f"outputs[{i}]")
        name = spec.get("name")
        if name not in OUTPUT_NAMES:
            raise InvalidInput(f"outputs[{i}].name is {name!r}; this model's outputs are "
                               f"{list(OUTPUT_NAMES)}", f"outputs[{i}].name")
        if name in names:
            raise InvalidInput(f"outputs[{i}].name {name!r} is asked for twice", f"outputs[{i}].name")
        _known_keys(spec, OUTPUT_KEYS, f"outputs[{i}]")
        options = _object(spec.get("parameters"), f"outputs[{i}].parameters")
        _known_keys(options, {"binary_data"}, f"outputs[{i}].parameters")
        wanted = options.get("binary_data", binary_default)
        if not isinstance(wanted, bool):
            raise InvalidInput(f"outputs[{i}].parameters.binary_data must be true or false",
                               f"outputs[{i}].parameters.binary_data")
        names.append(name)
        if wanted:
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
        raise InvalidInput(f"inputs are {sorted(request.inputs)}; this model takes '{X_INPUT}' "
                           f"[batch, time, features]{optional}", "inputs")
    spec = manifest.inputs
    x = request.inputs[X_INPUT]
    if x.ndim != 3 or x.shape[2] != spec.num_features or x.shape[0] < 1:
        raise InvalidInput(f"x has shape {list(x.shape)}; expected [batch, time, {spec.num_features}] "
                           f"(features: {', '.join(spec.features)})", "x.shape")
    if not spec.min_length <= x.shape[1] <= spec.max_length:
        raise InvalidInput(f"x has {x.shape[1]} steps; this model accepts {spec.min_length} to "
                           f"{spec.max_length}", "x.shape")
    if x.shape[0] > max_sequences:
        raise InvalidInput(f"x holds {x.shape[0]} sequences; the limit is {max_sequences}", "x.shape")
    state = request.inputs.get(STATE_INPUT)
    expected = [x.shape[0], manifest.state.size]
    if state is not None and list(state.shape) != expected:
        raise InvalidInput(f"{STATE_INPUT} has shape {list(state.shape)}; expected {expected} [batch, state "
                           "size]: the next_state of an earlier answer, or zeros", f"{STATE_INPUT}.shape")
    x = _finite_float32(x, X_INPUT)
    return x, None if state is None else _finite_float32(state, STATE_INPUT)


def _finite_float32(array: np.ndarray, name: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        where = [int(i) for i in np.argwhere(~np.isfinite(array))[0]]
        raise InvalidInput(f"{name}{where} is not a finite float32 number", f"{name}.data")
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


# gRPC (protobuf) forms
def decode_infer(request: Any) -> InferRequest:
    """A gRPC ModelInferRequest, through the JSON form's checks."""
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
        inputs[tensor.name] = _pb_tensor(tensor, i, raw[i] if raw else None)
    asked = [{"name": o.name} | ({"parameters": values(o.parameters)} if o.parameters else {})
             for o in request.outputs]
    outputs, _ = _requested_outputs(asked or None, parameters)
    return InferRequest(inputs, outputs, set(), request.id or None, parameters)


def _pb_tensor(tensor: Any, i: int, raw: bytes | None) -> np.ndarray:
    where = f"inputs[{i}]"
    if tensor.parameters:
        _known_keys(dict(tensor.parameters), set(), f"{where}.parameters")  # e.g. shared_memory_region
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


def encode_infer(manifest: Manifest, request: InferRequest, arrays: dict[str, np.ndarray],
                 response: Any) -> Any:
    """Fill `response`, an empty gRPC ModelInferResponse, with the outputs asked for."""
    response.model_name, response.model_version = manifest.name, str(manifest.version)
    response.id = request.id or ""
    if request.parameters.get(FINAL_RESPONSE):
        response.parameters["triton_final_response"].bool_param = True
    for name in request.outputs:
        array = np.ascontiguousarray(arrays[name], dtype="<f4")
        response.outputs.add(name=name, datatype="FP32", shape=array.shape)
        response.raw_output_contents.append(array.tobytes())
    return response
