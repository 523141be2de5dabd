"""What the stream route needs, built once per app: the token codec, the session store and one
StepBatcher per loaded model version."""

from __future__ import annotations

import logging
import secrets

from service.runtime import ModelRuntime
from service.settings import Settings
from service.streaming.batcher import StepBatcher
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
        self.delay_s = settings.stream_batch_delay_ms / 1000
        self._batchers: dict[tuple[str, int], StepBatcher] = {}

    def batcher(self, runtime: ModelRuntime) -> StepBatcher:
        key = (runtime.manifest.name, runtime.manifest.version)
        batcher = self._batchers.get(key)
        if batcher is None or batcher.runtime is not runtime:  # first use, or the version was reloaded
            batcher = self._batchers[key] = StepBatcher(runtime, self.delay_s)
        return batcher

    def retire(self, runtime: ModelRuntime) -> None:
        """The repository's on_unload hook: forget the version's batcher (chunks in flight finish on it).
        Runs on a worker thread; a dict pop is atomic under the GIL."""
        key = (runtime.manifest.name, runtime.manifest.version)
        if (batcher := self._batchers.get(key)) is not None and batcher.runtime is runtime:
            self._batchers.pop(key, None)
