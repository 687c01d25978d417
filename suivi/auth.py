"""Sessions, CSRF tokens, password checks and login throttling of the Suivi (OPTIFLUX.md §8.1,
HUB.md "Limits that protect the market").

A logged-in session lives in the store (`WebSession`): the cookie holds a random token and
the table its SHA-256, so that a logout, a disabled participant or a new password ends the
session at once. Before login a visitor only needs a CSRF token for the login form: that
anonymous session is a signed cookie, and costs the store nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Literal, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from bdi.admin.passwords import hash_password, verify_password
from bdi.store.repo import Store

COOKIE = "bdi_suivi"
CSRF_FIELD = "csrf"


@dataclass(frozen=True, slots=True)
class Session:
    """Who (None before login), with which credentials, the session's CSRF token, and for a
    logged-in session the token its cookie holds."""

    user: str | None
    version: int
    csrf: str
    issued: float
    token: str | None = None

    @classmethod
    def anonymous(cls, now: float) -> Session:
        return cls(None, 0, secrets.token_urlsafe(24), now)

    @classmethod
    def logged_in(cls, user: str, version: int, now: float) -> Session:
        """A fresh token and CSRF token at login: nothing survives from before."""
        return cls(user, version, secrets.token_urlsafe(24), now, secrets.token_urlsafe(32))


def session_id(token: str) -> str:
    """The key of a session in the store: a copy of the table gives no cookie."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def cookie_session(signer: Signer, cookie: str | None, now: float) -> Session:
    """The anonymous session a cookie carries (its CSRF token), or a new one."""
    return signer.loads(cookie, now) or Session.anonymous(now)


def set_session_cookie(
    response: Response, name: str, value: str, request: Request, max_age: float,
    secure: bool, samesite: Literal["lax", "strict"],
) -> Response:  # fmt: skip
    """The session cookie, for the mount the request came through, never readable by script."""
    response.set_cookie(
        name, value, max_age=int(max_age), path=request.scope.get("root_path") or "/",
        secure=secure, httponly=True, samesite=samesite,
    )  # fmt: skip
    return response


def is_session_token(cookie: str) -> bool:
    """A logged-in cookie is a bare token; an anonymous one is signed (`body.mac`)."""
    return "." not in cookie and 32 <= len(cookie) <= 64


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs and checks anonymous session cookies; one older than `max_age` seconds is void."""

    secret: bytes
    max_age: float

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self.secret, body.encode("ascii"), hashlib.sha256).digest())

    def dumps(self, session: Session) -> str:
        payload = {"c": session.csrf, "t": session.issued}
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
            session = Session(None, 0, str(data["c"]), float(data["t"]))
        except (ValueError, KeyError, TypeError):
            return None
        return session if 0 <= now - session.issued <= self.max_age else None


def csrf_ok(session: Session, submitted: object) -> bool:
    return isinstance(submitted, str) and hmac.compare_digest(
        submitted.encode(), session.csrf.encode()
    )


# --- passwords ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checked:
    """A password checked: the credentials version when it was right, and whether the id
    names an active participant (an unknown id weighs more for the defender)."""

    version: int | None
    known: bool


@cache
def _decoy_hash() -> str:
    return hash_password(secrets.token_urlsafe(18))


async def check_password(store: Store, user: str, password: str) -> Checked:
    """An unknown or disabled id costs the same hash check as a known one, so that the time
    of the answer does not tell which ids exist."""
    row = await store.participant(user) if user else None
    usable = row is not None and row.active and bool(row.password_hash)
    stored = row.password_hash if usable and row is not None else _decoy_hash()
    ok = await asyncio.to_thread(verify_password, stored, password)
    version = row.credentials_version if ok and usable and row is not None else None
    return Checked(version, usable)


# --- throttling ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """Failures on one EDI id from one address lock that address out of that id for a while;
    failures on one id from anywhere only slow its answers down, so that a stranger cannot
    lock a participant out (HUB.md).

    After `free_failures` failures on an id (any address, within `lock_seconds` of each
    other) each answer on it waits `delay_step` seconds more, at most `max_delay`; at
    `max_failures` from one address, that address is refused the id for `lock_seconds`,
    whatever password it offers."""

    free_failures: int = 3
    delay_step: float = 0.5
    max_delay: float = 3.0
    max_failures: int = 10
    lock_seconds: float = 15 * 60
    tracked_ids: int = 10_000  # memory bound against made-up identifiers and addresses


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0

    def live(self, now: float, quiet_s: float) -> int:
        """The failures that still count: none after a lock served or a quiet spell (the
        next failure starts again from one, see `Lockout._count`)."""
        if self.locked_until > now:
            return self.count
        return 0 if self.locked_until or now - self.last > quiet_s else self.count

    def falls_at(self, quiet_s: float) -> float:
        return self.locked_until or self.last + quiet_s


class SharedCounts(Protocol):
    """The same counts on the other nodes of one database (`bdi.shared.Tally`)."""

    def other(self, key: str) -> int: ...

    def set(self, key: str, count: int, falls_at: float | None = None) -> None: ...


Pair = tuple[str, str]  # (EDI id, source address)
K = TypeVar("K", str, Pair)


@dataclass
class Lockout:
    """Failure counts per (id, address) and per id, in memory; shared by the Suivi's login
    and `/api/uploads`. With several nodes on one database (`share`), the other live nodes'
    counts add to this node's (as last read, two seconds old at most): N nodes do not give
    a guesser N times the tries. A success forgets this node's failures only."""

    policy: LockoutPolicy = field(default_factory=LockoutPolicy)
    clock: Callable[[], float] = time.monotonic
    _pairs: dict[Pair, _Failures] = field(default_factory=dict)
    _ids: dict[str, _Failures] = field(default_factory=dict)
    _shared_pairs: SharedCounts | None = None
    _shared_ids: SharedCounts | None = None

    def share(self, pairs: SharedCounts, ids: SharedCounts) -> None:
        """Count with the other nodes: `pairs` keyed by `pair_key`, `ids` by the id; each
        asks `recount_pair` / `recount_id` when a count is due to fall."""
        self._shared_pairs, self._shared_ids = pairs, ids

    def locked(self, user: str, address: str) -> bool:
        pair, now = (user.upper(), address), self.clock()
        entry = self._pairs.get(pair)
        if entry is not None and entry.locked_until > now:
            return True
        if self._shared_pairs is None:
            return False
        here = entry.live(now, self.policy.lock_seconds) if entry is not None else 0
        return here + self._shared_pairs.other(pair_key(pair)) >= self.policy.max_failures

    def delay(self, user: str) -> float:
        """How long to hold the answer to the next attempt on this id, from any address."""
        entry = self._ids.get(user.upper())
        count = entry.live(self.clock(), self.policy.lock_seconds) if entry is not None else 0
        if self._shared_ids is not None:
            count += self._shared_ids.other(user.upper())
        if count == 0:
            return 0.0
        extra = count - self.policy.free_failures + 1
        return min(self.policy.max_delay, max(0, extra) * self.policy.delay_step)

    def failed(self, user: str, address: str) -> None:
        now, user = self.clock(), user.upper()
        entry = self._count(self._ids, user, now)
        pair = self._count(self._pairs, (user, address), now)
        others = self._shared_pairs.other(pair_key((user, address))) if self._shared_pairs else 0
        if pair.count + others >= self.policy.max_failures:
            pair.locked_until = now + self.policy.lock_seconds
        quiet = self.policy.lock_seconds
        if self._shared_ids is not None:
            self._shared_ids.set(user, entry.count, entry.falls_at(quiet))
        if self._shared_pairs is not None:
            self._shared_pairs.set(pair_key((user, address)), pair.count, pair.falls_at(quiet))

    def succeeded(self, user: str, address: str) -> None:
        """The owner is here: its id is no longer slowed down, its address not counted."""
        user = user.upper()
        if self._pairs.pop((user, address), None) and self._shared_pairs is not None:
            self._shared_pairs.set(pair_key((user, address)), 0)
        if self._ids.pop(user, None) and self._shared_ids is not None:
            self._shared_ids.set(user, 0)

    def recount_pair(self, key: str) -> tuple[int, float | None]:
        """A pair's failures here now, and when they fall next (for its shared row)."""
        user, _, address = key.rpartition(" ")
        return self._recount(self._pairs.get((user, address)))

    def recount_id(self, key: str) -> tuple[int, float | None]:
        return self._recount(self._ids.get(key))

    def _recount(self, entry: _Failures | None) -> tuple[int, float | None]:
        count = entry.live(self.clock(), self.policy.lock_seconds) if entry is not None else 0
        return (count, entry.falls_at(self.policy.lock_seconds)) if entry and count else (0, None)

    def _count(self, table: dict[K, _Failures], key: K, now: float) -> _Failures:
        if key not in table:
            self._forget_old(table, now)
        entry = table.setdefault(key, _Failures())
        quiet = now - entry.last > self.policy.lock_seconds
        if entry.locked_until <= now and (quiet or entry.locked_until):
            entry.count, entry.locked_until = 0, 0.0  # a quiet spell, or a lock served
        entry.count += 1
        entry.last = now
        return entry

    def _forget_old(self, table: dict[K, _Failures], now: float) -> None:
        if len(table) < self.policy.tracked_ids:
            return
        stale = [k for k, v in table.items() if v.locked_until <= now]
        for key in sorted(stale, key=lambda k: table[k].last)[: len(stale) // 2 + 1]:
            del table[key]


def pair_key(pair: Pair) -> str:
    """The id and the address in one string (an address holds no space)."""
    return f"{pair[0]} {pair[1]}"
