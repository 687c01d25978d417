"""Inbox names (HUB.md, "Names in the inbox"): the name an output gets in its recipient's
inbox, `_2`, `_3`, … inserted when the upload's name is taken. A name is taken while it is
a file of the inbox folder, a file kept in the store, or promised to an output not yet placed."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from bdi.mailbox.storage import Mailboxes
from bdi.mailbox.stored import StoredInbox
from bdi.store.jobs import OutputRef


class Names:
    """Inbox names promised to outputs not yet placed; this process is the only one placing."""

    def __init__(
        self, mailboxes: Mailboxes, stored: StoredInbox, reserved: dict[str, set[str]]
    ) -> None:
        self.mailboxes, self.stored, self.reserved = mailboxes, stored, reserved
        self._lock = threading.Lock()  # jobs run in several threads

    def take(self, participant: str, name: str) -> str:
        with self._lock:
            chosen = self._free(participant, name)
            self.reserved.setdefault(participant, set()).add(chosen)
            return chosen

    def take_stored(self, participant: str, name: str) -> str:
        """A free name for an output that its job's plan keeps in the store (a `.log` of
        a streamed upload's many), held from now on as the store's: such a job may have a
        hundred thousand, and a promise of each on top of the store's own name cost memory.
        If the plan is not committed, `forget_stored` frees them."""
        with self._lock:
            chosen = self._free(participant, name)
            self.stored.added(participant, chosen)
            return chosen

    def _free(self, participant: str, name: str) -> str:
        """The first name not promised here, not stored, not held by another node, not a
        file of the inbox folder (under the lock)."""
        promised = self.reserved.get(participant, set())

        def taken(candidate: str) -> bool:
            return (
                candidate in promised
                or self.stored.has(participant, candidate)
                or self.stored.held_elsewhere(participant, candidate)
            )

        return self.mailboxes.unique_name(participant, name, taken)

    def forget_stored(self, participant: str, names: Iterable[str]) -> None:
        with self._lock:
            self.stored.forget(participant, names)

    def release(self, outputs: Sequence[OutputRef]) -> None:
        with self._lock:
            for output in outputs:
                self.reserved.get(output.participant_id, set()).discard(output.name)
