"""The running hub's upkeep, driven by the pipeline's sweep: the admins' redelivery requests
(looked at every sweep), the Suivi's text indexes brought up to date (`store/textindex.py`)
and the daily retention run (`mailbox/retention.py`).

At most one round runs at a time, as a task of its own, so that a long seal or a first purge
of years never delays the sweep's retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import datetime

import structlog

from bdi.hub import Hub, utcnow
from bdi.mailbox.names import Names
from bdi.mailbox.retention import RetentionPolicy, apply_retention
from bdi.mailbox.stored import StoredInbox
from bdi.pipeline.faults import describe
from bdi.pipeline.redeliver import Redeliveries
from bdi.pipeline.stream import streaming
from bdi.store import textindex
from bdi.store.journal import Journal

log = structlog.get_logger("bdi.pipeline")
RETENTION_FIRST_S = 600.0  # after the start: a hub restarting in a loop does not purge in one
RETENTION_EVERY_S = 24 * 3600.0
INDEX_DEFERRED_S = 30.0  # the text indexes wait for big uploads at most this long


def retention_policy(hub: Hub) -> RetentionPolicy:
    settings = hub.settings
    return RetentionPolicy.under(
        settings.data, settings.inbox_retention_days, settings.history_years
    )


class Upkeep:
    def __init__(self, hub: Hub, journal: Journal, names: Names, stored: StoredInbox) -> None:
        self.hub, self.stored, self.journal = hub, stored, journal
        self.marked = False  # the store's text indexes follow their tables by a mark
        self.indexed_at = time.monotonic()
        self.redeliveries = Redeliveries(hub, journal, names)
        self.clock: Callable[[], datetime] = utcnow  # the retention's `now` (tests move it)
        self.next_retention = time.monotonic() + RETENTION_FIRST_S
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """At start-up, before the SFTP port opens: finish the redeliveries a crash left
        planned (a recipient could otherwise delete such a file, then get it again)."""
        await asyncio.to_thread(self.redeliveries.run)
        self.marked = await self.journal.run(textindex.marked)

    def tick(self) -> None:
        """From the sweep: start a round unless the last one is still running."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._round())

    async def _round(self) -> None:
        try:
            await asyncio.to_thread(self.redeliveries.run)
        except Exception as exc:  # the database may be busy: next time
            log.warning("redelivery.requests_unread", error=describe(exc))
        await self.index_text()
        if time.monotonic() >= self.next_retention:
            self.next_retention = time.monotonic() + RETENTION_EVERY_S
            await self.retention()

    async def index_text(self) -> None:
        """Index the Suivi's new rows, a batch per transaction (other work joins the journal
        between two), while no big upload is under way (its rows would queue behind); once
        they were last up to date INDEX_DEFERRED_S ago, whatever is under way, so that big
        uploads one after the other do not leave the searches more and more to scan. The
        searches are exact meanwhile: they read the rows past the marks by a scan."""
        if not self.marked:
            return
        overdue = time.monotonic() - self.indexed_at >= INDEX_DEFERRED_S
        if streaming() and not overdue:
            return
        total = 0
        while True:
            try:
                done = await self.journal.run(textindex.catch_up)
            except Exception as exc:  # the database may be busy: next time
                log.warning("textindex.not_caught_up", error=describe(exc))
                return
            total += done
            if not done:
                self.indexed_at = time.monotonic()
                break
            if streaming() and not overdue:
                break
        if total:
            log.debug("textindex.caught_up", rows=total)

    async def retention(self) -> None:
        try:
            await apply_retention(self.hub.store, self.hub.mailboxes, retention_policy(self.hub),
                                  self.clock(), remove=self.stored.remove)  # fmt: skip
        except Exception as exc:  # tried again tomorrow; the hub goes on
            log.error("retention.failed", exc_info=exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
