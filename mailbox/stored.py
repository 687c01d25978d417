"""The part of the inboxes kept in the store: small deliveries and `.log` files (`InboxFile`),
and the names every inbox holds (`InboxName`: those files', and the placed files' until
their owner removes them).

The store is the only truth about names, on either engine: a node keeps none in memory
(several nodes share the store; one upload may keep 240 000 `.log` names in it). A name a
job has chosen but not yet recorded is kept taken by the pipeline's promise (`Names`).
"""

from __future__ import annotations

from functools import partial

from sqlalchemy import Engine

from bdi.store.inbox import (
    StoredEntry,
    is_held,
    release_name,
    remove_file,
)
from bdi.store.journal import Journal
from bdi.store.repo import Store


class StoredInbox:
    def __init__(self, store: Store, journal: Journal, readers: Engine) -> None:
        self.store, self.journal, self.readers = store, journal, readers

    def holds(self, participant: str, name: str) -> bool:
        """Whether the store holds `name` (in a worker thread: a read beside the journal,
        never waiting for its commits)."""
        with self.readers.connect() as conn:
            return is_held(conn, participant, name)

    async def released(self, participant: str, name: str) -> None:
        """A file of the inbox folder removed by its owner: its name is free again."""
        await self.journal.run(partial(release_name, participant=participant, name=name))

    async def entries(self, participant: str) -> list[StoredEntry]:
        return await self.store.inbox_files(participant)

    async def entry(self, participant: str, name: str) -> StoredEntry | None:
        found = await self.store.inbox_files(participant, name)
        return found[0] if found else None

    async def read(self, participant: str, name: str) -> bytes | None:
        return await self.store.inbox_data(participant, name)

    async def remove(self, participant: str, name: str) -> bool:
        """Whether there was such a file (it is gone, and its name free, durably, when this
        returns True)."""
        removed = await self.journal.run(partial(remove_file, participant=participant, name=name))
        return bool(removed)
