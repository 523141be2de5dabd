"""`gru serve`: run the REST service with uvicorn. Flags override GRU_* environment variables."""

from __future__ import annotations

import argparse
import logging
import os
import secrets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", help="model repository folder (GRU_MODEL_REPOSITORY, default: models)")
    parser.add_argument("--host", help="bind address (GRU_HOST, default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (GRU_PORT, default: 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (GRU_WORKERS, default: 1)")
    parser.add_argument("--provider", choices=["cpu", "cuda", "auto"],
                        help="execution provider (GRU_EXECUTION_PROVIDER, default: cpu)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from service.settings import Settings

    flags = {"GRU_MODEL_REPOSITORY": args.models, "GRU_HOST": args.host, "GRU_PORT": args.port,
             "GRU_WORKERS": args.workers, "GRU_EXECUTION_PROVIDER": args.provider}
    # Worker processes build their own app from the environment, so flags travel through it.
    os.environ.update({k: str(v) for k, v in flags.items() if v is not None})
    # Workers must share the key that signs streaming state tokens, or a token from one is refused by
    # another. Without GRU_STATE_SECRET tokens last as long as this process (see README).
    os.environ.setdefault("GRU_STATE_SECRET", secrets.token_hex(32))
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        "service.api.app:create_app", factory=True, host=settings.host, port=settings.port,
        workers=settings.workers, log_level=settings.log_level, access_log=False,
    )
    return 0
