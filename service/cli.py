"""`gru serve`: run the REST service with uvicorn. Flags override GRU_* environment variables."""

from __future__ import annotations

import argparse
import errno
import logging
import logging.config
import math
import os
import secrets
import shutil
import signal
import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.settings import Settings


# The settings `gru serve` takes as flags too: a flag overrides its variable.
FLAGS = {"GRU_MODEL_REPOSITORY": "--models", "GRU_HOST": "--host", "GRU_PORT": "--port",
         "GRU_GRPC_PORT": "--grpc-port", "GRU_WORKERS": "--workers", "GRU_EXECUTION_PROVIDER": "--provider"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # --repository too: gru export, import and pull name the same folder so (a newcomer's `gru serve
    # --repository models` was "unrecognized arguments")
    parser.add_argument("--models", "--repository", dest="models",
                        help="model repository folder (GRU_MODEL_REPOSITORY, default: models)")
    parser.add_argument("--host", help="bind address (GRU_HOST, default: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (GRU_PORT, default: 8000)")
    parser.add_argument("--grpc-port", type=int,
                        help="also serve the Open Inference Protocol over gRPC on this port "
                        "(GRU_GRPC_PORT, default: 0, off)")
    parser.add_argument("--workers", type=int,
                        help="worker processes, 0: one per CPU core (GRU_WORKERS, default: 1)")
    parser.add_argument("--provider", choices=["cpu", "cuda", "auto"],
                        help="execution provider (GRU_EXECUTION_PROVIDER, default: cpu)")


def run(args: argparse.Namespace) -> int:
    # grpc's own C core logs, in its own format, one ERROR line per call for a client's bad grpc-timeout
    # or unknown grpc-encoding (~2,300 lines a second from one client without a token); the server's log
    # is one JSON object a line. Read before grpc is imported; GRPC_VERBOSITY=ERROR shows them.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    import tempfile

    import uvicorn

    from service import settings as service_settings
    from service.api.transport import fit_file_limit
    from service.logs import logging_config

    given = {name: (flag, getattr(args, flag.removeprefix("--").replace("-", "_")))
             for name, flag in FLAGS.items()}
    # Worker processes build their own app from the environment, so flags travel through it.
    os.environ.update({name: str(value) for name, (_, value) in given.items() if value is not None})
    # Workers must share the key that signs streaming state tokens, or a token from one is refused by
    # another. Without GRU_STATE_SECRET tokens last as long as this process (see README).
    os.environ.setdefault("GRU_STATE_SECRET", secrets.token_hex(32))
    settings = service_settings.load({name: flag for name, (flag, value) in given.items()
                                      if value is not None})
    if not settings.model_repository.is_dir():  # before uvicorn, which would print a traceback
        raise FileNotFoundError(f"model repository {settings.model_repository} is not a folder "
                                "(--models or GRU_MODEL_REPOSITORY)")
    check_app_settings(settings)
    # uvicorn binds after start-up (one worker) and logs "startup complete" first; gRPC workers share the
    # port (SO_REUSEPORT) with whoever else holds it: so both are checked here, before anything starts.
    check_port_free(settings.host, settings.port, "GRU_PORT or --port")
    if settings.grpc_port:
        check_port_free(settings.host, settings.grpc_port, "GRU_GRPC_PORT or --grpc-port (0: gRPC off)")
    log_config = logging_config(settings.log_level, settings.log_format)
    logging.config.dictConfig(log_config)
    # The connection cap must fit the open-files limit, or accept() fails with nothing answered.
    os.environ["GRU_MAX_CONNECTIONS"] = str(fit_file_limit(settings.max_connections))
    metrics_dir = None
    workers = settings.workers or len(os.sched_getaffinity(0))  # 0: one worker per core
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker writes its samples here; /metrics merges them (service/metrics.py).
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gru-metrics-")
    # SIGTERM: uvicorn stops accepting, lets in-flight requests finish (at most shutdown_timeout_s) and
    # runs the lifespan shutdown. Then it re-raises the signal under the handler it found: ours does
    # nothing, so a shutdown that went as planned exits 0, not "killed by SIGTERM".
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    uvicorn.run("service.api.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=workers, **uvicorn_options(settings, log_config))
    if metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def check_app_settings(settings: Settings) -> None:
    """ValueError (one line) for what each worker's create_app refuses: with GRU_WORKERS > 1 a worker
    that fails at start-up is restarted by uvicorn for ever, each time with a traceback."""
    from service.auth import Authenticator
    from service.repository import VersionPolicy

    try:
        VersionPolicy.parse(settings.version_policy)
    except ValueError as exc:
        raise ValueError(f"GRU_VERSION_POLICY: {exc}") from None
    Authenticator(settings)  # reads the token files


def check_port_free(host: str, port: int, setting: str) -> None:
    """OSError (one `gru serve: error:` line) when `port` cannot be bound, e.g. another server holds it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is free
        try:
            probe.bind((host, port))
        except OSError as exc:
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            fix = f"choose another port with {setting}"
            if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:  # the host is wrong
                fix = ("give GRU_HOST or --host an address of this machine (127.0.0.1: this machine only; "
                       "0.0.0.0: every interface)")
            raise OSError(f"cannot listen on {where}: {exc.strerror}; {fix}") from None


def uvicorn_options(settings: Settings, log_config: dict[str, Any]) -> dict[str, Any]:
    """How `gru serve` runs uvicorn (the bench's HTTP floor, bench/baselines/bare_app.py, runs the same)."""
    from service.api.transport import PROTOCOL

    return {
        "log_level": settings.log_level, "access_log": False, "log_config": log_config,
        "timeout_graceful_shutdown": math.ceil(settings.shutdown_timeout_s),
        # No Server header (one header less per answer, nothing advertised) and no X-Forwarded-* rewriting
        # (nothing here reads the client address): ~2 us less per request, measured on the bare app.
        "server_header": False, "proxy_headers": False,
        # The HTTP limits only a server can enforce (service/api/transport.py), and idle keep-alive closes.
        "http": PROTOCOL, "timeout_keep_alive": settings.keep_alive_timeout_s,
        # No WebSocket endpoints: `Upgrade: websocket` is served as HTTP/1.1, as `Upgrade: h2c` is. With
        # uvicorn's default ("auto", websockets installed) it was handed to a WebSocket protocol that
        # answered an empty text/plain 403 (no request id, no access line, no metrics) on every route,
        # health included, and logged two lines with the client's address per request.
        "ws": "none",
    }
