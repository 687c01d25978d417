"""Inbox names (HUB.md, "Names in the inbox"): the name an output gets in its recipient's
inbox, `_2`, `_3`, … inserted when the upload's name is taken. A name is taken while it is
a file of the inbox folder, a file kept in the store, or promised to an output not yet placed."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator, Sequence

from bdi.mailbox.storage import Mailboxes
from bdi.mailbox.stored import StoredInbox
from bdi.store.jobs import OutputRef

LISTED = 2000  # names chosen per listing of the inbox folder (and per taking of the lock)


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

    def take_stored_all(self, participant: str, names: Iterable[str]) -> Iterator[str]:
        """Free names for outputs that their job's plan keeps in the store (the `.log` files
        of a streamed upload, which may be a hundred thousand), held from now on as the
        store's: a promise of each on top of the store's own name cost memory. If the plan
        is not committed, `forget_stored` frees them. The inbox folder is listed once per
        LISTED names rather than each candidate looked for in it: under the lock no file
        enters it but under a promised name, so the listing answers as the folder would."""
        names = iter(names)
        while batch := list(itertools.islice(names, LISTED)):
            with self._lock:
                files = self.mailboxes.inbox_files(participant)
                chosen = []
                for name in batch:
                    chosen.append(free := self._free(participant, name, files))
                    self.stored.added(participant, free)  # before the next is chosen
            yield from chosen

    def _free(self, participant: str, name: str, files: set[str] | None = None) -> str:
        """The first name not promised here, not stored, not held by another node, not a
        file of the inbox folder (listed in `files`, else looked for; under the lock)."""
        promised = self.reserved.get(participant, set())

        def taken(candidate: str) -> bool:
            return (
                candidate in promised
                or self.stored.has(participant, candidate)
                or self.stored.held_elsewhere(participant, candidate)
            )

        return self.mailboxes.unique_name(participant, name, taken, files)

    def forget_stored(self, participant: str, names: Iterable[str]) -> None:
        with self._lock:
            self.stored.forget(participant, names)

    def release(self, outputs: Sequence[OutputRef]) -> None:
        with self._lock:
            for output in outputs:
                self.reserved.get(output.participant_id, set()).discard(output.name)
