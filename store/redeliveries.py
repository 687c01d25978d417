"""Redeliveries (`bdi admin redeliver`): the request row an admin writes, from any process,
and the rows the running hub writes when it performs it.

A redelivery is a new movement of the same content, flows and recipient, under a name of its
own: its output joins the original job's (kind `redelivery`, so the sender's view of its
upload is unchanged), its flows are the original's with the comment « Renvoyé par
l'exploitation ». Like a job it is recorded in one transaction before its file is placed
(`plan`), then ended (`finish`); a small one is kept in the store's inbox by that same
transaction. Each function may run twice: it sets every value it derives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Table, insert, select, update

from bdi.store.compiled import insert_row, insert_rows
from bdi.store.inbox import add_file, hold_names
from bdi.store.models import (
    FlowOccurrence,
    Job,
    Movement,
    Output,
    Participant,
    Redelivery,
    StoredContent,
)
from bdi.store.repo import Store

T = TypeVar("T")
COMMENT = "Renvoyé par l'exploitation"
KIND = "redelivery"
SEQ_BASE = 1_000_000  # a redelivery's output seq, after its job's own outputs: + request id
REQUESTED, PLANNED, DONE, FAILED, CANCELLED = "requested", "planned", "done", "failed", "cancelled"


def _table(model: Any) -> Table:
    return cast(Table, model.__table__)


REQUEST, MOVEMENT, OUTPUT = _table(Redelivery), _table(Movement), _table(Output)
JOB, PARTICIPANT = _table(Job), _table(Participant)
CONTENT, OCCURRENCE = _table(StoredContent), _table(FlowOccurrence)


class Cancelled(Exception):
    """The request is no longer `requested` (cancelled by its admin, or done elsewhere)."""


@dataclass(frozen=True, slots=True)
class Source:
    """The movement to send again, with what sending it needs, as the store has it now."""

    movement_id: int
    job_id: int
    sender_id: str
    recipient_id: str
    file_type: str
    size: int
    sha256: str
    content_path: str  # "" when the content is kept in the store (`content`)
    delivered: bool
    upload_name: str
    job_state: str
    active: bool  # the recipient
    fingerprint: str  # the recipient's OpenPGP key, as registered now
    content: bytes | None


@dataclass(frozen=True, slots=True)
class Request:
    id: int
    movement_id: int
    recipient_id: str
    state: str
    name: str | None
    output_id: int | None
    new_movement_id: int | None


def refusal(source: Source | None, movement_id: int) -> str | None:
    """Why the movement cannot be sent again (the key is checked by who holds the keyring)."""
    if source is None:
        return f"no movement {movement_id}"
    if not source.delivered or source.job_state != "done":
        return f"movement {movement_id} is not delivered yet"
    if not source.active:
        return f"its recipient {source.recipient_id} is disabled"
    if not source.content_path and source.content is None:
        return f"the content of movement {movement_id} is no longer kept"
    return None


def source(conn: Connection, movement_id: int) -> Source | None:
    m = MOVEMENT.c
    row = conn.execute(
        select(m.id, m.job_id, m.sender_id, m.recipient_id, m.file_type, m.size, m.sha256,
               m.content_path, m.delivered, JOB.c.upload_name, JOB.c.state,
               PARTICIPANT.c.active, PARTICIPANT.c.pgp_fingerprint)
        .join(JOB, JOB.c.id == m.job_id)
        .join(PARTICIPANT, PARTICIPANT.c.id == m.recipient_id)
        .where(m.id == movement_id)
    ).first()  # fmt: skip
    if row is None:
        return None
    data = conn.execute(select(CONTENT.c.data).where(CONTENT.c.movement_id == movement_id))
    content = data.scalar_one_or_none()
    (mid, job, sender, recipient, file_type, size, sha, path, delivered, upload, state,
     active, fingerprint) = row  # fmt: skip
    return Source(mid, job, sender, recipient, file_type, size, sha, path, bool(delivered),
                  upload, state, bool(active), fingerprint,
                  None if content is None else bytes(content))  # fmt: skip


def ask(conn: Connection, movement_id: int, recipient: str, at: datetime, actor: str) -> int:
    """A new request; returns its id."""
    row = {"movement_id": movement_id, "recipient_id": recipient, "requested_at": at,
           "requested_by": actor, "state": REQUESTED}  # fmt: skip
    return int(conn.execute(insert(REQUEST).values(row).returning(REQUEST.c.id)).scalar_one())


_OPEN = select(REQUEST.c.id, REQUEST.c.movement_id, REQUEST.c.recipient_id, REQUEST.c.state,
               REQUEST.c.name, REQUEST.c.output_id, REQUEST.c.new_movement_id)  # fmt: skip


def open_requests(conn: Connection) -> list[Request]:
    """The requests to perform, planned ones first (their names are already promised)."""
    rows = conn.execute(
        _OPEN.where(REQUEST.c.state.in_((REQUESTED, PLANNED))).order_by(REQUEST.c.id)
    )
    found = [Request(*row) for row in rows]
    return [r for r in found if r.state == PLANNED] + [r for r in found if r.state == REQUESTED]


def request(conn: Connection, request_id: int) -> Redelivery | None:
    row = conn.execute(select(REQUEST).where(REQUEST.c.id == request_id)).first()
    return None if row is None else Redelivery(**row._mapping)


def plan(
    conn: Connection, req: Request, src: Source, name: str, at: datetime, sealed: bytes | None
) -> Request:
    """Record the redelivery: its output, movement, content and flows. `sealed`: the file
    itself, kept in the store's inbox by this transaction, which then ends it."""
    state = DONE if sealed is not None else PLANNED
    took = conn.execute(
        update(REQUEST).where(REQUEST.c.id == req.id, REQUEST.c.state == REQUESTED)
        .values(state=state, name=name, finished_at=at if sealed is not None else None)
    )  # fmt: skip
    if took.rowcount != 1:
        raise Cancelled(req.id)
    delivered = at if sealed is not None else None
    hold_names(conn, [(src.recipient_id, name)])
    output_id = insert_row(conn, OUTPUT, {
        "job_id": src.job_id, "seq": SEQ_BASE + req.id, "kind": KIND,
        "participant_id": src.recipient_id, "name": name, "ranges": "", "text": "",
        "delivered_at": delivered,
    })  # fmt: skip
    movement_id = insert_row(conn, MOVEMENT, {
        "job_id": src.job_id, "output_id": output_id, "created_at": at,
        "sender_id": src.sender_id, "recipient_id": src.recipient_id, "file_name": name,
        "file_type": src.file_type, "size": src.size, "sha256": src.sha256,
        "content_path": src.content_path, "delivered": sealed is not None,
    })  # fmt: skip
    if src.content is not None:
        insert_rows(conn, CONTENT, [{"movement_id": movement_id, "data": src.content}])
    _copy_flows(conn, src.movement_id, movement_id)
    if sealed is not None:
        add_file(conn, src.recipient_id, name, output_id, sealed, at)
    conn.execute(
        update(REQUEST).where(REQUEST.c.id == req.id)
        .values(output_id=output_id, new_movement_id=movement_id)
    )  # fmt: skip
    return Request(req.id, req.movement_id, req.recipient_id, state, name, output_id, movement_id)


def _copy_flows(conn: Connection, original: int, movement_id: int) -> None:
    """The original's flow occurrences, for the new movement, with the operator's comment."""
    skip = {"id", "movement_id", "comment"}
    rows = []
    for row in conn.execute(select(OCCURRENCE).where(OCCURRENCE.c.movement_id == original)):
        values = {k: v for k, v in row._mapping.items() if k not in skip}
        was = row.comment
        values["comment"] = f"{COMMENT} ({was})" if was else COMMENT
        rows.append({**values, "movement_id": movement_id})
    if rows:
        insert_rows(conn, OCCURRENCE, rows)


def finish(conn: Connection, req: Request, at: datetime) -> None:
    """The planned redelivery's file is in its inbox."""
    conn.execute(update(OUTPUT).where(OUTPUT.c.id == req.output_id).values(delivered_at=at))
    conn.execute(
        update(MOVEMENT).where(MOVEMENT.c.id == req.new_movement_id).values(delivered=True)
    )
    conn.execute(update(REQUEST).where(REQUEST.c.id == req.id).values(state=DONE, finished_at=at))


def fail(conn: Connection, request_id: int, error: str, at: datetime) -> bool:
    """A request refused before anything was recorded (False: it was no longer requested)."""
    done = conn.execute(
        update(REQUEST).where(REQUEST.c.id == request_id, REQUEST.c.state == REQUESTED)
        .values(state=FAILED, error=error, finished_at=at)
    )  # fmt: skip
    return bool(done.rowcount == 1)


def cancel(conn: Connection, request_id: int, at: datetime) -> bool:
    """Withdraw a request no hub has taken (False: taken meanwhile, or over)."""
    done = conn.execute(
        update(REQUEST).where(REQUEST.c.id == request_id, REQUEST.c.state == REQUESTED)
        .values(state=CANCELLED, finished_at=at)
    )  # fmt: skip
    return bool(done.rowcount == 1)


async def run(store: Store, work: Callable[[Connection], T]) -> T:
    """One of these functions, in a transaction of its own (the admin's process)."""
    async with store.engine.begin() as conn:
        return await conn.run_sync(work)
