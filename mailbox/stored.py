"""The part of the inboxes kept in the store: small deliveries and `.log` files (`InboxFile`).

The names they hold are known here, for the pipeline to choose free names without a query;
the store is the truth (loaded at start-up), and every change goes through this object:
the pipeline adds a name once its job's plan is committed (the many `.log` files of a
streamed upload as their names are chosen, taken away again if its plan fails), the
owner's removal takes it away once the row is deleted. Until then the pipeline's own
reservation, or the name still listed here, keeps it taken: never a name given twice.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from functools import partial

from bdi.store.inbox import StoredEntry, names, remove_file
from bdi.store.journal import Journal
from bdi.store.repo import Store


class StoredInbox:
    def __init__(self, store: Store, journal: Journal) -> None:
        self.store, self.journal = store, journal
        self._names: dict[str, set[str]] = {}
        self._lock = threading.Lock()  # jobs add names from worker threads

    async def load(self) -> None:
        found = await self.journal.run(names)
        with self._lock:
            self._names = found

    def has(self, participant: str, name: str) -> bool:
        with self._lock:
            return name in self._names.get(participant, ())

    def added(self, participant: str, name: str) -> None:
        with self._lock:
            self._names.setdefault(participant, set()).add(name)

    def forget(self, participant: str, names: Iterable[str]) -> None:
        """Names added for a plan that was not committed after all."""
        with self._lock:
            held = self._names.get(participant, set())
            for name in names:
                held.discard(name)

    async def entries(self, participant: str) -> list[StoredEntry]:
        return await self.store.inbox_files(participant)

    async def entry(self, participant: str, name: str) -> StoredEntry | None:
        if not self.has(participant, name):
            return None
        found = await self.store.inbox_files(participant, name)
        return found[0] if found else None

    async def read(self, participant: str, name: str) -> bytes | None:
        if not self.has(participant, name):
            return None
        return await self.store.inbox_data(participant, name)

    async def remove(self, participant: str, name: str) -> bool:
        """Whether there was such a file (it is gone, durably, when this returns True)."""
        if not self.has(participant, name):
            return False
        removed = await self.journal.run(partial(remove_file, participant=participant, name=name))
        if removed:
            with self._lock:
                self._names.get(participant, set()).discard(name)
        return bool(removed)
