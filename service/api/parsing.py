"""Request bodies straight into NumPy: orjson parses, NumPy checks shape and type in C. As strict as
per-element validation, without a Python loop over floats; errors name the field and the fix."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from service.api.errors import InvalidInput, MalformedBody
from service.bundle import InputSpec

ALLOWED_KEYS = {"sequences"}
FLOAT32_MAX = float(np.finfo(np.float32).max)


def load_object(body: bytes, allowed: set[str], example: str) -> dict[str, Any]:
    """The body as a JSON object holding only `allowed` keys; errors name the field."""
    try:
        document = orjson.loads(body)  # rejects NaN/Infinity literals and malformed UTF-8
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"the body is not valid JSON: {exc}", "body") from exc
    if not isinstance(document, dict):
        raise InvalidInput(f"the body must be a JSON object like {example}", "body")
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise InvalidInput(f"unknown field(s) {unknown}; expected some of {sorted(allowed)}", unknown[0])
    return document


def parse_predict_body(body: bytes, spec: InputSpec, max_sequences: int) -> list[np.ndarray]:
    document = load_object(body, ALLOWED_KEYS, '{"sequences": [...]}')
    sequences = document.get("sequences")
    if not isinstance(sequences, list) or not sequences:
        raise InvalidInput("'sequences' must be a non-empty list of sequences "
                           "(each a list of steps, each step a list of features)", "sequences")
    if len(sequences) > max_sequences:
        raise InvalidInput(f"{len(sequences)} sequences in one request; the limit is {max_sequences}",
                           "sequences")
    may_hold_bools = b"true" in body or b"false" in body  # bools pass np.asarray as 1.0 / 0.0
    return [sequence_array(seq, f"sequences[{i}]", spec, may_hold_bools) for i, seq in enumerate(sequences)]


def sequence_array(seq: Any, field: str, spec: InputSpec, may_hold_bools: bool) -> np.ndarray:
    features = spec.num_features
    expected = f"a list of steps, each a list of {features} number(s) ({', '.join(spec.features)})"
    if not isinstance(seq, list):
        raise InvalidInput(f"{field} must be {expected}", field)
    if not seq:
        raise InvalidInput(f"{field} is empty; send at least {spec.min_length} step(s)", field)
    try:
        array = np.asarray(seq)
    except ValueError as exc:  # ragged nesting
        raise InvalidInput(f"{field} is ragged: every step must have {features} number(s)", field) from exc
    if array.dtype.kind not in "iuf" or (may_hold_bools and _has_bool(seq)):
        raise InvalidInput(f"{field} must contain only numbers (no strings, booleans or nulls)", field)
    if array.ndim == 1 and features == 1:
        array = array.reshape(-1, 1)  # a univariate sequence may be a flat list of numbers
    if array.ndim != 2 or array.shape[1] != features:
        got = array.shape[1] if array.ndim == 2 else f"shape {list(array.shape)}"
        raise InvalidInput(f"{field} has {got} feature(s) per step; expected {expected}", field)
    if not spec.min_length <= len(array) <= spec.max_length:
        raise InvalidInput(f"{field} has {len(array)} steps; this model accepts "
                           f"{spec.min_length} to {spec.max_length}", field)
    beyond = np.abs(array) > FLOAT32_MAX  # refused even where float32 would round it down to its max
    with np.errstate(over="ignore"):  # overflow to inf is reported just below
        array = array.astype(np.float32)
    bad = beyond | ~np.isfinite(array)
    if bad.any():
        step = int(np.argwhere(bad)[0][0])
        raise InvalidInput(f"{field}[{step}] is not a finite float32 number", f"{field}[{step}]")
    return array


def _has_bool(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_bool(v) for v in value)
    return isinstance(value, bool)
