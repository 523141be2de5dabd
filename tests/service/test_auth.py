"""Bearer-token rules and the start-up announcement of who can reach the service."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from service.api.app import announce_security
from service.api.auth import Authenticator, is_loopback
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
    with pytest.raises(ValueError, match="cannot read token file"):
        auth(api_tokens_file=tmp_path / "missing")


@pytest.mark.parametrize("host, loopback", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                            ("0.0.0.0", False), ("10.1.2.3", False)])
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_start_up_says_who_can_reach_the_service(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gru_serve"):
        announce_security(Settings(host="0.0.0.0"), auth())
        announce_security(Settings(), auth())
    warning, info = caplog.records
    assert warning.levelno == logging.WARNING and "SECURITY" in warning.message
    assert "0.0.0.0" in warning.message
    assert info.levelno == logging.INFO and "loopback 127.0.0.1:8000 only" in info.message
