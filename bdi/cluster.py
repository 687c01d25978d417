"""This node among others on one database (PostgreSQL): it joins, beats, takes over the
jobs of nodes that stopped beating, and leaves (docs/operations.md, "Several nodes").

On SQLite there is one node (`serve_lock`): it takes every unfinished job at its start.
A node dead on this very host (its process gone) is forgotten at once, without waiting
for its lease to run out.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

import structlog

from bdi.config import Settings
from bdi.hub import utcnow
from bdi.store import nodes
from bdi.store.jobs import JobRef, jobs_by_id
from bdi.store.journal import Journal

log = structlog.get_logger("bdi.cluster")
CLAIM_LIMIT = 200  # jobs taken over per heartbeat (the next beat takes more)
FOREVER = datetime.max.replace(tzinfo=utcnow().tzinfo)


class Cluster:
    def __init__(self, settings: Settings, journal: Journal) -> None:
        self.settings, self.journal = settings, journal
        self.node = nodes.NodeRef(settings.node, socket.gethostname(), os.getpid())
        self.alone = settings.db_url.startswith("sqlite")

    async def join(self) -> int:
        """Bind the node to the journal, record it, and claim the jobs it may run now:
        its own of a previous run, and those of no node or of a dead one."""
        now, lease = utcnow(), self.settings.node_lease_s
        await self.journal.run(partial(nodes.bind, node=self.node.id))
        await self._forget_dead_here()  # this node's previous run too, if it was killed
        await self.journal.run(partial(nodes.join, node=self.node, at=now, lease_s=lease))
        alive_since = FOREVER if self.alone else now - timedelta(seconds=lease)
        claim = partial(nodes.claim, node=self.node.id, alive_since=alive_since, own=True,
                        limit=1_000_000)  # fmt: skip
        claimed = await self.journal.run(claim)
        log.info("node.joined", node=self.node.id, host=self.node.host, pid=self.node.pid,
                 claimed=len(claimed))  # fmt: skip
        return len(claimed)

    async def run(self, submit: Callable[[JobRef], None]) -> None:
        """Beat, and hand the jobs taken over from dead nodes to `submit`, until cancelled."""
        while True:
            await asyncio.sleep(self.settings.node_beat_s)
            try:
                await self._beat(submit)
            except Exception as exc:  # the database may be away: the next beat tries again
                log.warning("node.beat_failed", error=str(exc).splitlines()[0][:200])

    async def _beat(self, submit: Callable[[JobRef], None]) -> None:
        now = utcnow()
        await self.journal.run(partial(nodes.beat, node=self.node.id, at=now))
        if self.alone:
            return
        await self._forget_dead_here()
        alive_since = now - timedelta(seconds=self.settings.node_lease_s)
        claim = partial(nodes.claim, node=self.node.id, alive_since=alive_since, own=False,
                        limit=CLAIM_LIMIT)  # fmt: skip
        ids = await self.journal.run(claim)
        if not ids:
            return
        jobs = await self.journal.run(partial(jobs_by_id, ids=ids))
        log.warning("node.took_over", node=self.node.id, jobs=len(jobs),
                    first=ids[0], last=ids[-1])  # fmt: skip
        for job in jobs:
            submit(job)

    async def _forget_dead_here(self) -> None:
        for node, host, pid, _ in await self.journal.run(nodes.nodes):
            if host == self.node.host and pid != self.node.pid and not _alive(pid):
                await self.journal.run(partial(nodes.forget, node=node))
                log.info("node.forgotten", node=node, pid=pid)

    async def leave(self) -> None:
        """A clean stop: this node's unfinished jobs are anyone's at once."""
        await self.journal.run(partial(nodes.leave, node=self.node.id))
        log.info("node.left", node=self.node.id)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
