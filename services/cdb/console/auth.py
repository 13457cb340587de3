"""One owner: the password check, signed session cookies, CSRF tokens and the login limit.

A session is a cookie signed with the server's key (itsdangerous, timestamped): a random
session id and a fingerprint of the password it was opened with, so a new password ends
every session. The CSRF token of a session is an HMAC of its id under the same key: a
form or a script sends it back with every state change, which another site cannot read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from itsdangerous import BadSignature, URLSafeTimedSerializer

__all__ = ["LoginLimiter", "Session", "SessionCodec", "password_matches"]

SESSION_SALT = "cdb-console-session"


def password_matches(given: str, expected: str) -> bool:
    """Constant-time comparison; an unset password matches nothing."""
    if not expected:
        return False
    return hmac.compare_digest(
        hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )


@dataclass(frozen=True)
class Session:
    session_id: str
    csrf_token: str


class SessionCodec:
    """Issues and checks session cookies and the CSRF token that goes with each."""

    def __init__(self, secret: str, max_age_s: int) -> None:
        self._key = secret.encode()
        self._serializer = URLSafeTimedSerializer(secret, salt=SESSION_SALT)
        self.max_age_s = max_age_s
        self._ended: dict[str, float] = {}  # logged-out session ids until they expire

    def _fingerprint(self, password: str) -> str:
        return hmac.new(self._key, b"password:" + password.encode(), "sha256").hexdigest()[:32]

    def _csrf(self, session_id: str) -> str:
        return hmac.new(self._key, b"csrf:" + session_id.encode(), "sha256").hexdigest()

    def issue(self, password: str) -> tuple[str, Session]:
        """A new session for the owner: (cookie value, session)."""
        session_id = secrets.token_urlsafe(24)
        cookie = self._serializer.dumps({"sid": session_id, "pw": self._fingerprint(password)})
        return cookie, Session(session_id, self._csrf(session_id))

    def check(self, cookie: str | None, password: str) -> Session | None:
        """The session a cookie carries, or None (forged, expired, ended, or opened with
        another password)."""
        if not cookie or not password:
            return None
        try:
            data = self._serializer.loads(cookie, max_age=self.max_age_s)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        session_id, fingerprint = data.get("sid"), data.get("pw")
        if not isinstance(session_id, str) or not isinstance(fingerprint, str):
            return None
        if not hmac.compare_digest(fingerprint, self._fingerprint(password)):
            return None
        if session_id in self._ended:
            return None
        return Session(session_id, self._csrf(session_id))

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), session.csrf_token)

    def end(self, session: Session, now: float | None = None) -> None:
        """Log out: the cookie is refused from now on, even if a copy survives."""
        now = time.time() if now is None else now
        self._ended = {sid: t for sid, t in self._ended.items() if t > now}
        self._ended[session.session_id] = now + self.max_age_s


@dataclass
class _Client:
    failures: deque[float] = field(default_factory=deque)
    strikes: int = 0
    blocked_until: float = 0.0


class LoginLimiter:
    """At most ``per_minute`` failed logins a minute per client; the next attempt, right
    password or not, waits out a block that doubles with each repeat (up to ``max_s``)."""

    MAX_CLIENTS = 10_000

    def __init__(self, per_minute: int, max_s: float) -> None:
        self.per_minute = per_minute
        self.max_s = max_s
        self._clients: dict[str, _Client] = {}

    def retry_after(self, client: str, now: float) -> float:
        """Seconds this client must wait before its next attempt (0: it may try)."""
        state = self._clients.get(client)
        return max(0.0, state.blocked_until - now) if state else 0.0

    def failed(self, client: str, now: float) -> None:
        if client not in self._clients and len(self._clients) >= self.MAX_CLIENTS:
            self._forget_idle(now)
        state = self._clients.setdefault(client, _Client())
        state.failures.append(now)
        while state.failures and state.failures[0] <= now - 60.0:
            state.failures.popleft()
        if len(state.failures) >= self.per_minute:
            state.strikes += 1
            state.blocked_until = now + min(60.0 * 2 ** (state.strikes - 1), self.max_s)
            state.failures.clear()

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)

    def _forget_idle(self, now: float) -> None:
        self._clients = {
            name: state
            for name, state in self._clients.items()
            if state.blocked_until > now or (state.failures and state.failures[-1] > now - 60)
        }
