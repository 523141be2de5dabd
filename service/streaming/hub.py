"""What streaming needs besides the scheduler, built once per app: the token codec (stateless streams)
and the session store (server-held streams)."""

from __future__ import annotations

import logging
import secrets

from service.settings import Settings
from service.streaming.sessions import SessionStore
from service.streaming.tokens import StateCodec

log = logging.getLogger("gru_serve.streaming")


class StreamingHub:
    def __init__(self, settings: Settings):
        secret = settings.state_secret.get_secret_value().encode() if settings.state_secret else b""
        if not secret:
            log.warning("GRU_STATE_SECRET is not set: streaming state tokens are signed with a random "
                        "key and stop working when this process restarts")
            secret = secrets.token_bytes(32)
        self.codec = StateCodec(secret)
        self.sessions = SessionStore(settings.max_sessions, settings.session_idle_seconds)
