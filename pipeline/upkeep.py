"""The running hub's upkeep, driven by the pipeline's sweep: the admins' redelivery requests
(looked at every sweep) and the daily retention run (`mailbox/retention.py`).

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
from bdi.store.journal import Journal

log = structlog.get_logger("bdi.pipeline")
RETENTION_FIRST_S = 600.0  # after the start: a hub restarting in a loop does not purge in one
RETENTION_EVERY_S = 24 * 3600.0


def retention_policy(hub: Hub) -> RetentionPolicy:
    settings = hub.settings
    return RetentionPolicy.under(
        settings.data, settings.inbox_retention_days, settings.history_years
    )


class Upkeep:
    def __init__(self, hub: Hub, journal: Journal, names: Names, stored: StoredInbox) -> None:
        self.hub, self.stored = hub, stored
        self.redeliveries = Redeliveries(hub, journal, names)
        self.clock: Callable[[], datetime] = utcnow  # the retention's `now` (tests move it)
        self.next_retention = time.monotonic() + RETENTION_FIRST_S
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """At start-up, before the SFTP port opens: finish the redeliveries a crash left
        planned (a recipient could otherwise delete such a file, then get it again)."""
        await asyncio.to_thread(self.redeliveries.run)

    def tick(self) -> None:
        """From the sweep: start a round unless the last one is still running."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._round())

    async def _round(self) -> None:
        try:
            await asyncio.to_thread(self.redeliveries.run)
        except Exception as exc:  # the database may be busy: next time
            log.warning("redelivery.requests_unread", error=describe(exc))
        if time.monotonic() >= self.next_retention:
            self.next_retention = time.monotonic() + RETENTION_EVERY_S
            await self.retention()

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
