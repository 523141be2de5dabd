"""Bearer-token rules and the start-up announcement of who can reach the service."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from service.api.app import announce_security
from service.auth import Authenticator, is_loopback
from service.settings import Settings


def auth(**settings) -> Authenticator:
    return Authenticator(Settings(**settings))


def test_no_tokens_means_open() -> None:
    open_auth = auth()
    assert not open_auth.enabled
    assert open_auth.check("/v2/repository/index", None) is None
    assert open_auth.check("/models/x/predict", None) is None


def test_api_and_admin_tokens() -> None:
    a = auth(api_tokens="api-1,api-2", admin_tokens="adm")
    assert a.check("/models/x/predict", "Bearer api-2") is None
    assert a.check("/models/x/predict", "bearer adm") is None  # scheme is case-insensitive
    assert a.check("/models/x/predict", None).status == 401
    assert a.check("/models/x/predict", "Basic api-1").status == 401
    assert a.check("/models/x/predict", "Bearer api-3").status == 401
    assert a.check("/v2/repository/models/x/load", "Bearer api-1").status == 403
    assert a.check("/v2/repository/models/x/load", "Bearer adm") is None
    assert a.check("/health/ready", None) is None and a.check("/metrics", None) is None


def test_admin_endpoints_closed_when_only_api_tokens_exist() -> None:
    a = auth(api_tokens="api-1")
    assert a.check("/v2/repository/index", "Bearer api-1").status == 403


def test_health_and_metrics_can_be_closed() -> None:
    a = auth(api_tokens="t", open_health=False, open_metrics=False)
    assert a.check("/v2/health/live", None).status == 401 and a.check("/metrics", None).status == 401
    assert a.check("/metrics", "Bearer t") is None


def test_token_file_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# comment\n\nfile-token\n")
    assert auth(api_tokens_file=path).check("/models", "Bearer file-token") is None
    with pytest.raises(ValueError, match="cannot read token file .* \\(GRU_API_TOKENS_FILE\\)"):
        auth(api_tokens_file=tmp_path / "missing")


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                            ("0.0.0.0", False), ("10.1.2.3", False)])
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def announcement(caplog: pytest.LogCaptureFixture, host: str, **tokens) -> tuple[str, list[str]]:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gru_serve"):
        announce_security(Settings(host=host, **tokens), auth(**tokens))
    info = [r.message for r in caplog.records if r.levelno == logging.INFO]
    warnings = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(info) == 1
    return info[0], warnings


INFERENCE, ADMIN = "inference and metadata (/models/*, /v2/models/*, /v2)", "admin (/v2/repository/*)"


def test_start_up_says_exactly_which_routes_are_open(caplog: pytest.LogCaptureFixture) -> None:
    line, warnings = announcement(caplog, "0.0.0.0")
    assert f"{INFERENCE}: open" in line and f"{ADMIN}: open" in line and "0.0.0.0:8000" in line
    [warning] = warnings
    assert warning.startswith("SECURITY") and INFERENCE in warning and ADMIN in warning

    line, warnings = announcement(caplog, "127.0.0.1")
    assert f"{INFERENCE}: open" in line and "loopback: only this machine" in line and not warnings

    # Only admin tokens: predict is still open. The line says so, and off loopback that is a SECURITY warning.
    line, warnings = announcement(caplog, "0.0.0.0", admin_tokens="adm")
    assert f"{INFERENCE}: open" in line and f"{ADMIN}: admin token (1)" in line
    [warning] = warnings
    assert INFERENCE in warning and ADMIN not in warning
    assert auth(admin_tokens="adm").check("/models/x/predict", None) is None  # what the line says holds

    line, warnings = announcement(caplog, "0.0.0.0", api_tokens="a,b")
    assert f"{INFERENCE}: bearer token (2 API, 0 admin)" in line and not warnings
    assert f"{ADMIN}: closed (no admin token is configured" in line
    assert auth(api_tokens="a,b").check("/v2/repository/index", "Bearer a").status == 403

    line, warnings = announcement(caplog, "10.0.0.5", api_tokens="a", admin_tokens="adm", open_metrics=False)
    assert "health: open" in line and "/metrics: bearer token (1 API, 1 admin)" in line and not warnings


def test_python_warnings_become_json_log_lines(tmp_path: Path) -> None:
    """A worker's numpy RuntimeWarning is a JSON log line, not a raw line in the one-object-per-line log."""
    script = (
        "import logging.config, numpy as np\n"
        "from service.logs import logging_config\n"
        "from service.api.app import create_app\n"
        "from service.settings import Settings\n"
        "logging.config.dictConfig(logging_config('info', 'json'))\n"
        f"create_app(Settings(model_repository={str(tmp_path)!r}))\n"
        "np.log(np.float32(-1.0))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in result.stderr.splitlines()]  # every line is JSON
    [warning] = [e for e in lines if e["logger"] == "py.warnings"]
    assert warning["level"] == "warning" and "RuntimeWarning: invalid value encountered in log" in \
        warning["message"]


def test_methods_no_route_takes_get_405_and_every_other_needs_the_token(repository: Path) -> None:
    """Over HTTP: auth runs before routing, except for methods no handler takes (then 405, not 401)."""
    from tests.helpers import Server

    server = Server(repository, GRU_ADMIN_TOKENS="adm", GRU_ACCESS_LOG="false").start()
    try:
        index = f"{server.url}/v2/repository/index"
        assert httpx.get(index).status_code == 401 and httpx.post(index).status_code == 401
        assert httpx.post(f"{server.url}/v2/repository/models/italy/unload").status_code == 401
        for method in ("TRACE", "PUT", "DELETE", "OPTIONS"):
            response = httpx.request(method, index)
            allowed = set(response.headers["allow"].split(", "))
            assert response.status_code == 405 and allowed == {"GET", "POST"}, method
        assert httpx.get(index, headers={"authorization": "Bearer adm"}).status_code == 200
        assert httpx.get(f"{server.url}/health/ready").json()["models"] == ["airline", "italy"]
    finally:
        server.stop()
