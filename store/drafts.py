"""A big upload's flow rows stored while it is still being read, under draft movements.

Stored after the plan, the 84 000 rows of a 256 MiB file took 1.4 s after everything else
(6.5-9 s for a gigabyte): the job was over only then. A movement is only known once the
upload is read and signed (the plan), so the rows are stored beforehand under a *draft*: an
output of kind `draft` (a negative seq: `jobs.draft_seq`) and a movement of no sender nor
recipient, which no participant's Suivi shows. The job numbers its recipients; a draft is
found by its number, so that a write run again (its group failed) finds or makes it anew.
The plan adopts a recipient's draft (its rows keep their movement id: `jobs.save_plan`) and
removes the others; a job run again (after a crash, or taken over by another node) first
removes those of its previous run (`jobs.clear_drafts`).

Each write is fenced: a job no longer this node's, or already planned, writes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import Connection, delete

from bdi.store import bulk
from bdi.store.compiled import insert_row
from bdi.store.jobs import (
    DRAFT,
    MOVEMENT,
    OCCURRENCE,
    OUTPUT,
    Occurrence,
    draft_seq,
    hold_job,
    job_drafts,
)


def add_draft_rows(
    conn: Connection, job_id: int, numbers: Mapping[str, int], batch: Sequence[Occurrence],
    at: datetime,
) -> None:  # fmt: skip
    """Rows of flows read so far, under their recipients' drafts (`numbers`: recipient ->
    its draft's number), made if missing."""
    hold_job(conn, job_id)
    found = job_drafts(conn, job_id)
    movements: dict[str, int] = {}
    for recipient in {recipient for recipient, _, _ in batch}:
        seq = draft_seq(numbers[recipient])
        draft = found.get(seq)
        movements[recipient] = draft[1] if draft else _open(conn, job_id, seq, at)
    bulk.add_occurrences(conn, movements, batch)


def _open(conn: Connection, job_id: int, seq: int, at: datetime) -> int:
    output = {"job_id": job_id, "seq": seq, "kind": DRAFT, "participant_id": "", "name": "",
              "ranges": "", "text": "", "delivered_at": None}  # fmt: skip
    output_id = insert_row(conn, OUTPUT, output)
    movement = {"job_id": job_id, "output_id": output_id, "created_at": at, "sender_id": "",
                "recipient_id": "", "file_name": "", "file_type": "", "size": 0, "sha256": "",
                "content_path": "", "delivered": False}  # fmt: skip
    return insert_row(conn, MOVEMENT, movement)


def drop_draft_rows(conn: Connection, job_id: int, number: int, first_seq: int) -> None:
    """The rows of a section refused after some of them were stored (a draft's last ones)."""
    draft = job_drafts(conn, job_id).get(draft_seq(number))
    if draft is not None:
        conn.execute(
            delete(OCCURRENCE).where(
                OCCURRENCE.c.movement_id == draft[1], OCCURRENCE.c.seq >= first_seq
            )
        )
