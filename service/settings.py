"""Service settings from environment variables with the GRU_ prefix (e.g. GRU_MODEL_REPOSITORY)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GRU_", extra="ignore")

    model_repository: Path = Field(Path("models"), description="folder of <name>/<version>/ bundles")
    execution_provider: Literal["cpu", "cuda", "auto"] = Field(
        "cpu", description="cuda: use CUDA, fall back to CPU with a warning; auto: CUDA when present"
    )
    intra_op_threads: int = Field(1, ge=0, description="onnxruntime threads per session (0: ORT default)")
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="larger request bodies get 413")
    max_sequences_per_request: int = Field(1024, gt=0)
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=1, description="uvicorn worker processes")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    state_secret: SecretStr | None = Field(
        None, description="HMAC key for streaming state tokens; unset: a random one per start (tokens "
        "then die with the process; `gru serve` shares one among its workers)")
    max_sessions: int = Field(10_000, gt=0, description="live server-held streaming sequences; past it "
                              "the least recently used is evicted")
    session_idle_seconds: float = Field(300.0, gt=0, description="a streaming sequence without a chunk "
                                        "for this long expires")
    stream_batch_delay_ms: float = Field(2.0, ge=0, description="how long a streaming chunk waits for "
                                         "chunks of other sequences to run with")


@lru_cache
def get_settings() -> Settings:
    return Settings()
