"""`gru predict`: a small client. Sends sequences to a running server and prints its JSON answer."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server address")
    parser.add_argument("--model", required=True, help="model name (see GET /models)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--values", help="one univariate sequence: comma-separated numbers")
    source.add_argument("--file", help='JSON file with {"sequences": [...]} (or - for stdin), '
                        "or a CSV file holding one sequence: a row per step, a column per feature")


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


def run(args: argparse.Namespace) -> int:
    body = json.dumps(build_body(args)).encode()
    request = urllib.request.Request(
        f"{args.url.rstrip('/')}/models/{args.model}/predict", data=body,
        headers={"Content-Type": "application/json"}, method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            print(json.dumps(json.loads(response.read()), indent=2))
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.read().decode(errors="replace"), file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"cannot reach {args.url}: {exc.reason}", file=sys.stderr)
        return 1
