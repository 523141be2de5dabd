"""Request and response shapes for the OpenAPI docs. The hot path parses bodies with
service.api.parsing (same rules, no per-float validation) and answers with plain dicts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sequences: list[list[list[float]] | list[float]] = Field(
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
    steps: list[list[float]] | list[float] = Field(
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
    code: str
    message: str
    field: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


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


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "malformed JSON", 404: "unknown model", 413: "body over the size limit",
        415: "content type is not application/json",
        422: "invalid sequences (field named), an invalid state token, or a model that cannot stream",
        500: "inference failed",
    }.items()
}
