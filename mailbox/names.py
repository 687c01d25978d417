"""Inbox names (HUB.md, "Names in the inbox"): the name an output gets in its recipient's
inbox, `_2`, `_3`, … inserted when the upload's name is taken. A name is taken while the
store holds it (`InboxName`: a file kept in the store, or placed in the inbox folder and not
yet removed by its owner), while it is promised here to an output whose plan is not yet
committed, or while it is a file of the inbox folder."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from sqlalchemy import Connection

from bdi.mailbox.storage import Mailboxes
from bdi.mailbox.stored import StoredInbox
from bdi.store.inbox import held_among, is_held
from bdi.store.jobs import OutputRef


class Names:
    """Inbox names promised to outputs whose plan is not yet committed, in this process;
    the store knows the others (those of other nodes too, once committed: a plan holding a
    name another node took meanwhile fails on the key, and is made again)."""

    def __init__(
        self, mailboxes: Mailboxes, stored: StoredInbox, reserved: dict[str, set[str]]
    ) -> None:
        self.mailboxes, self.stored, self.reserved = mailboxes, stored, reserved
        self._lock = threading.Lock()  # jobs run in several threads

    def take(self, participant: str, name: str) -> str:
        with self._lock:
            promised = self.reserved.setdefault(participant, set())

            def taken(candidate: str) -> bool:
                return candidate in promised or self.stored.holds(participant, candidate)

            chosen = self.mailboxes.unique_name(participant, name, taken)
            promised.add(chosen)
            return chosen

    def choose_stored(self, conn: Connection, participant: str, wanted: Sequence[str]) -> list[str]:
        """Free names for a batch of outputs kept in the store (the `.log` files of a
        streamed upload, which may be a hundred thousand), chosen inside the transaction
        whose rows then hold them: none is kept in memory. The store is asked once for
        the whole batch, the inbox folder listed once (under the lock no file enters it but
        under a promised name); the batches before this one, in the same transaction,
        hold their names already."""
        with self._lock:
            files = self.mailboxes.inbox_files(participant)
            promised = self.reserved.get(participant, set())
            held, asked = held_among(conn, participant, wanted), set(wanted)
            chosen: list[str] = []
            given: set[str] = set()
            taken = _taken_in(conn, participant, promised, held, asked, given)
            for name in wanted:
                free = self.mailboxes.unique_name(participant, name, taken, files)
                chosen.append(free)
                given.add(free)
            return chosen

    def release(self, outputs: Sequence[OutputRef]) -> None:
        with self._lock:
            for output in outputs:
                self.reserved.get(output.participant_id, set()).discard(output.name)


def _taken_in(
    conn: Connection, participant: str, promised: set[str], held: set[str], asked: set[str],
    given: set[str],
) -> Callable[[str], bool]:  # fmt: skip
    """Taken for `choose_stored`: promised, given in this batch, or held (known for the
    names asked at once, the store asked again for a suffixed one)."""

    def taken(candidate: str) -> bool:
        if candidate in promised or candidate in given or candidate in held:
            return True
        return candidate not in asked and is_held(conn, participant, candidate)

    return taken
