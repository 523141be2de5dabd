"""`gru predict`: a small client. Sends sequences to a running server and prints its JSON answer.

`predict()` is the same client for Python code: JSON by default, or (binary=True) the sequences as
float32 steps (Content-Type: application/octet-stream, X-Shape, X-Lengths; README "Binary input"),
which the server decodes without parsing text: about half the request's bytes and much less CPU."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server address")
    parser.add_argument("--model", required=True, help="model name (see GET /models)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--values", help="one univariate sequence: comma-separated numbers")
    source.add_argument("--file", help='JSON file with {"sequences": [...]} (or - for stdin), '
                        "or a CSV file holding one sequence: a row per step, a column per feature")
    parser.add_argument("--binary", action="store_true",
                        help="send the sequences as float32 steps (application/octet-stream), not JSON")


def build_body(args: argparse.Namespace) -> dict[str, Any]:
    if args.values is not None:
        return {"sequences": [[float(v) for v in args.values.split(",") if v.strip()]]}
    if args.file == "-":
        return json.load(sys.stdin)
    path = Path(args.file)
    if path.suffix == ".csv":
        rows = [line.split(",") for line in path.read_text().splitlines() if line.strip()]
        if rows and not _is_number(rows[0][0]):
            rows = rows[1:]  # header
        return {"sequences": [[[float(v) for v in row] for row in rows]]}
    return json.loads(path.read_text())


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def encode_binary(sequences: Sequence[Any]) -> tuple[bytes, dict[str, str]]:
    """Sequences (each (time, features), or a flat list for one feature) as the binary body: float32
    little-endian, padded to the longest, with X-Shape and, when lengths differ, X-Lengths."""
    arrays = [np.asarray(seq, dtype=np.float32) for seq in sequences]
    arrays = [a.reshape(-1, 1) if a.ndim == 1 else a for a in arrays]
    if not arrays or any(a.ndim != 2 or a.shape[1] != arrays[0].shape[1] for a in arrays):
        raise ValueError("every sequence must be a list of steps with the same number of features")
    lengths = [len(a) for a in arrays]
    x = np.zeros((len(arrays), max(lengths), arrays[0].shape[1]), "<f4")
    for i, a in enumerate(arrays):
        x[i, : len(a)] = a
    headers = {"Content-Type": "application/octet-stream", "X-Shape": ",".join(map(str, x.shape))}
    if min(lengths) != max(lengths):
        headers["X-Lengths"] = ",".join(map(str, lengths))
    return x.tobytes(), headers


def predict(url: str, model: str, sequences: Sequence[Any], binary: bool = False,
            timeout: float = 30.0) -> dict[str, Any]:
    """POST sequences to a model's predict operation and return the answer (urllib's HTTPError on an
    error status: its body is the JSON error)."""
    if binary:
        body, headers = encode_binary(sequences)
    else:
        body, headers = json.dumps({"sequences": sequences}).encode(), {"Content-Type": "application/json"}
    request = urllib.request.Request(f"{url.rstrip('/')}/models/{model}/predict", data=body, headers=headers,
                                     method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def run(args: argparse.Namespace) -> int:
    body = build_body(args)
    if not isinstance(body, dict) or "sequences" not in body:
        raise ValueError('the input must be {"sequences": [...]}')
    try:
        print(json.dumps(predict(args.url, args.model, body["sequences"], args.binary), indent=2))
        return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(errors="replace"), file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"cannot reach {args.url}: {exc.reason}", file=sys.stderr)
        return 1
