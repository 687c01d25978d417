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

from bdi.store.inbox import (
    StoredEntry,
    held_names,
    is_held,
    names,
    release_name,
    remove_file,
)
from bdi.store.journal import Journal
from bdi.store.repo import Store


class StoredInbox:
    def __init__(self, store: Store, journal: Journal) -> None:
        self.store, self.journal = store, journal
        # several nodes may share the database (PostgreSQL): what this one has not seen
        # itself, another may have stored or promised; the store's rows are asked then
        self.shared = store.engine.dialect.name != "sqlite"
        self._held: dict[str, set[str]] = {}  # on SQLite: the names held, read at start
        self._names: dict[str, set[str]] = {}
        self._lock = threading.Lock()  # jobs add names from worker threads

    async def load(self) -> None:
        found = await self.journal.run(names)
        held = {} if self.shared else await self.journal.run(held_names)
        with self._lock:
            self._names, self._held = found, held

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

    def held_elsewhere(self, participant: str, name: str) -> bool:
        """Whether another node holds this name (in a worker thread; False on SQLite, which
        one node serves: its own memory knows every name)."""
        if not self.shared:
            with self._lock:
                return name in self._held.get(participant, ())
        return bool(self.journal.call(partial(is_held, participant=participant, name=name)))

    def mark_held(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Names a plan found held (NameTaken): never offered again by this node."""
        with self._lock:
            for participant, name in pairs:
                self._held.setdefault(participant, set()).add(name)

    async def released(self, participant: str, name: str) -> None:
        """A file of the inbox folder removed by its owner: its name is free again."""
        await self.journal.run(partial(release_name, participant=participant, name=name))
        with self._lock:
            self._held.get(participant, set()).discard(name)

    async def entries(self, participant: str) -> list[StoredEntry]:
        return await self.store.inbox_files(participant)

    def _maybe(self, participant: str, name: str) -> bool:
        """Worth asking the store: a name this node knows, or any when nodes share it."""
        return self.shared or self.has(participant, name)

    async def entry(self, participant: str, name: str) -> StoredEntry | None:
        if not self._maybe(participant, name):
            return None
        found = await self.store.inbox_files(participant, name)
        return found[0] if found else None

    async def read(self, participant: str, name: str) -> bytes | None:
        if not self._maybe(participant, name):
            return None
        return await self.store.inbox_data(participant, name)

    async def remove(self, participant: str, name: str) -> bool:
        """Whether there was such a file (it is gone, durably, when this returns True)."""
        if not self._maybe(participant, name):
            return False
        removed = await self.journal.run(partial(remove_file, participant=participant, name=name))
        if removed:
            with self._lock:
                self._names.get(participant, set()).discard(name)
                self._held.get(participant, set()).discard(name)  # freed with its row
        return bool(removed)
