"""Service settings from environment variables with the GRU_ prefix (e.g. GRU_MODEL_REPOSITORY)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

# Values never quoted back in an error: they hold secrets.
SECRET_FIELDS = frozenset({"api_tokens", "admin_tokens", "state_secret"})
# A batch waits this long at most for more requests: a longer delay held every batch under load for it (an
# hour looked hung) and one past threading's TIMEOUT_MAX killed the model's inference thread.
MAX_QUEUE_DELAY_MS = 1000.0
MIN_POLL_INTERVAL_S = 0.1
MIN_SECRET_CHARS = 16
# Counts and seconds fit 32 bits, as in Triton's model configuration (gRPC ModelConfig's max_batch_size is
# an int32: GRU_MAX_SEQUENCES_PER_REQUEST=5e9 made it INTERNAL) and in gRPC's options.
INT32_MAX = 2**31 - 1


class BatchConfig(BaseModel):
    """Dynamic batching of one model (service/batching.py)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_batch_size: int = Field(64, ge=1)
    max_queue_delay_ms: float = Field(0.0, ge=0, le=MAX_QUEUE_DELAY_MS)
    max_queue_size: int = Field(2048, ge=1, le=INT32_MAX)
    max_queue_wait_ms: float = Field(500.0, ge=0)


class Settings(BaseSettings):
    # populate_by_name: Settings(tracing_protocol=...) as well as its environment aliases
    # allow_inf_nan: an infinite timeout overflowed on its way to uvicorn and gRPC (a traceback)
    model_config = SettingsConfigDict(env_prefix="GRU_", extra="ignore", populate_by_name=True,
                                      allow_inf_nan=False)

    model_repository: Path = Field(Path("models"), description="folder of <name>/<version>/ bundles")
    execution_provider: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="cuda: use CUDA, fall back to CPU with a warning; auto: CUDA when present"
    )
    # Each loaded version starts its own pool: 4,096 threads took minutes to start, start-up seemed hung.
    intra_op_threads: int = Field(1, ge=0, le=256, description="onnxruntime threads per session (0: ORT "
                                  "default; at most 256)")
    allow_spinning: bool = Field(False, description="onnxruntime pool threads spin while waiting")
    graph_optimization: Literal["basic", "extended", "all"] = Field("all", description="onnxruntime graph "
                                                                    "optimisation level")
    # HTTP limits (service/api/limits.py in ASGI, service/api/transport.py in the HTTP server).
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="larger request bodies get 413 "
                                "(compressed bodies: decoded size too)")
    body_timeout_s: float = Field(10.0, gt=0, description="a body slower than this gets 408 (a unary gRPC "
                                  "call's message: DEADLINE_EXCEEDED)")
    max_header_bytes: int = Field(16 * 1024, ge=1024, description="request line + headers; more gets 431")
    max_header_count: int = Field(100, ge=8, description="header fields per request; more get 431")
    # At least 1 s: 0.0001 closed every new connection before its first request (HTTP: no answer at all;
    # gRPC: GOAWAY "connection idle" to every call), and nothing said why.
    header_timeout_s: float = Field(10.0, ge=1, description="a request whose headers are not complete "
                                    "this long after it began (or after its connection opened) is closed")
    keep_alive_timeout_s: float = Field(5.0, ge=1, description="an idle keep-alive connection (a new one "
                                        "too) is closed after this long")
    max_connections: int = Field(2048, ge=1, description="open connections per worker process; more are "
                                 "answered 503 too_many_connections and closed (logged, rate-limited)")
    max_sequences_per_request: int = Field(1024, gt=0, le=INT32_MAX, description="more in one request are "
                                           "refused (422, v2: 400); the v2 model config's max_batch_size")
    # Dynamic batching (service/batching.py), per model and worker process; defaults chosen by bench/.
    max_batch_size: int = Field(64, ge=1, description="sequences per onnxruntime run")
    max_queue_delay_ms: float = Field(0.0, ge=0, le=MAX_QUEUE_DELAY_MS, description="extra wait to fill a "
                                      "batch under load (at most 1 s); above 0, a lone request never runs on "
                                      "the event loop")
    max_queue_size: int = Field(2048, ge=1, le=INT32_MAX, description="sequences waiting or running; more "
                                "get 503")
    # 500 ms, not seconds: an admitted request holds its connection while it waits, so an open-loop burst
    # against a 2 s queue needed thousands of connections and met the connection cap (bench/overload.py).
    max_queue_wait_ms: float = Field(500.0, ge=0, description="refuse (503) a request that would wait "
                                     "longer than this behind the queue, at the model's measured rate; "
                                     "0: no limit")
    model_batching: dict[str, dict[str, float]] = Field(
        default_factory=dict, description='per-model overrides, JSON: {"mid": {"max_batch_size": 32}}')
    # gRPC streams (service/grpc/): HTTP/2 multiplexes calls, so GRU_MAX_CONNECTIONS bounds the calls in
    # flight over gRPC, and these keep one client's ModelStreamInfer streams from holding all of them.
    grpc_stream_idle_s: float = Field(60.0, gt=0, description="a ModelStreamInfer stream without a request "
                                      "for this long is closed (DEADLINE_EXCEEDED, code body_timeout)")
    grpc_max_streams_per_connection: int = Field(100, ge=1, description="concurrent calls on one gRPC "
                                                 "connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); "
                                                 "more wait in the client")
    grpc_max_streams_per_client: int = Field(256, ge=1, description="open ModelStreamInfer streams from "
                                             "one client address, over all its connections, and apart "
                                             "its unary calls open (until their answer is read); more "
                                             "are refused (RESOURCE_EXHAUSTED, code too_many_connections)")
    host: str = Field("127.0.0.1", description="address to listen on; beyond loopback, set tokens")
    port: int = Field(8000, ge=1, le=65535, description="HTTP port (REST, v2)")
    grpc_port: int = Field(0, ge=0, le=65535, description="serve the Open Inference Protocol over gRPC on "
                           "this port too (0: off; the image sets 8001, Triton's gRPC port)")
    workers: int = Field(1, ge=0, description="uvicorn worker processes; 0: one per CPU core")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="least severe level "
                                                                     "logged")
    log_format: Literal["json", "text"] = Field("json", description="json: one JSON object per line")
    access_log: bool = Field(True, description="one log line per request (~30 us each)")
    # OpenTelemetry (service/tracing.py); the standard OTEL_* variables set the rest (sampler, service name).
    tracing: bool = Field(False, description="export a trace of each request over OTLP (needs the tracing "
                          "extra); off: tracing costs nothing")
    tracing_endpoint: str = Field("", description="OTLP endpoint (grpc: http://host:4317; http/protobuf: "
                                  "http://host:4318/v1/traces); empty: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "
                                  "OTEL_EXPORTER_OTLP_ENDPOINT or the exporter's localhost default")
    tracing_protocol: Literal["grpc", "http/protobuf"] = Field(
        "grpc", description="OTLP transport", validation_alias=AliasChoices(
            "GRU_TRACING_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"))
    # Model repository: versions and hot reload.
    version_policy: str = Field(
        "latest:1", description="which versions to serve: 'latest:N', 'all' or 'specific:1,3'; a model's "
        "own models/<name>/serving.json ({\"version_policy\": ...}) overrides it")
    poll_interval_s: float = Field(5.0, ge=0, description="rescan the repository every N s (0: never; else "
                                   "at least 0.1)")
    # Auth: comma-separated bearer tokens, or files with one token per line.
    api_tokens: str = Field("", repr=False, description="tokens for inference and metadata endpoints")
    api_tokens_file: Path | None = Field(None, description="a file of API tokens, one per line")
    admin_tokens: str = Field("", repr=False, description="tokens for /v2/repository/* (load, unload)")
    admin_tokens_file: Path | None = Field(None, description="a file of admin tokens, one per line")
    open_health: bool = Field(True, description="health endpoints need no token")
    open_metrics: bool = Field(True, description="/metrics needs no token")
    shutdown_timeout_s: float = Field(
        30.0, gt=0, description="on SIGTERM, wait this long for in-flight requests before closing")

    state_secret: SecretStr | None = Field(
        None, description="HMAC key for streaming state tokens; unset: a random one per start (tokens "
        "then die with the process; `gru serve` shares one among its workers)")
    max_sessions: int = Field(10_000, gt=0, description="live server-held streaming sequences; past it "
                              "the least recently used is evicted")
    session_idle_seconds: float = Field(300.0, gt=0, le=INT32_MAX, description="a streaming sequence "
                                        "without a chunk for this long expires")

    @field_validator("model_repository", "host", "api_tokens_file", "admin_tokens_file", "state_secret",
                     mode="before")
    @classmethod
    def not_empty(cls, value: Any) -> Any:
        # An empty value read as a path is the working directory ('.'); as a host, every interface.
        if value == "":
            raise ValueError("must not be empty")
        return value

    @field_validator("state_secret", mode="before")
    @classmethod
    def long_secret(cls, value: Any) -> Any:
        if isinstance(value, str) and 0 < len(value) < MIN_SECRET_CHARS:  # a few bytes are guessed at once
            raise ValueError(f"is {len(value)} characters; give at least {MIN_SECRET_CHARS} (e.g. `openssl "
                             "rand -hex 32`): with a short key anyone can forge streaming state tokens")
        return value

    @field_validator("poll_interval_s")
    @classmethod
    def pause_between_polls(cls, value: float) -> float:
        # 0.0001 kept a core busy rescanning an idle repository
        if 0 < value < MIN_POLL_INTERVAL_S:
            raise ValueError(f"0 turns polling off; otherwise at least {MIN_POLL_INTERVAL_S} s")
        return value

    @model_validator(mode="after")
    def consistent(self) -> Settings:
        if self.grpc_port == self.port:
            raise ValueError(f"cannot listen on port {self.port} twice: GRU_GRPC_PORT and GRU_PORT are both "
                             f"{self.port}; give gRPC a port of its own, or 0 to turn it off")
        tokens = self.api_tokens or self.admin_tokens or self.api_tokens_file or self.admin_tokens_file
        closed = [name for name, is_open in (("GRU_OPEN_HEALTH", self.open_health),
                                             ("GRU_OPEN_METRICS", self.open_metrics)) if not is_open]
        if closed and not tokens:  # without a token every route is open: the setting would be ignored
            raise ValueError(f"{' and '.join(closed)}=false closes routes to callers without a token, but no "
                             "token is set: set GRU_API_TOKENS or GRU_ADMIN_TOKENS (or *_FILE), or unset it")
        self.batch_configs()  # GRU_MODEL_BATCHING's overrides, checked at start-up
        return self

    def batch_configs(self) -> tuple[BatchConfig, dict[str, BatchConfig]]:
        """The default batching config and the per-model ones (overrides on top of the defaults)."""
        defaults = BatchConfig(max_batch_size=self.max_batch_size, max_queue_delay_ms=self.max_queue_delay_ms,
                               max_queue_size=self.max_queue_size, max_queue_wait_ms=self.max_queue_wait_ms)
        overrides = {}
        for name, values in self.model_batching.items():
            try:
                overrides[name] = BatchConfig.model_validate({**defaults.model_dump(), **values})
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"GRU_MODEL_BATCHING, model {name!r}: {problems}") from None
        return defaults, overrides


def load(flags: Mapping[str, str] | None = None) -> Settings:
    """The settings, or a ValueError of one line naming each variable that is wrong (and the `gru serve`
    flag that set it, from `flags`: variable -> flag) and the fix, instead of pydantic's report."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ValueError("; ".join(explain(error, flags or {}) for error in exc.errors())) from None
    except SettingsError as exc:  # a value that is not JSON (GRU_MODEL_BATCHING)
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"GRU_{field.group(1).upper()}" if field else "a GRU_* variable"
        raise ValueError(f"{name} is not valid JSON ({exc.__cause__}); see docs/guides/limits.md") from None


def explain(error: Any, flags: Mapping[str, str]) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a check of several settings: its message names them
        return message
    field, *within = map(str, error["loc"])  # within: the keys of a JSON value (GRU_MODEL_BATCHING)
    name = field if field.isupper() else f"GRU_{field.upper()}"  # an alias is the variable itself
    field = name.removeprefix("GRU_").lower()
    value = "" if field in SECRET_FIELDS else f"={error['input']!r}"
    given = name + "".join(f"[{key!r}]" for key in within) + value + (f" (from {flags[name]})"
                                                                     if name in flags else "")
    info = Settings.model_fields.get(field)
    default = info.get_default(call_default_factory=True) if info else None
    fix = f"unset it for the default ({default})" if default not in (None, "", {}) else "unset it"
    return f"{given}: {message}; correct it or {fix}"

