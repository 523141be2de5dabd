"""Server-held streaming sessions keyed by (model, sequence id), with Triton sequence-batcher semantics:
a chunk with `start` opens (or restarts) a sequence, later chunks continue it, `end` closes it. Idle
sessions expire; past the cap the least recently used is evicted. Ended, expired and evicted ids are
remembered (boundedly) so that their next chunk gets an error that says what happened.

All calls happen on the event loop thread; a session's lock keeps its chunks in order.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service import metrics

# (model name, sequence id): v2 and gRPC ids may be integers, never equal to strings (7 is not "7")
Key = tuple[str, str | int]
TOMBSTONES_PER_SESSION = 10  # how many gone ids are remembered, per allowed live session


@dataclass
class Session:
    version: int  # the model version the state belongs to
    graph: str  # and its graph's sha256: a re-export under the same version number is another model
    state: np.ndarray | None = None  # (S,); None before the first chunk
    steps: int = 0
    last_used: float = 0.0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class SequenceGone(Exception):
    """The sequence is not live; `reason` is 'unknown', 'ended', 'expired' or 'evicted'."""

    def __init__(self, reason: str, sequence_id: str | int, store: SessionStore):
        self.reason, self.sequence_id = reason, sequence_id
        self.idle_seconds, self.max_sessions = store.idle_seconds, store.max_sessions
        super().__init__(self.explain())

    def explain(self, start: str = '"start": true', end: str = '"end": true') -> str:
        """Why, and the fix in the words of the caller's API (the native stream's by default; v2 and
        gRPC: parameters.sequence_start)."""
        sequence_id, restart = self.sequence_id, f"send its steps again from the beginning with {start}"
        return {
            "unknown": f"sequence {sequence_id!r} is not open; begin it with {start}",
            "ended": f"sequence {sequence_id!r} has ended ({end}); {restart} to begin anew",
            "expired": f"sequence {sequence_id!r} expired after {self.idle_seconds:g} s without a chunk "
                       f"(GRU_SESSION_IDLE_SECONDS); {restart}",
            "evicted": f"sequence {sequence_id!r} was evicted: more than {self.max_sessions} sequences "
                       f"were open (GRU_MAX_SESSIONS) and it was the least recently used; {restart}",
        }[self.reason]


class SessionStore:
    def __init__(self, max_sessions: int, idle_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.max_sessions, self.idle_seconds, self._clock = max_sessions, idle_seconds, clock
        self._live: OrderedDict[Key, Session] = OrderedDict()  # least recently used first
        self._gone: OrderedDict[Key, str] = OrderedDict()
        self._per_model: Counter[str] = Counter()  # live sessions, for the gru_streaming_sessions gauge

    def __len__(self) -> int:
        return len(self._live)

    def start(self, key: Key, version: int, graph: str) -> Session:
        """Open `key` afresh (a live one restarts); evicts the least recently used past the cap."""
        self.sweep()
        if self._live.pop(key, None) is not None:
            self._count(key, -1)
        self._gone.pop(key, None)
        while len(self._live) >= self.max_sessions:
            old, _ = self._live.popitem(last=False)
            self._bury(old, "evicted")
        session = Session(version=version, graph=graph, last_used=self._clock())
        self._live[key] = session
        self._count(key, +1)
        return session

    def get(self, key: Key) -> Session:
        self.sweep()
        session = self._live.get(key)
        if session is None:
            reason = self._gone.get(key, "unknown")
            raise SequenceGone(reason, key[1], self)
        session.last_used = self._clock()
        self._live.move_to_end(key)
        return session

    def confirm(self, key: Key, session: Session) -> None:
        """Raise SequenceGone when `session` was ended, expired or evicted while a chunk of it waited for
        its lock (a chunk sent with another one's "end" must not run on: Triton refuses it too). A session
        replaced by a restart ("start") is not gone: the chunk belongs to the sequence it waited for."""
        if self._live.get(key) is not session and (reason := self._gone.get(key)) is not None:
            raise SequenceGone(reason, key[1], self)

    def end(self, key: Key, session: Session | None = None) -> None:
        """Close `key`'s live sequence (only if it is still `session`, when given)."""
        if (live := self._live.get(key)) is not None and session in (None, live):
            del self._live[key]
            self._bury(key, "ended")

    def sweep(self) -> None:
        """Expire sessions idle for longer than idle_seconds (the oldest sit first)."""
        deadline = self._clock() - self.idle_seconds
        while self._live:
            key, session = next(iter(self._live.items()))
            if session.last_used > deadline or session.lock.locked():
                break
            self._live.popitem(last=False)
            self._bury(key, "expired")

    def _count(self, key: Key, change: int) -> None:
        model = key[0]
        self._per_model[model] += change
        metrics.STREAMING_SESSIONS.labels(model).set(self._per_model[model])

    def _bury(self, key: Key, reason: str) -> None:
        """A live session leaves: remember why, for the error on its next chunk."""
        self._count(key, -1)
        self._gone[key] = reason
        self._gone.move_to_end(key)
        while len(self._gone) > TOMBSTONES_PER_SESSION * self.max_sessions:
            self._gone.popitem(last=False)

