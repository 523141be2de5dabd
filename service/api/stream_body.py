"""Streaming request bodies and their errors: one chunk of steps, plus either a state token
(stateless) or a sequence id with start/end flags (server-held)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.api.errors import InvalidInput
from service.api.parsing import load_object, sequence_array
from service.bundle import InputSpec

ALLOWED_KEYS = {"steps", "state", "sequence_id", "start", "end"}
MAX_SEQUENCE_ID = 128


@dataclass
class StreamChunk:
    steps: np.ndarray  # (T, F) float32
    state: str | None = None
    sequence_id: str | None = None
    start: bool = False
    end: bool = False


def parse_stream_body(body: bytes, spec: InputSpec) -> StreamChunk:
    document = load_object(body, ALLOWED_KEYS, '{"steps": [...], "state": null}')
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
