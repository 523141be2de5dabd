"""The native API's codec: predict bodies (JSON, or binary float32 steps) and stream chunks straight into
NumPy, and the answers out as JSON. orjson parses, NumPy checks shape and type in C: as strict as
per-element validation, without a Python loop over floats; errors name the field and the fix.

A stateless stream's state travels to the client and back as an opaque token, `gru2.<payload>.<mac>`
(base64url): the payload is a small JSON header (model name, model version, the graph's sha256, steps
seen, state size) and the float32 state bytes; the MAC is HMAC-SHA256 over the payload with the server's
secret (GRU_STATE_SECRET). A token is refused when it was changed, signed with another secret, or issued
for another model, version or graph (a version re-exported with other weights has another sha256, and
its states mean something else)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from service.bundle import InputSpec, Manifest
from service.errors import InvalidInput, MalformedBody, UnsupportedMediaType

ALLOWED_KEYS = {"sequences"}
STREAM_KEYS = {"steps", "state", "sequence_id", "start", "end"}
MAX_SEQUENCE_ID = 128
JSON = "application/json"
FLOAT32_MAX = float(np.finfo(np.float32).max)
log = logging.getLogger("gru_serve.streaming")


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


def decode_predict(body: bytes, media_type: str, shape: str | None, lengths: str | None, spec: InputSpec,
                   max_sequences: int) -> list[np.ndarray]:
    """A predict body, JSON or binary (by its media type): the sequences (T_i, F) float32."""
    if media_type == BINARY:
        return parse_predict_binary(body, shape, lengths, spec, max_sequences)
    require_json(media_type, f", or float32 steps with 'Content-Type: {BINARY}' and X-Shape")
    for header, name in ((shape, "X-Shape"), (lengths, "X-Lengths")):
        if header is not None:
            raise MalformedBody(f"{name} describes a binary body ('Content-Type: {BINARY}'); a JSON body "
                                "carries its own shape: drop the header", name.lower())
    return parse_predict_body(body, spec, max_sequences)


def require_json(media_type: str, alternative: str = "") -> None:
    """UnsupportedMediaType unless the body is JSON; `alternative`: what else the operation takes."""
    if media_type != JSON:
        raise UnsupportedMediaType(f"content type {media_type or '(none)'!r} is not supported; send JSON "
                                   f"with 'Content-Type: application/json'{alternative}", "content-type")


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
    if array.dtype.kind not in "iuf" or (may_hold_bools and has_bool(seq)):
        raise InvalidInput(f"{field} must contain only numbers (no strings, booleans or nulls)", field)
    if array.ndim == 1 and features == 1:
        array = array.reshape(-1, 1)  # a univariate sequence may be a flat list of numbers
    if array.ndim != 2 or array.shape[1] != features:
        got = f"has shape {list(array.shape)}"
        if array.ndim == 2:
            got = f"has {array.shape[1]} feature(s) per step"
        elif array.ndim == 1:
            got = f"is a flat list of {len(array)} number(s), one feature per step"
        raise InvalidInput(f"{field} {got}; this model takes {expected}: shape [steps, {features}]", field)
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


def has_bool(value: Any) -> bool:
    """Whether a JSON value holds a boolean anywhere (NumPy reads true and false as 1 and 0)."""
    if isinstance(value, list):
        return any(has_bool(v) for v in value)
    return isinstance(value, bool)


# Binary input (native predict): `Content-Type: application/octet-stream`, the body float32
# little-endian steps of the batch x (batch, time, features) in C order, the shape in `X-Shape:
# batch,time,features` and, for sequences shorter than `time`, their steps in `X-Lengths: l1,...` (steps
# past a sequence's length are padding: sent, never read). The model's own inputs (x, lengths).
BINARY = "application/octet-stream"
SHAPE_HEADER, LENGTHS_HEADER = "x-shape", "x-lengths"
FLOAT32 = np.dtype("<f4")
# The headers' grammar; the OpenAPI patterns are these very expressions. (A length of 0 parses, to be
# refused by the range check that names the sequence.)
POSITIVE, INTEGER = r" *[1-9][0-9]{0,8} *", r" *[0-9]{1,9} *"
LENGTHS_PATTERN = rf"^{INTEGER}(,{INTEGER})*$"


def shape_pattern(features: int | None = None) -> str:
    """X-Shape's grammar (batch,time,features); with `features`, one model's."""
    last = POSITIVE if features is None else f" *{features} *"
    return rf"^{POSITIVE},{POSITIVE},{last}$"


def parse_predict_binary(body: bytes, shape: str | None, lengths: str | None, spec: InputSpec,
                         max_sequences: int) -> list[np.ndarray]:
    """The sequences (T_i, F) float32 of a binary body: views of the body, no copy."""
    batch, time, features = _shape(shape, spec, max_sequences)
    expected = batch * time * features * FLOAT32.itemsize
    if len(body) != expected:
        raise MalformedBody(f"the body has {len(body)} bytes; X-Shape {batch},{time},{features} needs "
                            f"{batch}x{time}x{features} float32 values = {expected} bytes", "body")
    x = np.frombuffer(body, FLOAT32).reshape(batch, time, features)
    steps = _lengths(lengths, batch, time, spec)
    valid = np.isfinite(x).all(axis=2)  # (batch, time): a step with every feature finite
    if steps is not None:
        valid |= np.arange(time) >= steps[:, None]  # padding is never read, so never checked
    if not valid.all():
        sequence, step = (int(i) for i in np.argwhere(~valid)[0])
        raise InvalidInput(f"sequences[{sequence}][{step}] is not a finite float32 number (NaN or "
                           "infinity)", f"sequences[{sequence}][{step}]")
    if steps is None:
        return list(x)
    return [x[i, :n] for i, n in enumerate(steps.tolist())]


def _shape(header: str | None, spec: InputSpec, max_sequences: int) -> tuple[int, int, int]:
    example = f"e.g. X-Shape: 1,{spec.max_length},{spec.num_features}"
    if header is None:
        raise MalformedBody(f"a binary body needs its shape in the X-Shape header (batch,time,features; "
                            f"{example})", SHAPE_HEADER)
    if not re.fullmatch(shape_pattern(), header):
        raise MalformedBody(f"X-Shape {header[:64]!r} must be three positive integers batch,time,features "
                            f"({example})", SHAPE_HEADER)
    batch, time, features = (int(part) for part in header.split(","))
    if features != spec.num_features:
        raise InvalidInput(f"X-Shape says {features} feature(s) per step; this model takes "
                           f"{spec.num_features} ({', '.join(spec.features)})", SHAPE_HEADER)
    if batch > max_sequences:
        raise InvalidInput(f"{batch} sequences in one request; the limit is {max_sequences}", SHAPE_HEADER)
    if time > spec.max_length:
        raise InvalidInput(f"X-Shape says {time} steps; this model accepts {spec.min_length} to "
                           f"{spec.max_length}", SHAPE_HEADER)
    return batch, time, features


def _lengths(header: str | None, batch: int, time: int, spec: InputSpec) -> np.ndarray | None:
    """Each sequence's steps (None: every sequence has `time` steps), checked against the model's range."""
    if header is None:
        if time < spec.min_length:
            raise InvalidInput(f"X-Shape says {time} steps; this model accepts {spec.min_length} to "
                               f"{spec.max_length}", SHAPE_HEADER)
        return None
    if not re.fullmatch(LENGTHS_PATTERN, header):
        raise MalformedBody(f"X-Lengths {header[:64]!r} must be comma-separated integers (e.g. X-Lengths: "
                            "24,17,20)", LENGTHS_HEADER)
    steps = np.array([int(part) for part in header.split(",")])
    if len(steps) != batch:
        raise MalformedBody(f"X-Lengths has {len(steps)} value(s); X-Shape says {batch} sequence(s): give "
                            "one length per sequence", LENGTHS_HEADER)
    low, high = max(spec.min_length, 1), min(spec.max_length, time)
    outside = np.flatnonzero((steps < low) | (steps > high))
    if outside.size:
        i = int(outside[0])
        raise InvalidInput(f"X-Lengths gives sequence {i} {steps[i]} steps; each must be {low} to {high} "
                           f"(the model accepts {spec.min_length} to {spec.max_length}, X-Shape's time is "
                           f"{time})", f"{LENGTHS_HEADER}[{i}]")
    return steps


# Stream chunks: one chunk of steps, plus either a state token (stateless) or a sequence id with
# start/end flags (server-held).
@dataclass
class StreamChunk:
    steps: np.ndarray  # (T, F) float32
    state: str | None = None
    sequence_id: str | None = None
    start: bool = False
    end: bool = False


def decode_stream(body: bytes, media_type: str, spec: InputSpec) -> StreamChunk:
    require_json(media_type)
    document = load_object(body, STREAM_KEYS, '{"steps": [...], "state": null}')
    if "steps" not in document:
        raise InvalidInput("'steps' is required: the chunk's steps, each a list of features", "steps")
    raw = document["steps"]
    steps = sequence_array(raw, "steps", spec, may_hold_bools=b"true" in body or b"false" in body)
    chunk = StreamChunk(steps=steps)
    for flag in ("start", "end"):
        value = document.get(flag, False)
        if not isinstance(value, bool):
            raise InvalidInput(f"'{flag}' must be true or false", flag)
        setattr(chunk, flag, value)
    state, sequence_id = document.get("state"), document.get("sequence_id")
    if state is not None and not isinstance(state, str):
        raise InvalidInput("'state' must be the token string from the previous answer, or null", "state")
    if sequence_id is not None and (not isinstance(sequence_id, str) or not 0 < len(sequence_id)
                                    <= MAX_SEQUENCE_ID):
        raise InvalidInput(f"'sequence_id' must be a string of 1 to {MAX_SEQUENCE_ID} characters",
                           "sequence_id")
    if state is not None and sequence_id is not None:
        raise InvalidInput("send either 'state' (stateless streaming) or 'sequence_id' (server-held), "
                           "not both", "state")
    if sequence_id is None and (chunk.start or chunk.end):
        raise InvalidInput("'start' and 'end' go with 'sequence_id'; stateless streams start with no "
                           "'state' and simply stop", "start" if chunk.start else "end")
    chunk.state, chunk.sequence_id = state, sequence_id
    return chunk


# Answers
def render_predict(manifest: Manifest, outputs: np.ndarray | list[np.ndarray]) -> dict[str, Any]:
    out = manifest.output
    return {"model": manifest.name, "version": manifest.version,
            **out.head.render(outputs, out.labels, out.positive_label)}


def prediction(manifest: Manifest, output: np.ndarray) -> dict[str, Any]:
    """One sequence's answer: output (O,), or (T, O) per-step probabilities for tagging."""
    return manifest.output.head.prediction(output, manifest.output.labels, manifest.output.positive_label)


# The state token (stateless streams)
TOKEN_PREFIX = "gru2"  # bump when the payload layout changes; older tokens are then refused by name


class StateTokenError(Exception):
    """The token cannot be used: tampered, foreign, or for another model; the message says which."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StateCodec:
    def __init__(self, secret: bytes):
        if len(secret) < 16:
            raise ValueError("the state secret (GRU_STATE_SECRET) must be at least 16 bytes")
        self._secret = secret

    @classmethod
    def with_secret(cls, secret: bytes) -> StateCodec:
        """The codec of GRU_STATE_SECRET; without one, of a random key (with a warning)."""
        if not secret:
            log.warning("GRU_STATE_SECRET is not set: streaming state tokens are signed with a random "
                        "key and stop working when this process restarts")
            secret = secrets.token_bytes(32)
        return cls(secret)

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def encode(self, model: str, version: int, graph: str, state: np.ndarray, steps: int) -> str:
        """state: (S,) float32 after `steps` steps of `model` version `version` (graph sha256 `graph`)."""
        header = json.dumps({"model": model, "version": version, "graph": graph, "steps": steps,
                             "size": int(state.size)}, separators=(",", ":")).encode()
        payload = header + b"\n" + np.ascontiguousarray(state, dtype="<f4").tobytes()
        return f"{TOKEN_PREFIX}.{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, token: str, model: str, version: int, graph: str, size: int) -> tuple[np.ndarray, int]:
        """The state (S,) and steps seen, after checking integrity and the model it belongs to."""
        prefix, _, rest = token.partition(".")
        if prefix != TOKEN_PREFIX:
            raise StateTokenError(f"not a state token of this service (expected the {TOKEN_PREFIX!r} format)")
        encoded, _, mac = rest.partition(".")
        try:
            payload, signature = _unb64(encoded), _unb64(mac)
        except ValueError as exc:
            raise StateTokenError("the state token is not valid base64url") from exc
        if not hmac.compare_digest(signature, self._mac(payload)):
            raise StateTokenError("the state token's signature does not match: it was changed, or "
                                  "issued by a server with another GRU_STATE_SECRET (or before a restart)")
        header_bytes, _, data = payload.partition(b"\n")
        header = json.loads(header_bytes)
        if (header["model"], header["version"]) != (model, version):
            raise StateTokenError(f"the state token belongs to model {header['model']!r} version "
                                  f"{header['version']}, not {model!r} version {version}; start a new "
                                  "stream without a state")
        if header["graph"] != graph:
            raise StateTokenError(f"model {model!r} version {version} was re-exported since this token was "
                                  "issued (its graph changed); start a new stream without a state")
        if header["size"] != size or len(data) != 4 * size:
            raise StateTokenError(f"the state token holds {header['size']} state values, expected {size}")
        return np.frombuffer(data, dtype="<f4").astype(np.float32), int(header["steps"])
