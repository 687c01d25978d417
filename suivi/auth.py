"""Sessions, CSRF tokens and login throttling of the Suivi (OPTIFLUX.md §8.1, HUB.md).

A session is a signed cookie (HMAC-SHA256 over a small JSON payload): the server keeps no
session table, and changing a participant's credentials (`credentials_version`) or
disabling it closes its open sessions at their next request. Every session, anonymous
ones included, carries a CSRF token that each POST must repeat.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

COOKIE = "bdi_suivi"
CSRF_FIELD = "csrf"


@dataclass(frozen=True, slots=True)
class Session:
    """What the cookie says: who (None before login), with which credentials, and the
    CSRF token of the session."""

    user: str | None
    version: int
    csrf: str
    issued: float

    @classmethod
    def anonymous(cls, now: float) -> Session:
        return cls(None, 0, secrets.token_urlsafe(24), now)

    def logged_in(self, user: str, version: int, now: float) -> Session:
        """A fresh session (and CSRF token) at login: nothing survives from before."""
        return replace(Session.anonymous(now), user=user, version=version)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs and checks session cookies; a cookie older than `max_age` seconds is void."""

    secret: bytes
    max_age: float

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self.secret, body.encode("ascii"), hashlib.sha256).digest())

    def dumps(self, session: Session) -> str:
        payload = {"u": session.user, "v": session.version, "c": session.csrf, "t": session.issued}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode("utf-8"))
        return f"{body}.{self._mac(body)}"

    def loads(self, cookie: str | None, now: float) -> Session | None:
        if not cookie or cookie.count(".") != 1:
            return None
        body, mac = cookie.split(".")
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            data = json.loads(_unb64(body))
            session = Session(data["u"], int(data["v"]), str(data["c"]), float(data["t"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if 0 <= now - session.issued <= self.max_age else None


def csrf_ok(session: Session, submitted: object) -> bool:
    return isinstance(submitted, str) and hmac.compare_digest(
        submitted.encode(), session.csrf.encode()
    )


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """Repeated failures on one EDI id slow the answers down, then lock the id for a while.

    After `free_failures` failures each answer waits `delay_step` seconds more (at most
    `max_delay`); at `max_failures` the id is locked for `lock_seconds`, whatever password
    is offered."""

    free_failures: int = 3
    delay_step: float = 1.0
    max_delay: float = 5.0
    max_failures: int = 10
    lock_seconds: float = 15 * 60
    tracked_ids: int = 10_000  # memory bound against made-up identifiers


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


@dataclass
class Lockout:
    """Failure counts per EDI id, in memory (one process serves the Suivi)."""

    policy: LockoutPolicy = field(default_factory=LockoutPolicy)
    clock: Callable[[], float] = time.monotonic
    _seen: dict[str, _Failures] = field(default_factory=dict)

    def locked(self, user: str) -> bool:
        entry = self._seen.get(user.upper())
        return entry is not None and entry.locked_until > self.clock()

    def delay(self, user: str) -> float:
        """How long to hold the answer to the next attempt on this id."""
        entry = self._seen.get(user.upper())
        extra = 0 if entry is None else entry.count - self.policy.free_failures + 1
        return min(self.policy.max_delay, max(0, extra) * self.policy.delay_step)

    def failed(self, user: str) -> None:
        now = self.clock()
        self._forget_old(now)
        entry = self._seen.setdefault(user.upper(), _Failures())
        if entry.locked_until <= now and now - entry.last > self.policy.lock_seconds:
            entry.count = 0  # a quiet spell as long as a lock starts the count again
        if entry.locked_until and entry.locked_until <= now:
            entry.count = 0  # so does a lock served in full
            entry.locked_until = 0.0
        entry.count += 1
        entry.last = now
        if entry.count >= self.policy.max_failures:
            entry.locked_until = now + self.policy.lock_seconds

    def succeeded(self, user: str) -> None:
        self._seen.pop(user.upper(), None)

    def _forget_old(self, now: float) -> None:
        if len(self._seen) < self.policy.tracked_ids:
            return
        stale = [k for k, v in self._seen.items() if v.locked_until <= now]
        for key in sorted(stale, key=lambda k: self._seen[k].last)[: len(stale) // 2 + 1]:
            del self._seen[key]
