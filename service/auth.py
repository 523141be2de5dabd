"""Optional bearer-token auth. Tokens come from GRU_API_TOKENS / GRU_ADMIN_TOKENS (comma-separated) or
GRU_API_TOKENS_FILE / GRU_ADMIN_TOKENS_FILE (one per line) and are compared in constant time.

- No token configured at all: everything is open (the service binds to loopback by default).
- API tokens configured: inference and metadata need one (an admin token also works).
- Admin endpoints (/v2/repository/*) need an admin token whenever any token is configured.
- Health and /metrics stay open unless GRU_OPEN_HEALTH / GRU_OPEN_METRICS are false.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from service.settings import Settings

HEALTH_PATHS = frozenset({"/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready"})
ADMIN_PREFIX = "/v2/repository"
# The route groups the start-up line describes, each with a path of the group that access() is asked about.
ROUTE_GROUPS = {"inference and metadata (/models/*, /v2/models/*, /v2)": "/models/m/predict",
                "admin (/v2/repository/*)": f"{ADMIN_PREFIX}/index", "health": "/health/ready",
                "/metrics": "/metrics"}


class Access(Enum):
    OPEN = "open"
    API = "api"
    ADMIN = "admin"


@dataclass(frozen=True)
class Denial:
    status: int  # 401: missing or unknown token; 403: a valid token without admin rights
    message: str


def read_tokens(inline: str, path: Path | None, setting: str) -> tuple[bytes, ...]:
    """The tokens of `setting` (GRU_API_TOKENS: comma-separated) and `setting`_FILE (one per line). A
    setting given without a token is refused: the server would be open while its operator meant it closed."""
    tokens = [t.strip() for t in inline.split(",")]
    if inline.strip() and not any(tokens):
        raise ValueError(f"{setting} holds no token (comma-separated); give one, or unset it")
    if path is not None:
        try:
            lines = [line.strip() for line in path.read_text().splitlines()]
        except OSError as exc:
            raise ValueError(f"cannot read token file {path} ({setting}_FILE): {exc.strerror}") from exc
        if not any(line and not line.startswith("#") for line in lines):
            raise ValueError(f"token file {path} ({setting}_FILE) holds no token (one per line, # for a "
                             "comment); add one, or unset it")
        tokens += lines
    return tuple(t.encode() for t in tokens if t and not t.startswith("#"))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Authenticator:
    def __init__(self, settings: Settings):
        self.api_tokens = read_tokens(settings.api_tokens, settings.api_tokens_file, "GRU_API_TOKENS")
        self.admin_tokens = read_tokens(settings.admin_tokens, settings.admin_tokens_file, "GRU_ADMIN_TOKENS")
        self.open_health, self.open_metrics = settings.open_health, settings.open_metrics

    @property
    def enabled(self) -> bool:
        return bool(self.api_tokens or self.admin_tokens)

    def access(self, path: str) -> Access:
        if path.startswith(ADMIN_PREFIX):
            return Access.ADMIN
        if (path in HEALTH_PATHS and self.open_health) or (path == "/metrics" and self.open_metrics):
            return Access.OPEN
        return Access.API if self.api_tokens else Access.OPEN

    def rule(self, path: str) -> str:
        """Who may call `path`, in words: 'open', what token it needs, or 'closed'."""
        needed = self.access(path) if self.enabled else Access.OPEN
        if needed is Access.OPEN:
            return "open"
        if needed is Access.API:
            return f"bearer token ({len(self.api_tokens)} API, {len(self.admin_tokens)} admin)"
        if self.admin_tokens:
            return f"admin token ({len(self.admin_tokens)})"
        return "closed (no admin token is configured: GRU_ADMIN_TOKENS)"

    def check(self, path: str, authorization: str | None) -> Denial | None:
        needed = self.access(path)
        if needed is Access.OPEN or not self.enabled:
            return None
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return Denial(401, "this endpoint needs 'Authorization: Bearer <token>'")
        presented = token.strip().encode()
        is_admin = _matches(presented, self.admin_tokens)
        if needed is Access.ADMIN:
            if is_admin:
                return None
            if _matches(presented, self.api_tokens):
                return Denial(403, "this is an admin endpoint; the token given is not an admin token")
            return Denial(401, "the bearer token is not valid")
        if is_admin or _matches(presented, self.api_tokens):
            return None
        return Denial(401, "the bearer token is not valid")


def _matches(presented: bytes, tokens: tuple[bytes, ...]) -> bool:
    """Constant time per token, and every token is compared (no early exit that would time the list)."""
    found = False
    for token in tokens:
        found |= hmac.compare_digest(presented, token)
    return found
