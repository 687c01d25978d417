"""The running hub's upkeep, driven by the pipeline's sweep: the admins' redelivery requests
(looked at every sweep).

At most one round runs at a time, as a task of its own, so that a long seal never delays the
sweep's retries.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from bdi.hub import Hub
from bdi.mailbox.names import Names
from bdi.mailbox.stored import StoredInbox
from bdi.pipeline.faults import describe
from bdi.pipeline.redeliver import Redeliveries
from bdi.store.journal import Journal

log = structlog.get_logger("bdi.pipeline")


class Upkeep:
    def __init__(self, hub: Hub, journal: Journal, names: Names, stored: StoredInbox) -> None:
        self.hub, self.stored = hub, stored
        self.redeliveries = Redeliveries(hub, journal, names, stored)
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

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
