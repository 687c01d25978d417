"""What a participant may keep at the hub (HUB.md, "Limits that protect the market"): its
outbox and inbox together hold at most `limit` bytes; past that, its writes fail with
« quota dépassé ». Deliveries to it are never refused: the quota bounds what it uploads and
what it leaves uncollected.

Measuring a mailbox walks its folders and reads its stored files' sizes: the figure is kept
`ttl_s` seconds and what the participant's own writes add is counted on top meanwhile.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bdi.mailbox.storage import Mailboxes
from bdi.mailbox.stored import StoredInbox


@dataclass(slots=True)
class _Measure:
    used: int
    at: float


class Quota:
    def __init__(
        self,
        limit: int,
        mailboxes: Mailboxes,
        stored: StoredInbox,
        ttl_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.mailboxes, self.stored = limit, mailboxes, stored
        self.ttl_s, self.clock = ttl_s, clock
        self._measures: dict[str, _Measure] = {}

    async def room(self, participant: str) -> int:
        """Bytes the participant may still write (≤ 0: none)."""
        measure = self._measures.get(participant)
        if measure is None or self.clock() - measure.at > self.ttl_s:
            used = await self._used(participant)
            measure = self._measures[participant] = _Measure(used, self.clock())
        return self.limit - measure.used

    def take(self, participant: str, size: int) -> bool:
        """Count `size` more bytes written by the participant, if they fit (measured by
        `room` first: an unmeasured participant's write always fits)."""
        measure = self._measures.get(participant)
        if measure is None:
            return True
        if measure.used + size > self.limit:
            return False
        measure.used += size
        return True

    def release(self, participant: str, size: int) -> None:
        """`size` bytes of the participant's are gone (a file removed, an upload discarded):
        room again at once, not only when the mailbox is measured again."""
        measure = self._measures.get(participant)
        if measure is not None:
            measure.used = max(0, measure.used - size)

    async def _used(self, participant: str) -> int:
        folders = (self.mailboxes.inbox(participant), self.mailboxes.outbox(participant))
        on_disk = await asyncio.to_thread(lambda: sum(_size(f) for f in folders))
        kept = sum(entry.size for entry in await self.stored.entries(participant))
        return on_disk + kept


def _size(folder: Path) -> int:
    total = 0
    try:
        with os.scandir(folder) as found:
            for entry in found:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
    except FileNotFoundError:
        return 0
    return total
