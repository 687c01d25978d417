"""The defender (SFTPGo's is the model): one score per source address, fed by failed logins on
every listener; past a threshold within the observation window the address is banned for a
while, longer for a repeat offender (HUB.md, "Limits that protect the market").

The bans live in memory, so that `is_banned` costs a dict lookup on every connection and
request, and in the store, so that a restart keeps them and `bdi admin bans lift` (another
process) reaches the running hub: `watch` reads the active bans again every `reload_s`.

With several nodes on one database (`bdi.shared`), an address's score is the sum of its score
on every live node: this node's, plus the others' as last read (about two seconds old at
most), so that an attacker spreading its guesses over N nodes is not given N times the
threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import structlog

from bdi.shared import Sharing, Tally
from bdi.store import bans
from bdi.store.models import Ban
from bdi.store.repo import Store

log = structlog.get_logger("bdi.defender")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SCORES = "score"  # the kind of the shared counts: an address's score on a node


class Event(StrEnum):
    """What adds to an address's score."""

    SSH_PASSWORD = "ssh_password"  # a wrong SSH password
    SSH_KEY = "ssh_key"  # an SSH key offered that is not the user's
    SSH_PREAUTH_DISCONNECT = "ssh_preauth_disconnect"  # a connection gone before its login
    SUIVI_LOGIN = "suivi_login"  # a wrong Suivi login
    CONSOLE_LOGIN = "console_login"  # a wrong operator login on the console (/exploitation/)
    UPLOADS_BASIC = "uploads_basic"  # wrong HTTP Basic credentials on /api/uploads
    ADMIN_BEARER = "admin_bearer"  # a wrong bearer token on /api/admin


@dataclass(frozen=True, slots=True)
class DefenderPolicy:
    """Thresholds and weights (defaults of HUB.md). A login naming no participant weighs
    `unknown_user` instead of its event's weight: guessing names is the sprayer's mark."""

    threshold: int = 15
    window_s: float = 5 * 60.0
    ban_s: float = 30 * 60.0
    ban_growth: float = 2.0  # each ban of the same address within repeat_window_s lasts this more
    max_ban_s: float = 24 * 3600.0
    repeat_window_s: float = 24 * 3600.0
    login_failure: int = 1
    preauth_disconnect: int = 1
    unknown_user: int = 2
    weights: Mapping[Event, int] = field(default_factory=dict)  # overrides, per event
    safe_addresses: tuple[str, ...] = ()  # addresses or networks never banned ("10.0.0.0/8")
    reload_s: float = 1.0
    tracked_addresses: int = 100_000  # memory bound against a spray from many addresses

    def weight(self, event: Event, unknown_user: bool = False) -> int:
        if unknown_user:
            return self.unknown_user
        if event in self.weights:
            return self.weights[event]
        if event is Event.SSH_PREAUTH_DISCONNECT:
            return self.preauth_disconnect
        return self.login_failure

    def ban_seconds(self, offences: int) -> float:
        """How long the ban of an address banned `offences` times before lasts."""
        return min(self.max_ban_s, self.ban_s * self.ban_growth**offences)

    def safe_networks(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(a, strict=False) for a in self.safe_addresses)


def _stamp(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _epoch(at: datetime) -> float:
    return bans.as_utc(at).timestamp()


class Defender:
    """Scores and bans of source addresses, shared by every listener of one hub."""

    def __init__(
        self,
        store: Store,
        policy: DefenderPolicy | None = None,
        clock: Callable[[], float] = time.time,
        sharing: Sharing | None = None,
    ) -> None:
        self.store, self.policy, self.clock = store, policy or DefenderPolicy(), clock
        self._safe = self.policy.safe_networks()
        self._events: dict[str, deque[tuple[float, int]]] = {}
        self._bans: dict[str, float] = {}  # address -> end of its ban (epoch seconds)
        self._offences: dict[str, int] = {}
        self._unsaved: set[str] = set()  # bans whose row is being written, or failed to be
        self._saved: dict[str, float] = {}  # bans written (monotonic time) since a reload began
        self._writes: set[asyncio.Task[None]] = set()
        self.on_ban: Callable[[str, datetime], None] | None = None  # e.g. the operators' alert
        self.shared: Tally | None = None  # the other nodes' scores (None: one node)
        if sharing is not None:
            self.shared = sharing.tally(SCORES, clock, self._recount)

    # --- what the listeners call ------------------------------------------------------------

    def is_banned(self, address: str) -> bool:
        """Cheap: one dict lookup (called for every connection and request)."""
        until = self._bans.get(address)
        if until is None:
            return False
        if until > self.clock():
            return True
        self._bans.pop(address, None)
        return False

    def record(self, address: str, event: Event, *, unknown_user: bool = False) -> bool:
        """A failure from `address`; True when it got the address banned."""
        if not address or self.is_banned(address) or self._is_safe(address):
            return False
        weight = self.policy.weight(event, unknown_user)
        if weight <= 0:
            return False
        now = self.clock()
        recent = self._recent(address, now)
        recent.append((now, weight))
        score = sum(w for _, w in recent)
        if self.shared is not None:
            self.shared.set(address, score, recent[0][0] + self.policy.window_s)
            score += self.shared.other(address)
        if score < self.policy.threshold:
            return False
        self._ban(address, now, score, event)
        return True

    def banned(self) -> dict[str, datetime]:
        """The addresses banned now, with the end of their ban."""
        now = self.clock()
        return {a: _stamp(u) for a, u in self._bans.items() if u > now}

    # --- life cycle ---------------------------------------------------------------------------

    async def load(self) -> None:
        """The bans in force and the recent offences, from the store (at start)."""
        now = self.clock()
        self._offences = await bans.offences(self.store, _stamp(now - self.policy.repeat_window_s))
        await self.refresh()

    async def refresh(self) -> None:
        """Read the bans in force again: a ban lifted by an admin (here or from another
        process) ends here, and the address starts again from a clean score."""
        started = time.monotonic()
        now = self.clock()
        rows = await bans.active_bans(self.store, _stamp(now))
        fresh = {r.address: _epoch(r.until) for r in rows if not self._is_safe(r.address)}
        self._saved = {a: at for a, at in self._saved.items() if at >= started}
        for address in self._unsaved | self._saved.keys():
            if address in self._bans:
                fresh.setdefault(address, self._bans[address])
        for address, until in self._bans.items():
            if address not in fresh and until > now:  # lifted, not ended
                self._forget(address)
                self._offences.pop(address, None)
        for address in fresh.keys() - self._bans.keys():  # banned by another node (or process)
            self._forget(address)
        self._bans = fresh
        self._unsaved &= fresh.keys()

    async def watch(self) -> None:
        """Refresh every `reload_s` seconds, for ever (a failed read is tried again)."""
        while True:
            await asyncio.sleep(self.policy.reload_s)
            try:
                await self.refresh()
            except Exception as exc:  # the store busy or down: the bans in memory hold
                log.error("defender.reload_failed", exc_info=exc)

    async def flush(self) -> None:
        """Wait for the bans being written."""
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    # --- inside -------------------------------------------------------------------------------

    def _is_safe(self, address: str) -> bool:
        if not self._safe:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self._safe)

    def _recent(self, address: str, now: float) -> deque[tuple[float, int]]:
        """The address's events within the window (older ones dropped)."""
        recent = self._events.get(address)
        if recent is None:
            self._bound_memory(now)
            recent = self._events[address] = deque()
        self._expire(recent, now)
        return recent

    def _expire(self, recent: deque[tuple[float, int]], now: float) -> None:
        horizon = now - self.policy.window_s
        while recent and recent[0][0] <= horizon:
            recent.popleft()

    def _recount(self, address: str) -> tuple[int, float | None]:
        """The address's score here now, and when it falls next (for the shared row)."""
        recent = self._events.get(address)
        if recent is None:
            return 0, None
        self._expire(recent, self.clock())
        if not recent:
            return 0, None
        return sum(w for _, w in recent), recent[0][0] + self.policy.window_s

    def _forget(self, address: str) -> None:
        """The address starts again from a clean score (here, and in its shared row)."""
        if self._events.pop(address, None) is not None and self.shared is not None:
            self.shared.set(address, 0)

    def _bound_memory(self, now: float) -> None:
        """Past `tracked_addresses`, forget the quiet addresses, then the oldest half."""
        if len(self._events) < self.policy.tracked_addresses:
            return
        horizon = now - self.policy.window_s
        for address in [a for a, q in self._events.items() if not q or q[-1][0] <= horizon]:
            self._forget(address)
        if len(self._events) >= self.policy.tracked_addresses:
            by_age = sorted(self._events, key=lambda a: self._events[a][-1][0])
            for address in by_age[: len(by_age) // 2 + 1]:
                self._forget(address)

    def _ban(self, address: str, now: float, score: int, event: Event) -> None:
        offences = self._offences.get(address, 0)
        seconds = self.policy.ban_seconds(offences)
        self._offences[address] = offences + 1
        self._bans[address] = now + seconds
        self._forget(address)
        log.info("defender.banned", address=address, score=score, cause=str(event),
                    seconds=seconds, offences=offences + 1,
                    until=_stamp(now + seconds).isoformat())  # fmt: skip
        if self.on_ban is not None:
            self.on_ban(address, _stamp(now + seconds))
        row = Ban(address=address, banned_at=_stamp(now), until=_stamp(now + seconds),
                  score=score, reason=str(event))  # fmt: skip
        self._unsaved.add(address)
        task = asyncio.get_running_loop().create_task(self._save(row))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _save(self, row: Ban) -> None:
        try:
            await bans.add_ban(self.store, row)
        except Exception as exc:  # the ban holds in memory (stays unsaved), for this process
            log.error("defender.save_failed", address=row.address, exc_info=exc)
            return
        self._saved[row.address] = time.monotonic()
        self._unsaved.discard(row.address)


@contextlib.asynccontextmanager
async def defender_running(
    store: Store, policy: DefenderPolicy | None = None, sharing: Sharing | None = None
) -> AsyncIterator[Defender]:
    """A defender loaded from the store and kept in step with it while the hub runs."""
    defender = Defender(store, policy, sharing=sharing)
    await defender.load()
    task = asyncio.create_task(defender.watch())
    try:
        yield defender
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await defender.flush()
