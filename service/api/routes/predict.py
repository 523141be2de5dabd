"""Native predict, POST /models/{name}[/versions/{v}]/predict (routed by service/api/inference.py):
sequences in as JSON or as binary float32 (service/api/parsing.py), the scheduler, one prediction per
sequence out (JSON either way)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from service.api.errors import MalformedBody
from service.api.parsing import BINARY, parse_predict_binary, parse_predict_body
from service.api.schemas import ERRORS as ERRORS
from service.bundle import Manifest

if TYPE_CHECKING:
    from service.api.inference import Call, Reply


async def predict(call: Call) -> Reply:
    manifest = call.runtime.manifest
    limit = call.settings.max_sequences_per_request
    if call.media_type() == BINARY:
        sequences = parse_predict_binary(call.body, call.header(b"x-shape"), call.header(b"x-lengths"),
                                         manifest.inputs, limit)
    else:
        call.require_json(f", or float32 steps with 'Content-Type: {BINARY}' and X-Shape")
        for header, name in ((b"x-shape", "X-Shape"), (b"x-lengths", "X-Lengths")):
            if call.header(header) is not None:
                raise MalformedBody(f"{name} describes a binary body ('Content-Type: {BINARY}'); a JSON body "
                                    "carries its own shape: drop the header", name.lower())
        sequences = parse_predict_body(call.body, manifest.inputs, limit)
    result = await call.scheduler.run(sequences)
    return call.json(render(manifest, result.outputs))


def render(manifest: Manifest, outputs: np.ndarray | list[np.ndarray]) -> dict[str, Any]:
    answer: dict[str, Any] = {"model": manifest.name, "version": manifest.version}
    if manifest.output.kind == "step_probabilities":
        answer["labels"] = manifest.output.labels or []
        answer["predictions"] = [prediction(manifest, steps) for steps in outputs]
    elif isinstance(outputs, list):
        raise TypeError("per-step outputs for a model that is not a tagging model")
    elif manifest.output.kind in ("probabilities", "probability"):  # probability: a binary sigmoid's
        labels = manifest.output.labels or []
        outputs = manifest.output.class_probabilities(outputs)  # (B, labels): both classes named
        best = outputs.argmax(axis=1).tolist()
        answer["labels"] = labels
        answer["predictions"] = [
            {"label": labels[k], "probabilities": row} for k, row in zip(best, outputs, strict=True)
        ]
    else:
        answer["predictions"] = [{"forecast": row} for row in outputs]
    return answer


def prediction(manifest: Manifest, output: np.ndarray) -> dict[str, Any]:
    """One sequence's answer: output (O,), or (T, O) per-step probabilities for tagging."""
    labels = manifest.output.labels or []
    if manifest.output.kind == "step_probabilities":
        return {"steps": [labels[k] for k in output.argmax(axis=1).tolist()], "probabilities": output}
    if manifest.output.kind in ("probabilities", "probability"):
        output = manifest.output.class_probabilities(output)
        return {"label": labels[int(output.argmax())], "probabilities": output}
    return {"forecast": output}
