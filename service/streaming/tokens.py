"""Stateless streaming: the recurrent state travels to the client and back as an opaque token.

A token is `gru2.<payload>.<mac>` (base64url): the payload is a small JSON header (model name, model
version, the graph's sha256, steps seen, state size) and the float32 state bytes; the MAC is
HMAC-SHA256 over the payload with the server's secret (GRU_STATE_SECRET). A token is refused when it
was changed, signed with another secret, or issued for another model, version or graph (a version
re-exported with other weights has another sha256, and its states mean something else).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import numpy as np

PREFIX = "gru2"  # bump when the payload layout changes; older tokens are then refused by name


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

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._secret, payload, hashlib.sha256).digest()

    def encode(self, model: str, version: int, graph: str, state: np.ndarray, steps: int) -> str:
        """state: (S,) float32 after `steps` steps of `model` version `version` (graph sha256 `graph`)."""
        header = json.dumps({"model": model, "version": version, "graph": graph, "steps": steps,
                             "size": int(state.size)}, separators=(",", ":")).encode()
        payload = header + b"\n" + np.ascontiguousarray(state, dtype="<f4").tobytes()
        return f"{PREFIX}.{_b64(payload)}.{_b64(self._mac(payload))}"

    def decode(self, token: str, model: str, version: int, graph: str, size: int) -> tuple[np.ndarray, int]:
        """The state (S,) and steps seen, after checking integrity and the model it belongs to."""
        prefix, _, rest = token.partition(".")
        if prefix != PREFIX:
            raise StateTokenError(f"not a state token of this service (expected the {PREFIX!r} format)")
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
