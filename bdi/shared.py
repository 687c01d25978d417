"""Limits that hold across the nodes of one database (issue 17; HUB.md, "Limits that protect
the market"): the defender's score per address, the failed passwords per user and address,
the connections waiting for their login per address, the sessions per participant, the failed
web logins per id and address and per id (`bdi.web.shared_lockout`).

Each node counts its own in memory, as a lone node does, and decides with its own count plus
the other live nodes', as last read: a login costs no round trip to the database. Every
`every_s` (1 s) a node writes the counts that changed (one transaction) and reads the others'
sums (one query): a count is seen by the other nodes within about two seconds. A node stopping
cleanly deletes its rows; a killed node's stop counting when its lease runs out (or at once
when a node on its host finds its process gone).

On SQLite there is one node: nothing is shared (`shared_limits` gives None), and the counters
cost what they did before.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

import structlog

from bdi.hub import utcnow
from bdi.store import limits
from bdi.store.repo import Store

log = structlog.get_logger("bdi.shared")
KEY_MAX = 200  # longer keys (made-up user names) are not shared: the column holds 200
SWEEP_EVERY = 30  # syncs between two sweeps of the rows of nodes gone
Recount = Callable[[str], tuple[int, float | None]]  # a key's count now, and when it next falls


class Tally:
    """One kind of count, per key: this node's (written when changed) and the other live
    nodes' summed (as last read). A count over a window falls by itself: `set` is told when,
    and `recount` is asked then, so that the row follows."""

    def __init__(
        self, kind: str, clock: Callable[[], float] = time.monotonic, recount: Recount | None = None
    ) -> None:
        self.kind, self.clock, self.recount = kind, clock, recount
        self.others: dict[str, int] = {}
        self._mine: dict[str, int] = {}
        self._written: dict[str, int] = {}
        self._changed: set[str] = set()
        self._due: list[tuple[float, str]] = []  # (when a count falls, key): a heap
        self._scheduled: dict[str, float] = {}

    def other(self, key: str) -> int:
        """The other live nodes' count for `key` (a dict lookup: the hot path's cost)."""
        return self.others.get(key, 0)

    def set(self, key: str, count: int, falls_at: float | None = None) -> None:
        """This node's count for `key` is `count` now; `falls_at`: when it falls by itself."""
        if len(key) > KEY_MAX:
            return
        if count > 0:
            self._mine[key] = count
        else:
            self._mine.pop(key, None)
        self._changed.add(key)
        if falls_at is not None and falls_at < self._scheduled.get(key, float("inf")):
            self._scheduled[key] = falls_at
            heapq.heappush(self._due, (falls_at, key))

    def changes(self) -> list[limits.Change]:
        """The counts to write (those that differ from the rows), taken: `written` or
        `failed` says how it went."""
        self._recount_due()
        changed, self._changed = self._changed, set()
        counts = ((key, self._mine.get(key, 0)) for key in changed)
        return [(self.kind, k, n) for k, n in counts if n != self._written.get(k, 0)]

    def written(self, changes: list[limits.Change]) -> None:
        for _, key, count in changes:
            if count > 0:
                self._written[key] = count
            else:
                self._written.pop(key, None)

    def failed(self, changes: list[limits.Change]) -> None:
        """Not written: tried again at the next sync."""
        self._changed.update(key for _, key, _ in changes)

    def _recount_due(self) -> None:
        now = self.clock()
        while self._due and self._due[0][0] <= now:
            at, key = heapq.heappop(self._due)
            if self._scheduled.get(key) != at:
                continue  # superseded by an earlier one, already done
            del self._scheduled[key]
            if self.recount is not None and key in self._mine:
                self.set(key, *self.recount(key))


class Sharing:
    """This node's tallies, kept in step with the database's rows."""

    def __init__(self, store: Store, node: str, lease_s: float, every_s: float = 1.0) -> None:
        self.store, self.node, self.lease_s, self.every_s = store, node, lease_s, every_s
        self.tallies: dict[str, Tally] = {}

    def tally(
        self, kind: str, clock: Callable[[], float] = time.monotonic, recount: Recount | None = None
    ) -> Tally:
        self.tallies[kind] = Tally(kind, clock, recount)
        return self.tallies[kind]

    async def sync(self) -> None:
        """Write this node's changed counts (one transaction), then read the other live
        nodes' (one query)."""
        changes = [(tally, tally.changes()) for tally in self.tallies.values()]
        try:
            await limits.write(self.store, self.node, [c for _, ch in changes for c in ch])
        except BaseException:
            for tally, taken in changes:
                tally.failed(taken)
            raise
        for tally, taken in changes:
            tally.written(taken)
        alive_since = utcnow() - timedelta(seconds=self.lease_s)
        summed: dict[str, dict[str, int]] = {kind: {} for kind in self.tallies}
        for kind, key, count in await limits.others(self.store, self.node, alive_since):
            if kind in summed:
                summed[kind][key] = count
        for kind, counts in summed.items():
            self.tallies[kind].others = counts

    async def run(self) -> None:
        """Sync every `every_s` until cancelled (a failed sync is tried again: the counts
        read last hold meanwhile); sweep the rows of nodes gone now and then."""
        turns = 0
        while True:
            await asyncio.sleep(self.every_s)
            turns += 1
            try:
                await self.sync()
                if turns % SWEEP_EVERY == 0:
                    await limits.sweep(self.store)
            except Exception as exc:  # the database away: the next turn tries again
                log.warning("limits.sync_failed", error=str(exc).splitlines()[0][:200])


@contextlib.asynccontextmanager
async def shared_limits(
    store: Store, node: str, lease_s: float, every_s: float = 1.0
) -> AsyncIterator[Sharing | None]:
    """The node's sharing while the hub runs (None on SQLite: one node, nothing to share).
    Its rows of a previous run are deleted at the start, and its own at a clean stop."""
    if store.engine.dialect.name == "sqlite":
        yield None
        return
    sharing = Sharing(store, node, lease_s, every_s)
    await limits.clear(store, node)
    task = asyncio.create_task(sharing.run())
    try:
        yield sharing
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        try:
            await limits.clear(store, node)
        except Exception as exc:  # its rows stop counting with its lease anyway
            log.warning("limits.clear_failed", error=str(exc).splitlines()[0][:200])
