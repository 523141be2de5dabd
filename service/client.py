"""`gru predict`: a small client. Sends sequences to a running server and prints its JSON answer.

Sequences come from `--values` (one univariate sequence) or `--file`: a CSV in the layout training files
use (long format: one row per series and step; `series_id`, `step`, one column per feature, named as in
training; other columns, such as the label, are ignored; as in training, a file without `series_id` is one
series and one without `step` is in time order; steps are numbers or ISO dates) or JSON
`{"sequences": [...]}`.

A file's sequences go out as as many requests as the server's limits need (--max-sequences, --max-bytes:
its defaults, GRU_MAX_SEQUENCES_PER_REQUEST and GRU_MAX_BODY_BYTES); their answers are printed as one. An
error is one `gru predict: error:` line that says what to change.

`predict()` is the same client for Python code: JSON by default, or (binary=True) the sequences as
float32 steps (Content-Type: application/octet-stream, X-Shape, X-Lengths; README "Binary input"),
which the server decodes without parsing text: about half the request's bytes and much less CPU."""

from __future__ import annotations

import argparse
import contextlib
import csv
import http.client
import io
import json
import os
import re
import socket
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

MAX_SEQUENCES, MAX_BYTES = 1024, 4 * 1024 * 1024  # the server's defaults (service/settings.py)
TIMEOUT_S = 30.0  # each request's whole exchange: connect, send, the answer's last byte


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server address")
    parser.add_argument("--model", required=True, help="model name (see GET /models)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--values", help="one univariate sequence: comma-separated numbers, e.g. "
                        "--values -0.71,-1.18,-1.35 (a leading minus sign is fine)")
    source.add_argument("--file", help="CSV in the training files' long layout: a row per (series, step), "
                        "columns series_id, step (numbers or ISO dates) and one per feature named as in "
                        "training (others, such as the label, are ignored; series may differ in length; "
                        "without series_id the file is one series, without step in time order); or JSON "
                        '{"sequences": [...]}; - reads JSON from stdin')
    parser.add_argument("--id-column", default="series_id",
                        help="CSV: the series column (default: series_id)")
    parser.add_argument("--time-column", default="step", help="CSV: the time-step column (default: step)")
    parser.add_argument("--binary", action="store_true",
                        help="send the sequences as float32 steps (application/octet-stream), not JSON")
    parser.add_argument("--max-sequences", type=int, default=MAX_SEQUENCES, metavar="N",
                        help=f"sequences per request at most (default {MAX_SEQUENCES}: the server's default "
                        "GRU_MAX_SEQUENCES_PER_REQUEST)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, metavar="SECONDS",
                        help=f"each request's whole answer must arrive within this (default "
                        f"{TIMEOUT_S:g}); a file sent as several requests gives each its own")
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES, metavar="N",
                        help=f"request body bytes at most (default {MAX_BYTES}: the server's default "
                        "GRU_MAX_BODY_BYTES)")


def prepare_argv(argv: list[str]) -> list[str]:
    """`--values -0.71,...`: argparse takes a value that starts with '-' (and is not one plain number) for
    an option; glue it to the flag as `--values=-0.71,...`, which argparse reads as the value."""
    glued, i = [], 0
    while i < len(argv):
        if argv[i] == "--values" and i + 1 < len(argv) and argv[i + 1].startswith("-") and \
                argv[i + 1][1:2] in set("0123456789."):
            glued.append(f"--values={argv[i + 1]}")
            i += 2
            continue
        glued.append(argv[i])
        i += 1
    return glued


def parse_values(text: str) -> list[float]:
    values = []
    for item in text.replace(",", " ").split():
        try:
            values.append(float(item))
        except ValueError:
            raise ValueError(f"--values: {item!r} is not a number; give comma-separated numbers, "
                             "e.g. --values -0.71,-1.18,-1.35") from None
    if not values:
        raise ValueError("--values: no numbers given; e.g. --values -0.71,-1.18,-1.35")
    return values


ONE_SERIES = "(the whole file)"  # a file without the id column, as training reads it (training/data/long.py)


def read_long_csv(path: Path, features: list[str], id_column: str, time_column: str
                  ) -> tuple[list[str], list[list[list[float]]]]:
    """Series ids (in order of first appearance) and their sequences, steps in time order, features in
    the model's order. As training reads a file: without the id column it is one series, without the time
    column its rows are in time order; steps sort as numbers, or as ISO dates (`2021-05-01 00:30:00`)."""
    # utf-8-sig and the stripped names read a file as training does (training/data/long.py): before, an
    # Excel "CSV UTF-8" file's BOM hid the first column's name, and its series were sent as one sequence
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, skipinitialspace=True)
        reader.fieldnames = columns = [name.strip() for name in reader.fieldnames or []]
        missing = [c for c in features if c not in columns]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; the file has {columns}. Expected the training "
                             f"files' long layout: {id_column}, {time_column}, then the model's features "
                             f"{features} (a file without {id_column} is one series, without {time_column} "
                             "in time order; --id-column / --time-column name others)")
        say_layout(path, columns, id_column, time_column)
        series: dict[str, list[tuple[str | int, list[float]]]] = {}
        for line, row in enumerate(reader, start=2):
            extra = row.get(None) or []  # fields past the header's names (a comma at a row's end: one, empty)
            if any(value.strip() for value in extra):
                # R's write.table row names, which training reads as row names; before, each value went
                # under the name to its left (numeric ids: silently; here, step 's00' was 'not a date')
                raise ValueError(f"{path}, line {line}: {len(columns) + len(extra)} fields but the header "
                                 f"names {len(columns)}: a row name first (R: write.csv(df, row.names = "
                                 "FALSE)), or a name missing from the header")
            values = [_cell(row, f, f"{path}, line {line}") for f in features]
            key = row[id_column] if id_column in columns else ONE_SERIES
            series.setdefault(key, []).append((row[time_column] if time_column in columns else line, values))
    if not series:
        raise ValueError(f"{path}: no rows after the header")
    return list(series), [_in_time_order(rows, path, time_column, key) for key, rows in series.items()]


TRUTH = {"true": 1.0, "false": 0.0}  # as pandas reads a training file's True/TRUE/true: a column of 1 and 0


def _number(text: str | None) -> float:
    """A cell as training read it: a number, or True/False as 1/0 (before, a model trained on a column of
    True/False could not be asked from its own file: 'must be numbers')."""
    if text is None:  # a row shorter than the header
        raise TypeError("no value")
    truth = TRUTH.get(text.strip().lower())
    return float(text) if truth is None else truth


def _cell(row: dict[str, str], feature: str, where: str) -> float:
    """Before, a bad cell was '[features] must be numbers, got {the whole row}': which cell, and why an
    empty one that training filled (data.missing) is refused here, went unsaid."""
    try:
        return _number(row[feature])
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {feature!r} is {row[feature]!r}, not a number; a request holds numbers "
                         "only: fill the cell (training's data.missing fills training files only)") from None


def say_layout(path: Path, columns: Sequence[str], id_column: str, time_column: str) -> None:
    """Say on stderr, as `gru train` does, when the file is read as one series or in file order. Before,
    nothing was said: a file of many series under another id column name (`unit`) was sent as one long
    sequence and answered with one confident, meaningless prediction."""
    if id_column not in columns:
        print(f"gru predict: no {id_column!r} column in {path.name}: the file is one series (its columns: "
              f"{', '.join(columns)}); --id-column NAME names the series column", file=sys.stderr)
    if time_column not in columns:
        print(f"gru predict: no {time_column!r} column in {path.name}: its rows are in time order; "
              "--time-column NAME names the time column", file=sys.stderr)


def _in_time_order(rows: list[tuple[str | int, list[float]]], path: Path, time_column: str, series: str
                   ) -> list[list[float]]:
    """A series' steps sorted by their numbers, or their ISO dates. Before, a step had to be a number: a
    file with dates, which training reads, was refused."""
    steps = [step for step, _ in rows]
    for parse in (float, lambda step: datetime.fromisoformat(str(step).strip())):
        try:
            keys = [parse(step) for step in steps]
            order = sorted(range(len(rows)), key=keys.__getitem__)
        except (TypeError, ValueError):  # TypeError: dates with and without a time zone
            continue
        _one_row_per_step([steps[i] for i in order], [keys[i] for i in order], path, time_column, series)
        return [rows[i][1] for i in order]
    raise ValueError(f"{path}: {time_column} {steps[0]!r} ... are neither numbers nor ISO dates "
                     "(2021-05-01, 2021-05-01 00:30:00); write them so, or number the steps 0, 1, 2, ...")


def _one_row_per_step(steps: list[Any], keys: list[Any], path: Path, time_column: str, series: str) -> None:
    """Steps (in time order) as training takes them: each once, and whole-number steps without one
    missing between two. Before (round 10) a step given twice went out as two steps, and a missing one
    was skipped: a sequence the model never saw, answered without a word (training refuses both)."""
    of = "" if series == ONE_SERIES else f" of series {series!r}"
    twice = next((a for a, x, y in zip(steps, keys, keys[1:], strict=False) if x == y), None)
    if twice is not None:
        raise ValueError(f"{path}: {time_column} {twice!r}{of} appears in more than one row; keep one row "
                         "per series and step")
    if len(keys) < 2 or not all(isinstance(s, str) and re.fullmatch(r"\s*-?\d+\s*", s) for s in steps):
        return  # line numbers (no time column), dates and fractional steps only order the rows
    spacing = min(y - x for x, y in zip(keys, keys[1:], strict=False))
    gap = next((i for i, (x, y) in enumerate(zip(keys, keys[1:], strict=False)) if y - x > spacing), None)
    if gap is not None:
        raise ValueError(f"{path}: no row for {time_column} {int(keys[gap] + spacing)}{of} (it goes "
                         f"{steps[gap].strip()}, {steps[gap + 1].strip()}): add the missing row(s), or "
                         "number the steps 0, 1, 2, ... if nothing is missing")


def model_features(url: str, model: str, timeout: float = TIMEOUT_S) -> list[str]:
    answer = fetch(urllib.request.Request(f"{url}/models/{model}"), url, timeout, "inputs", "features")
    return list(answer["inputs"]["features"])


def fetch(request: urllib.request.Request, url: str, timeout: float, *path: str) -> dict[str, Any]:
    """Send `request` and read its whole answer (see read_answer) within `timeout` seconds in all, or
    raise TimeoutError. urllib's own timeout bounds each read: before (round 11), a server or proxy that
    trickled its answer (a byte every 0.5 s) kept the client waiting for as long as it trickled. At the
    deadline a watchdog shuts the connection's socket, which ends the read that waits; whatever was read
    by then (http.client takes the end of the socket for the end of the headers) is not an answer."""
    sockets: list[socket.socket] = []
    cut = threading.Event()
    late = threading.Timer(timeout, _shut, [sockets, cut])
    late.start()
    try:
        with urllib.request.build_opener(_Recorded(sockets), _RecordedTLS(sockets)).open(
                request, timeout=timeout) as response:
            answer = read_answer(response, url, *path)
    except urllib.error.HTTPError as exc:  # its body (the JSON error) is read within the deadline too
        error = urllib.error.HTTPError(exc.url, exc.code, exc.msg, exc.hdrs, io.BytesIO(_read(exc, cut)))
        raise error from None
    except (OSError, http.client.HTTPException, ValueError):
        if cut.is_set():
            raise TimeoutError(f"no whole answer in {timeout:g} s") from None
        raise
    finally:
        late.cancel()
    if cut.is_set():
        raise TimeoutError(f"no whole answer in {timeout:g} s")
    return answer


def _read(error: urllib.error.HTTPError, cut: threading.Event) -> bytes:
    try:
        body = error.read()
    except (OSError, http.client.HTTPException):
        body = b""
    if cut.is_set():
        raise TimeoutError("no whole error answer in time")
    return body


def _shut(sockets: list[socket.socket], cut: threading.Event) -> None:
    cut.set()
    for sock in sockets:
        with contextlib.suppress(OSError):  # already closed
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's, under TLS too


class _Recorded(urllib.request.HTTPHandler):
    """urllib's HTTP handler, noting each connection's socket for fetch's watchdog."""

    def __init__(self, sockets: list[socket.socket]) -> None:
        super().__init__()
        self.sockets = sockets

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_Connection, self.sockets), req)


class _RecordedTLS(urllib.request.HTTPSHandler):
    def __init__(self, sockets: list[socket.socket]) -> None:
        super().__init__()
        self.sockets = sockets

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(partial(_TLSConnection, self.sockets), req)  # the default TLS context


class _Connection(http.client.HTTPConnection):
    def __init__(self, sockets: list[socket.socket], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sockets = sockets

    def connect(self) -> None:
        super().connect()
        self.sockets.append(self.sock)


class _TLSConnection(_Connection, http.client.HTTPSConnection):
    pass


def read_answer(response: Any, url: str, *path: str) -> dict[str, Any]:
    """The JSON answer, which holds a list at `path` (e.g. predictions). Before (round 10), a server that
    is not gru serve (another service on the port, a proxy's page) got 'Expecting value: line 1 column 1
    (char 0)' or a KeyError traceback."""
    body = response.read()
    try:
        answer = found = json.loads(body)
        for key in path:
            found = found[key]
    except (ValueError, KeyError, TypeError):
        found = None
    if not isinstance(found, list):
        raise ValueError(f"{url} answered {response.status} with {body[:80]!r}, not gru serve's JSON (no "
                         f"{'.'.join(path)}): is --url the HTTP port of `gru serve` (GRU_PORT, default "
                         "8000)?")
    return answer


def split_requests(sequences: Sequence[Any], max_sequences: int, max_bytes: int, binary: bool
                   ) -> list[list[Any]]:
    """Consecutive runs of sequences whose request bodies stay within both limits."""
    if max_sequences < 1 or max_bytes < 1:
        raise ValueError("--max-sequences and --max-bytes must be at least 1")
    empty = 0 if binary else len('{"sequences": []}')
    chunks: list[list[Any]] = []
    current: list[Any] = []
    size, longest = empty, 0
    for i, seq in enumerate(sequences):
        # JSON: the sequence's text and ", "; binary: float32 values, every sequence padded to the longest
        one = 4 * np.asarray(seq, dtype=np.float32).size if binary else len(json.dumps(seq)) + 2
        grown = max(longest, one) * (len(current) + 1) if binary else size + one
        if current and (len(current) == max_sequences or grown > max_bytes):
            chunks.append(current)
            current, size, longest = [], empty, 0
            grown = one if binary else empty + one
        if grown > max_bytes:
            raise ValueError(f"sequence {i} alone makes a {grown}-byte request, over --max-bytes "
                             f"{max_bytes}: raise both it and the server's GRU_MAX_BODY_BYTES")
        current.append(seq)
        size, longest = grown, max(longest, one)
    return [*chunks, current]


def build_body(args: argparse.Namespace) -> tuple[dict[str, Any], list[str] | None]:
    """The request body, and the series ids of a CSV file (None otherwise)."""
    if args.values is not None:
        values = parse_values(args.values)
        features = model_features(args.url.rstrip("/"), args.model, args.timeout)
        # before: the server refused "a flat list ... shape [steps, 2]", a JSON body the user never wrote
        if len(features) > 1:
            raise ValueError(f"--values is one sequence of one feature; model {args.model!r} takes "
                             f"{len(features)} per step ({', '.join(features)}): write them as a CSV "
                             f"(series_id, step, {', '.join(features)}) and pass --file")
        return {"sequences": [values]}, None
    path = Path(args.file)
    if path.suffix.lower() == ".csv":
        features = model_features(args.url.rstrip("/"), args.model, args.timeout)
        try:
            ids, sequences = read_long_csv(path, features, args.id_column, args.time_column)
        except UnicodeDecodeError as exc:  # before (round 10): the codec's words alone, naming no file
            raise ValueError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8 (Excel: CSV "
                             "UTF-8), as training reads it") from None
        return {"sequences": sequences}, ids
    stdin = args.file == "-"  # read as a file is: before (round 10), its JSON error alone ("Expecting ...")
    try:
        return json.loads(sys.stdin.read() if stdin else path.read_text()), None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # Parquet, NPZ: before, "'utf-8' codec can't
        # decode byte 0xc0 in position 74" alone
        raise ValueError(f"{'stdin' if stdin else path}: not JSON ({exc}); give a .csv file in the training "
                         'layout or JSON {"sequences": [...]} (a Parquet file as CSV: '
                         "pd.read_parquet(path).to_csv(new_path, index=False))") from None


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
            timeout: float = TIMEOUT_S) -> dict[str, Any]:
    """POST sequences to a model's predict operation and return the answer (urllib's HTTPError on an
    error status: its body is the JSON error; TimeoutError if the whole answer took over `timeout` s)."""
    if binary:
        body, headers = encode_binary(sequences)
    else:
        body, headers = json.dumps({"sequences": sequences}).encode(), {"Content-Type": "application/json"}
    request = urllib.request.Request(f"{url.rstrip('/')}/models/{model}/predict", data=body, headers=headers,
                                     method="POST")
    return fetch(request, url, timeout, "predictions")


def run(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/")
    try:
        body, ids = build_body(args)
        if not isinstance(body, dict) or not isinstance(body.get("sequences"), list):
            raise ValueError('the input must be {"sequences": [...]}')
        answer: dict[str, Any] = {}
        sent = 0  # sequences in the requests before this one
        for chunk in split_requests(body["sequences"], args.max_sequences, args.max_bytes, args.binary):
            try:
                part = predict(url, args.model, chunk, args.binary, args.timeout)
            except urllib.error.HTTPError as exc:
                raise ValueError(explain_http_error(exc, url, args.model, sent, ids)) from None
            sent += len(chunk)
            answer = answer or part
            if part is not answer:
                answer["predictions"] += part["predictions"]
    except urllib.error.HTTPError as exc:  # the model's inputs (GET /models/NAME), asked for a CSV file
        raise ValueError(explain_http_error(exc, url, args.model)) from None
    except urllib.error.URLError as exc:
        raise ValueError(explain_unreachable(exc.reason, url, args.timeout)) from None
    except (ConnectionError, TimeoutError) as exc:  # the server closed or stalled mid-request
        raise ValueError(explain_unreachable(exc, url, args.timeout)) from None
    except http.client.HTTPException as exc:  # before (round 10): a traceback, e.g. for gru serve's gRPC port
        raise ValueError(f"{url} did not answer in HTTP/1.1 ({type(exc).__name__}: {str(exc)[:20]!r}...): is "
                         "--url the HTTP port of `gru serve` (GRU_PORT, default 8000)? Its gRPC port speaks "
                         "HTTP/2 only") from None
    if ids is not None:  # say which series each answer belongs to
        for series_id, prediction in zip(ids, answer.get("predictions", []), strict=False):
            prediction["series_id"] = series_id
    try:
        print(json.dumps(answer, indent=2), flush=True)
    except BrokenPipeError:  # the reader left (`| head`, a jq that failed): stop quietly, as Unix tools do.
        # Before: "gru predict: error: [Errno 32] Broken pipe", exit 2, for an answer that was fine.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush finds no pipe
    return 0


def explain_http_error(exc: urllib.error.HTTPError, url: str, model: str, sent: int = 0,
                       ids: list[str] | None = None) -> str:
    """One line from the server's JSON error (native or v2 form) and what to change. `sent`: the
    sequences of the requests before this one; `ids`: the file's series ids, so that a refused sequence
    is named as the file names it (before: "sequences[1]" of the third request, for series 'short')."""
    try:
        error = json.loads(exc.read())["error"]
    except (ValueError, KeyError, TypeError):
        error = {}
    if isinstance(error, str):
        error = {"message": error}
    code, message = error.get("code", ""), error.get("message") or exc.reason
    field = str(error.get("field") or "")
    index = re.fullmatch(r"sequences\[(\d+)\]", field)
    if index:  # the index in the whole input, and the file's series id
        at = sent + int(index[1])
        message, field = str(message).replace(field, f"sequences[{at}]"), f"sequences[{at}]"
        if ids is not None and at < len(ids):
            field += f", series {ids[at]!r}"
    where = f" ({field})" if field else ""
    fix = {
        "model_not_found": "choose one of them with --model NAME",
        "body_too_large": "the server's GRU_MAX_BODY_BYTES is below --max-bytes: pass a smaller --max-bytes",
        "invalid_input": f"see GET {url}/models/{model} for the inputs it takes",
        "queue_full": "the server is overloaded: retry later, or send fewer sequences at once",
        "unauthorized": "this server needs a bearer token",
    }.get(code, "")
    if exc.code == 413 and not code:
        fix = "pass a smaller --max-bytes or --max-sequences"
    elif not error:  # not gru serve's JSON error: before (round 10), e.g. "HTTP 501: Unsupported method"
        fix = "is --url the HTTP port of `gru serve` (GRU_PORT, default 8000)?"
    return f"HTTP {exc.code}{' ' + code if code else ''}{where}: {message}" + (f"; {fix}" if fix else "")


def explain_unreachable(reason: object, url: str, timeout: float = TIMEOUT_S) -> str:
    if isinstance(reason, TimeoutError):  # silent, or trickling (before round 11: waited as long as it did)
        return (f"{url} did not answer in {timeout:g} s (the whole answer, --timeout): is the server "
                "overloaded, or a proxy stalling? Retry, or pass a larger --timeout")
    if isinstance(reason, ConnectionRefusedError):
        return (f"cannot reach {url}: connection refused; is the server running? Start one with "
                "`gru serve` (or pass --url)")
    if isinstance(reason, BrokenPipeError | ConnectionResetError):
        return (f"{url} closed the connection mid-request ({reason}): the request was probably over its "
                "GRU_MAX_BODY_BYTES; pass a smaller --max-bytes")
    return f"cannot reach {url}: {reason}"
