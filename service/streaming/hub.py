"""What streaming needs besides the scheduler, built once per app: the token codec (stateless streams)
and the session store (server-held streams), and one chunk of a server-held sequence (the native stream
operation's and the Open Inference Protocol's sequence_id requests, service/inference.py)."""

from __future__ import annotations

import logging
import secrets

import numpy as np

from service.batching import Scheduler
from service.errors import SequenceGoneError, SequenceNotOpen
from service.settings import Settings
from service.streaming.sessions import SequenceGone, SessionStore
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

    async def held_chunk(self, scheduler: Scheduler, sequence_id: str, start: bool, end: bool,
                         steps: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """One chunk (T, F) of a server-held sequence through the model version's scheduler: the output
        for the whole prefix, the new state (S,) and the steps seen so far."""
        m = scheduler.runtime.manifest
        key = (m.name, sequence_id)
        if start:
            session = self.sessions.start(key, m.version, m.onnx.sha256)
        else:
            try:
                session = self.sessions.get(key)
            except SequenceGone as exc:
                if exc.reason == "unknown":
                    raise SequenceNotOpen(str(exc), "sequence_id") from exc
                raise SequenceGoneError(exc.reason, str(exc)) from exc
            if (session.version, session.graph) != (m.version, m.onnx.sha256):
                self.sessions.end(key)
                raise SequenceGoneError("ended", f"model {m.name!r} changed (now version {m.version}, graph "
                                        f"{m.onnx.sha256[:12]}) while sequence {sequence_id!r} was open; "
                                        "start it again")
        async with session.lock:  # chunks of one sequence run in arrival order
            carried = None if session.state is None else session.state[None]
            result = await scheduler.run([steps], carried)
            session.state = result.states[0]
            session.steps += len(steps)
        if end:
            self.sessions.end(key)
        return result.outputs[0], session.state, session.steps
