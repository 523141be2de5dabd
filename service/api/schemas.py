"""Request and response shapes for the OpenAPI description. The hot path parses bodies with
service/codecs/native.py and service/codecs/v2.py (same rules, no per-float validation) and answers with
plain dicts.

The pydantic models describe any model's requests; the *_schema functions describe exactly what one
loaded model accepts (feature count, lengths, state size, the limits in the settings), so that a request
valid under its schema is accepted and one that is not is refused. service/api/openapi.py puts them into
/openapi.json, one operation per loaded model. What JSON Schema cannot say is listed in README
"OpenAPI and fuzzing" (v2: the data holds prod(shape) values; stream: a state token must be one the
server signed; a sequence chunk is one sequence without a state).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from service.bundle import OUTPUT, STATE_INPUT, STATE_OUTPUT, X_INPUT, InputSpec, Manifest
from service.codecs.v2 import FINAL_RESPONSE

FLOAT32_MAX = 3.4028234663852886e38  # larger magnitudes are not finite float32 numbers: refused
NUMBER = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
SEQUENCE_ID_MAX_CHARS = 128
Step = Annotated[list[float], Field(min_length=1)]
Sequence = Annotated[list[Step], Field(min_length=1)] | Annotated[list[float], Field(min_length=1)]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sequences: list[Sequence] = Field(
        min_length=1,
        description="One or more sequences. A sequence is a list of steps; a step is a list of the "
        "model's features. A univariate sequence may be a flat list of numbers.",
        examples=[[[0.1, -0.3, 0.5, 1.2]]],
    )


class ClassPrediction(BaseModel):
    label: str
    probabilities: list[float] = Field(description="in the order of the response's `labels`")


class ForecastPrediction(BaseModel):
    forecast: list[float] = Field(description="the next `horizon` values, in original units")


class TagPrediction(BaseModel):
    steps: list[str] = Field(description="the most likely label at every time step")
    probabilities: list[list[float]] = Field(description="per step, in the order of `labels`")


Prediction = ClassPrediction | ForecastPrediction | TagPrediction


class PredictResponse(BaseModel):
    model: str
    version: int
    labels: list[str] | None = None
    predictions: list[Prediction]


class StreamRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: Sequence = Field(
        description="the next chunk of the sequence: a list of steps, each a list of the model's features")
    state: str | None = Field(None, description="stateless streaming: the `state` token of the previous "
                              "answer; omit it (or null) for a sequence's first chunk")
    sequence_id: str | None = Field(None, description="server-held streaming: your id for the sequence "
                                    "(instead of `state`)")
    start: bool = Field(False, description="with sequence_id: this chunk begins the sequence")
    end: bool = Field(False, description="with sequence_id: this chunk ends it (the server forgets it)")


class StreamResponse(BaseModel):
    model: str
    version: int
    steps_seen: int = Field(description="steps of the sequence so far, this chunk included")
    prediction: Prediction = Field(description="the answer for the whole prefix so far; tagging models "
                                   "answer for this chunk's steps")
    state: str | None = Field(None, description="stateless: send it back with the next chunk")
    sequence_id: str | None = None
    ended: bool | None = None


class ErrorDetail(BaseModel):
    code: str = Field(description="one of the codes in README \"Errors\" (service/api/errors.py)")
    message: str
    field: str | None = Field(description="what is wrong, e.g. sequences[0] or content-type")
    request_id: str | None = Field(description="the X-Request-ID of the request (null: refused before "
                                   "it was read)")


class ErrorResponse(BaseModel):
    """The native API's errors."""

    error: ErrorDetail


class V2ErrorResponse(BaseModel):
    """The Open Inference Protocol's errors (/v2/...): its {"error": message}, with the code beside."""

    model_config = ConfigDict(extra="allow")  # the admin load's 400 carries the load report too
    error: str
    code: str
    field: str | None
    request_id: str | None


class ModelSummary(BaseModel):
    name: str
    version: int
    task: str
    provider: str


class ModelList(BaseModel):
    models: list[ModelSummary]


class ModelMetadata(ModelSummary):
    inputs: dict[str, Any]
    output: dict[str, Any]
    gru: dict[str, Any]
    normalization: str
    training: dict[str, Any]
    warnings: list[str]
    created_at: str
    streaming: dict[str, Any] = Field(default_factory=dict, description="whether POST .../stream works, "
                                      "and why not")
    state: dict[str, Any] = Field(default_factory=dict, description="the per-sequence state vector "
                                  "(v2 `state`/`next_state`): its size and what it packs")


def sequence_schema(spec: InputSpec) -> dict[str, Any]:
    """One sequence (or stream chunk) of a model: min_length to max_length steps of num_features numbers;
    univariate models also take a flat list of numbers."""
    steps = {"type": "array", "minItems": spec.min_length, "maxItems": spec.max_length,
             "items": {"type": "array", "items": NUMBER, "minItems": spec.num_features,
                       "maxItems": spec.num_features}}
    if spec.num_features > 1:
        return steps
    return {"anyOf": [steps, {"type": "array", "items": NUMBER, "minItems": spec.min_length,
                              "maxItems": spec.max_length}]}


def predict_request_schema(spec: InputSpec, max_sequences: int) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": ["sequences"],
            "properties": {"sequences": {"type": "array", "minItems": 1, "maxItems": max_sequences,
                                         "items": sequence_schema(spec), "description": PredictRequest.
                                         model_fields["sequences"].description}}}


def stream_request_schema(spec: InputSpec) -> dict[str, Any]:
    """`state` (stateless) and `sequence_id` (server-held) exclude each other; start and end need a
    sequence_id."""
    fields = StreamRequest.model_fields
    held = {"required": ["sequence_id"], "properties": {"sequence_id": {"type": "string"}}}
    flag = [{"required": [f], "properties": {f: {"const": True}}} for f in ("start", "end")]
    return {"type": "object", "additionalProperties": False, "required": ["steps"],
            "properties": {"steps": sequence_schema(spec) | {"description": fields["steps"].description},
                           "state": {"type": ["string", "null"], "description": fields["state"].description},
                           "sequence_id": {"type": ["string", "null"], "minLength": 1,
                                           "maxLength": SEQUENCE_ID_MAX_CHARS,
                                           "description": fields["sequence_id"].description},
                           "start": {"type": "boolean", "description": fields["start"].description},
                           "end": {"type": "boolean", "description": fields["end"].description}},
            "allOf": [{"if": held, "then": {"properties": {"state": {"type": "null"}}}},
                      {"if": {"anyOf": flag}, "then": held}]}


def infer_request_schema(manifest: Manifest, max_sequences: int) -> dict[str, Any]:
    """A v2 inference request for one model, JSON tensors: `x` [batch, time, features] and optionally
    `state` [batch, S] (zeros only for a model that does not stream), each once, data flat (row-major)
    or nested to the shape; the outputs each once; the sequence parameters only for a model that streams."""
    spec, size = manifest.inputs, manifest.state.size
    batch = {"type": "integer", "minimum": 1, "maximum": max_sequences}
    x = _tensor(X_INPUT, [batch, {"type": "integer", "minimum": spec.min_length, "maximum": spec.max_length},
                          {"const": spec.num_features}])
    inputs: dict[str, Any] = {"type": "array", "minItems": 1, "maxItems": 1, "items": x}
    if size:  # a model that refuses streaming takes only a zero state (a new sequence: exact)
        values = NUMBER if manifest.streaming_refusal is None else {"const": 0}
        state = _tensor(STATE_INPUT, [batch, {"const": size}], values)
        inputs = {"type": "array", "minItems": 1, "maxItems": 2, "contains": x, "maxContains": 1,
                  "items": {"anyOf": [x, state]}}
    named = [{"properties": {"name": {"const": name}}} for name in (OUTPUT, STATE_OUTPUT)]
    output = {"type": "object", "additionalProperties": False, "required": ["name"],
              "properties": {"name": {"enum": [OUTPUT, STATE_OUTPUT]},
                             "parameters": {"type": "object", "additionalProperties": False,
                                            "properties": {"binary_data": {"type": "boolean"}}}}}
    outputs = {"type": "array", "items": output, "maxItems": 2,
               "anyOf": [{"maxItems": 1}, {"prefixItems": named}, {"prefixItems": named[::-1]}]}
    flag = {"type": "boolean"}
    parameters: dict[str, Any] = {"binary_data_output": flag, FINAL_RESPONSE: flag}
    if manifest.streaming_refusal is None:
        parameters |= {"sequence_id": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 2**64 - 1},
                                                 {"type": "string", "maxLength": SEQUENCE_ID_MAX_CHARS}]},
                       "sequence_start": {"type": "boolean"}, "sequence_end": {"type": "boolean"}}
    return {"type": "object", "additionalProperties": False, "required": ["inputs"],
            "properties": {"id": {"type": "string"}, "inputs": inputs, "outputs": outputs,
                           "parameters": {"type": "object", "additionalProperties": False,
                                          "properties": parameters}}}


def infer_response_schema() -> dict[str, Any]:
    """A v2 inference response in JSON (binary outputs carry parameters.binary_data_size instead of data)."""
    output = {"type": "object", "required": ["name", "datatype", "shape"],
              "properties": {"name": {"type": "string"}, "datatype": {"const": "FP32"},
                             "shape": {"type": "array", "items": {"type": "integer"}},
                             "data": {"type": "array", "items": {"type": "number"}},
                             "parameters": {"type": "object"}}}
    return {"type": "object", "required": ["model_name", "model_version", "outputs"],
            "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"},
                           "id": {"type": "string"}, "outputs": {"type": "array", "items": output}}}


def _tensor(name: str, dims: list[dict[str, Any]], values: dict[str, Any] = NUMBER) -> dict[str, Any]:
    nested: dict[str, Any] = values
    for _ in dims:
        nested = {"type": "array", "items": nested}
    return {"type": "object", "additionalProperties": False,
            "required": ["name", "shape", "datatype", "data"],
            "properties": {"name": {"const": name}, "datatype": {"const": "FP32"},
                           "shape": {"type": "array", "prefixItems": dims, "items": False,
                                     "minItems": len(dims)},
                           "data": {"anyOf": [{"type": "array", "items": values}, nested]},
                           "parameters": {"type": "object", "additionalProperties": False}}}
