"""Signed-in users, kept server-side: the browser only holds a random session id.

The API key never leaves the console process (not in a cookie, not on disk); the cookie is
HttpOnly, SameSite=Strict, Secure when served over HTTPS, and expires with the session. Each
session has its own anti-forgery token, which every state-changing request must carry.
Sessions live in this process's memory: a restart signs everyone out, and several replicas
need sticky sessions (docs/console.md).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from console.gateway import Caller

COOKIE = "tutti_session"


@dataclass(slots=True)
class Session:
    id: str
    key: str
    caller: Caller
    csrf_token: str
    expires_at: float
    # Flash notices for the next page (a sentence and its kind: "ok" or "error").
    notices: list[tuple[str, str]] = field(default_factory=list)

    def csrf_ok(self, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(self.csrf_token, token or "")


class Sessions:
    def __init__(self, lifetime_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._lifetime = lifetime_seconds
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    @property
    def lifetime_seconds(self) -> float:
        return self._lifetime

    def open(self, key: str, caller: Caller) -> Session:
        self._forget_expired()
        session = Session(
            id=secrets.token_urlsafe(32),
            key=key,
            caller=caller,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=self._clock() + self._lifetime,
        )
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)

    def _forget_expired(self) -> None:
        now = self._clock()
        for sid in [sid for sid, s in self._sessions.items() if s.expires_at <= now]:
            del self._sessions[sid]
