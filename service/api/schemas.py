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


class PredictResponse(BaseModel):
    model: str
    version: int
    labels: list[str] | None = None
    predictions: list[ClassPrediction | ForecastPrediction]


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


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "malformed JSON", 404: "unknown model", 413: "body over the size limit",
        415: "content type is not application/json", 422: "invalid sequences (field named)",
        500: "inference failed",
    }.items()
}
