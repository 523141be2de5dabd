"""Structured logs: one JSON object per line (time, level, logger, message, and the request's id, model,
status and duration when there is one), the per-request context that carries them, and many records
written at once (the access log, service/api/middleware.py)."""

from __future__ import annotations

import itertools
import logging
import math
import os
import re
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")
CONTEXT_FIELDS = ("request_id", "trace_id", "model", "version", "status", "error", "duration_ms", "method",
                  "path")
# The OpenTelemetry trace id (32 hex digits) of the request being served, while tracing is on
# (service/tracing.py sets it around each request); unset, None.
trace_id: ContextVar[str | None] = ContextVar("gru_trace_id", default=None)


@dataclass
class RequestContext:
    """Filled by the middleware (id, method, path), the route (model, version) and an error answer (its
    code); read by every log line."""

    request_id: str
    method: str = ""
    path: str = ""
    model: str | None = None
    version: int | None = None
    trace_id: str | None = field(default_factory=trace_id.get)
    error: str | None = None


current: ContextVar[RequestContext | None] = ContextVar("gru_request", default=None)


def request_id_from(header: str | None) -> str:
    """Keep a caller's X-Request-ID when it is a sane token (it ends up in logs); otherwise make one."""
    return header if header and REQUEST_ID_PATTERN.match(header) else new_request_id()


def new_request_id() -> str:
    """32 hex digits, unique across processes and restarts: a random prefix per process and a counter.
    Not a secret (nothing trusts it); uuid4 cost 3 us per request (a system call), this 0.5 us."""
    return f"{_id_prefix}{next(_id_counter):016x}"


def _new_id_prefix() -> None:
    global _id_prefix, _id_counter
    _id_prefix, _id_counter = os.urandom(8).hex(), itertools.count()


_id_prefix, _id_counter = "", itertools.count()
_new_id_prefix()
os.register_at_fork(after_in_child=_new_id_prefix)  # a forked worker gets its own prefix


def current_request_id() -> str | None:
    context = current.get()
    return context.request_id if context else None


def note_model(name: str, version: int) -> None:
    context = current.get()
    if context is not None:
        context.model, context.version = name, version


def note_error(code: str) -> None:
    context = current.get()
    if context is not None:
        context.error = code


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = current.get()
        if context is not None:
            entry.update({k: v for k, v in vars(context).items() if v not in (None, "")})
        fields = vars(record)
        entry.update({k: fields[k] for k in CONTEXT_FIELDS if k in fields})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def capture_warnings() -> None:
    """Python warnings (numpy's RuntimeWarning, deprecations) go through the logger "py.warnings", so
    they come out as JSON lines like everything else, not as raw lines on stderr."""
    logging.captureWarnings(True)


def iso_time(created: float) -> str:
    """`datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")`, the date and time of day
    worked out once per second (4 us each time, a tenth of an access log line's cost)."""
    fraction, whole = math.modf(created)  # rounded as datetime rounds it (half even, in microseconds)
    second, micros = int(whole), round(fraction * 1e6)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    cached_second, text = _second_text
    if second != cached_second:
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second_text[:] = [second, text]
    return f"{text}.{micros // 1000:03d}+00:00"


_second_text: list[Any] = [None, ""]


def handle_many(logger: logging.Logger, records: Sequence[logging.LogRecord]) -> None:
    """Hand records to the logger's handlers as `logger.handle` would, but a plain stream handler writes
    them all with one write and one flush, not one system call per line."""
    records = [r for r in records if not logger.disabled and logger.filter(r)]
    current_logger: logging.Logger | None = logger
    while current_logger is not None and records:
        for handler in current_logger.handlers:
            kept = [r for r in records if r.levelno >= handler.level and handler.filter(r)]
            if kept and type(handler) in (logging.StreamHandler, logging.FileHandler):  # not caplog's
                stream_handler: logging.StreamHandler = handler  # type: ignore[assignment]
                try:
                    text = "".join(stream_handler.format(r) + stream_handler.terminator for r in kept)
                    with stream_handler.lock:  # type: ignore[union-attr]
                        stream_handler.stream.write(text)
                        stream_handler.flush()
                except Exception:
                    stream_handler.handleError(kept[0])
            else:
                for record in kept:
                    handler.handle(record)
        current_logger = current_logger.parent if current_logger.propagate else None


def logging_config(level: str, fmt: str) -> dict[str, Any]:
    """A dictConfig for uvicorn's `log_config`: every worker process applies it at start."""
    formatter = {"()": "service.logs.JsonFormatter"} if fmt == "json" else {
        "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": level.upper()},
        "loggers": {name: {"handlers": [], "propagate": True, "level": level.upper()}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "py.warnings")},
    }
