"""A streamed upload's flow rows, stored while it is read (under drafts: `store.drafts`).

The job's thread hands each flow of a section that may be delivered; the rows go to the
journal ROWS_BATCH at a time, at most ROWS_IN_FLIGHT batches waiting there (memory stays
flat), while the checks read on: SQLite's work on them (most of it) runs without the
interpreter lock, on the core gpg leaves. A section ending refused takes its rows back:
those not sent yet are dropped here, those sent are deleted by the journal after them.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import Future
from datetime import datetime
from functools import partial

from bdi.store.drafts import add_draft_rows, drop_draft_rows
from bdi.store.jobs import Occurrence
from bdi.store.journal import Journal

ROWS_BATCH = 1000  # flow rows per batch stored (3 held at most: 2 000 gave +4 MB at 1 GiB)
ROWS_IN_FLIGHT = 2  # batches handed to the journal and not yet stored, at most


class DraftRows:
    """One job's rows; `numbers` (recipient -> its draft's number) goes to the plan."""

    def __init__(self, journal: Journal, job_id: int, at: datetime) -> None:
        self.journal, self.job_id, self.at = journal, job_id, at
        self.numbers: dict[str, int] = {}
        self.buffer: list[Occurrence] = []
        self.sent: list[Future[None]] = []
        self.seq: Counter[str] = Counter()  # each recipient's next row
        # the section being read: number, recipient, its first seq, its first row in the
        # buffer (0 once some were sent: `stored`)
        self.section, self.recipient, self.first, self.start = 0, "", 0, 0
        self.stored = False

    def add(self, section: int, recipient: str, row: Occurrence) -> None:
        """A flow's row (`seq` set here), in file order."""
        if section != self.section:
            self.section, self.recipient, self.stored = section, recipient, False
            self.first, self.start = self.seq[recipient], len(self.buffer)
        row[2]["seq"] = self.seq[recipient]
        self.seq[recipient] += 1
        self.buffer.append(row)
        if len(self.buffer) >= ROWS_BATCH:
            self._send()

    def refused(self, section: int) -> None:
        """The section's rows go (it had some if it was the last one given)."""
        if section != self.section:
            return
        del self.buffer[self.start :]
        if self.stored:
            work = partial(drop_draft_rows, job_id=self.job_id,
                           number=self.numbers[self.recipient], first_seq=self.first)  # fmt: skip
            self.sent.append(self.journal.submit(work))
        self.seq[self.recipient] = self.first
        self.section = 0

    def _send(self) -> None:
        for recipient, _, _ in self.buffer:
            self.numbers.setdefault(recipient, len(self.numbers))
        work = partial(add_draft_rows, job_id=self.job_id, numbers=dict(self.numbers),
                       batch=self.buffer, at=self.at)  # fmt: skip
        self.sent.append(self.journal.submit(work))
        self.buffer = []
        self.start, self.stored = 0, True
        while len(self.sent) > ROWS_IN_FLIGHT:
            self.sent.pop(0).result()

    def rest(self) -> list[Occurrence]:
        """Once the upload is read: the rows not sent, for the plan, once those sent are
        stored (their errors raised here)."""
        while self.sent:
            self.sent.pop(0).result()
        rows, self.buffer = self.buffer, []
        return rows

    def wait(self) -> None:
        """The job failed: let the writes sent end (their errors unwanted)."""
        for future in self.sent:
            future.exception()
        self.sent.clear()
