"""A job's reads and writes, as functions of a connection that the journal runs in its
transactions.

Core statements built once over the tables; those run for every upload go through
`compiled` (SQL compiled once per connection, run on the DBAPI cursor), the others through
SQLAlchemy. Each function may be run twice (its group failed and it is retried alone), so it
sets every value it derives rather than building on a previous run.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, bindparam, delete, func, or_, select, update

from bdi.store.compiled import execute, insert_row, insert_rows
from bdi.store.inbox import NAMES, add_file, hold_names
from bdi.store.models import (
    Flow,
    FlowOccurrence,
    Job,
    Movement,
    Output,
    Participant,
    StoredContent,
)
from bdi.store.nodes import JobTaken, bound


def _table(model: Any) -> Table:
    table: Table = model.__table__
    return table


JOB, OUTPUT, MOVEMENT = _table(Job), _table(Output), _table(Movement)
FLOW, OCCURRENCE, PARTICIPANT = _table(Flow), _table(FlowOccurrence), _table(Participant)
CONTENT = _table(StoredContent)
_PARTIES = select(PARTICIPANT.c.id, PARTICIPANT.c.active, PARTICIPANT.c.pgp_fingerprint)
# a job's node alone moves it on (store/nodes.py); a job of no node is anyone's
_OWNED = or_(JOB.c.node.is_(None), JOB.c.node == bindparam("b_node"))
_PLANNED = update(JOB).where(JOB.c.id == bindparam("b_job"), _OWNED).values(state="planned")
_FLOW = select(FLOW.c.id).where(
    FLOW.c.layout == bindparam("b_layout"), FLOW.c.flow_key == bindparam("b_key")
)
_CLEAR = delete(OCCURRENCE).where(OCCURRENCE.c.movement_id.in_(bindparam("b_ids", expanding=True)))
_CLOSE = (
    update(JOB).where(JOB.c.id == bindparam("b_job"), _OWNED)
    .values(state="done", outcome=bindparam("b_outcome"), finished_at=bindparam("b_at"),
            data=None)
)  # fmt: skip
DRAFT = "draft"  # an output's kind while it is a draft (`store.drafts`)
Draft = tuple[int, int]  # a draft's output id and movement id
_DRAFTS = (
    select(OUTPUT.c.seq, OUTPUT.c.id, MOVEMENT.c.id)
    .join(MOVEMENT, MOVEMENT.c.output_id == OUTPUT.c.id)
    .where(OUTPUT.c.job_id == bindparam("b_job"), OUTPUT.c.kind == DRAFT)
)
_HELD = (
    update(JOB)
    .where(JOB.c.id == bindparam("b_job"), _OWNED, JOB.c.state == "received")
    .values(state="received")  # a no-op write: it takes the job's row until the commit
)
_FINISH = (
    _CLOSE,
    update(OUTPUT).where(OUTPUT.c.job_id == bindparam("b_job"), OUTPUT.c.delivered_at.is_(None))
    .values(delivered_at=bindparam("b_at")),
    update(MOVEMENT).where(MOVEMENT.c.job_id == bindparam("b_job")).values(delivered=True),
)  # fmt: skip

# (recipient, flow key, occurrence row without its movement and flow ids)
Occurrence = tuple[str, str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Party:
    """A participant as the pipeline needs it: read afresh for every job, so cheap."""

    id: str
    active: bool
    fingerprint: str  # primary key fingerprint of its OpenPGP key


def parties(conn: Connection) -> dict[str, Party]:
    """Every participant, as of now. Read again only when another connection has committed
    since (SQLite's data_version; the journal itself never writes participants): every
    take-in needs them, and a market has hundreds. Shared between jobs: never modified."""
    version = _data_version(conn)
    cached = conn.info.get(_PARTIES_KEY)
    if version is not None and cached is not None and cached[0] == version:
        return cast(dict[str, Party], cached[1])
    people = {
        row[0]: Party(row[0], bool(row[1]), row[2]) for row in execute(conn, _PARTIES).fetchall()
    }
    if version is not None:
        conn.info[_PARTIES_KEY] = (version, people)
    return people


_PARTIES_KEY = "bdi.parties"  # in Connection.info: (data_version, participants)


def _data_version(conn: Connection) -> int | None:
    """SQLite's count of commits by other connections; None on another database (no cache)."""
    if conn.dialect.name != "sqlite":
        return None
    cursor = conn.connection.cursor()
    try:
        return int(cursor.execute("PRAGMA data_version").fetchone()[0])
    finally:
        cursor.close()


@dataclass(slots=True)
class OutputRef:
    """An `Output` row as the pipeline builds and carries it: a plain dataclass, as an SQLModel
    instance (validated on every attribute set) costs ~45 µs to build, ~100 µs per job."""

    job_id: int
    seq: int
    kind: str  # delivery | log
    participant_id: str
    name: str
    ranges: str = ""
    text: str = ""
    delivered_at: datetime | None = None
    id: int | None = None

    def row(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "seq": self.seq, "kind": self.kind,
                "participant_id": self.participant_id, "name": self.name,
                "ranges": self.ranges, "text": self.text,
                "delivered_at": self.delivered_at}  # fmt: skip


@dataclass(slots=True)
class MovementRef:
    """A `Movement` row, likewise."""

    job_id: int
    created_at: datetime
    sender_id: str
    recipient_id: str
    file_name: str
    file_type: str
    size: int
    sha256: str
    content_path: str
    output_id: int = 0
    delivered: bool = False
    id: int | None = None

    def row(self) -> dict[str, Any]:
        return {"job_id": self.job_id, "output_id": self.output_id,
                "created_at": self.created_at, "sender_id": self.sender_id,
                "recipient_id": self.recipient_id, "file_name": self.file_name,
                "file_type": self.file_type, "size": self.size, "sha256": self.sha256,
                "content_path": self.content_path, "delivered": self.delivered}  # fmt: skip


@dataclass(slots=True)
class PlannedOutput:
    """An output with, for a delivery, its movement (and its content, if kept in the store);
    `stored`: the file itself when it is a small one, kept in the store's inbox."""

    output: OutputRef
    movement: MovementRef | None = None
    content: bytes | None = None
    stored: bytes | None = None


@dataclass(slots=True)
class JobRef:
    """A job as the pipeline carries it from its take-in to its end: a plain dataclass, as
    building the SQLModel `Job` on the event loop took ~5 % of its time under load."""

    participant_id: str
    upload_name: str
    spool_name: str
    size: int
    received_at: datetime
    id: int | None = None
    state: str = "received"  # received | planned | done
    in_row: bool = False  # the upload is kept in the job's row, not in a spool file
    data: bytes | None = None  # a copy of it, while held in memory (None: read the row)


_UNFINISHED = select(
    JOB.c.participant_id, JOB.c.upload_name, JOB.c.spool_name, JOB.c.size, JOB.c.received_at,
    JOB.c.id, JOB.c.state, JOB.c.data.is_not(None),
).where(JOB.c.state != "done", JOB.c.quarantined_at.is_(None)).order_by(JOB.c.id)  # fmt: skip
_DATA = select(JOB.c.data).where(JOB.c.id == bindparam("b_job"))


def unfinished_jobs(conn: Connection) -> list[JobRef]:
    """The jobs a previous run left unfinished, in order; their uploads are not read. With
    a node bound to the connection, those of this node (claimed at its start)."""
    node = bound(conn)
    query = _UNFINISHED if node is None else _UNFINISHED.where(JOB.c.node == node)
    return _refs(conn.execute(query))


def jobs_by_id(conn: Connection, ids: Sequence[int]) -> list[JobRef]:
    """Unfinished jobs just claimed from another node, in order."""
    return _refs(conn.execute(_UNFINISHED.where(JOB.c.id.in_(list(ids)))))


def _refs(rows: Any) -> list[JobRef]:
    return [JobRef(p, u, sp, n, r, i, st, bool(d)) for p, u, sp, n, r, i, st, d in rows]


def upload_data(conn: Connection, job_id: int) -> bytes:
    """The upload a job keeps in its row."""
    data = conn.execute(_DATA, {"b_job": job_id}).scalar_one()
    assert isinstance(data, bytes)
    return data


def insert_job(conn: Connection, job: JobRef) -> int:
    row = {"participant_id": job.participant_id, "upload_name": job.upload_name,
           "spool_name": job.spool_name, "size": job.size, "received_at": job.received_at,
           "state": job.state, "data": job.data, "node": bound(conn)}  # fmt: skip
    return insert_row(conn, JOB, row)


def take_in_job(conn: Connection, job: JobRef) -> tuple[int, dict[str, Party]]:
    """The job's row, and the participants as they are when it is taken in: its first run
    routes with them rather than read them again."""
    return insert_job(conn, job), parties(conn)


def save_plan(
    conn: Connection,
    job_id: int,
    planned: Sequence[PlannedOutput],
    at: datetime,
    occurrences: Sequence[Occurrence] = (),
    outcome: str | None = None,
    drafts: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """A job's outputs and movements (and its first flows); the job becomes `planned`. An
    output kept in the store is put in its inbox here, delivered `at`; given the `outcome`
    (every output is so kept), the job ends in the same transaction. A recipient's draft
    (`store.drafts`, rows stored while the upload was read; `drafts`: recipient -> its number)
    becomes its output and movement; the job's other drafts go. Sets the rows' ids; returns
    each recipient's movement id."""
    movements: dict[str, int] = {}
    found = job_drafts(conn, job_id) if drafts else {}
    adopted: set[int] = set()
    hold_names(conn, ((item.output.participant_id, item.output.name) for item in planned))
    for item in planned:
        draft = None
        if item.movement is not None and drafts and item.movement.recipient_id in drafts:
            draft = found.get(draft_seq(drafts[item.movement.recipient_id]))
            adopted.update(draft[:1] if draft else ())
        _save_output(conn, item, at, draft)
        if item.movement is not None:
            movements[item.movement.recipient_id] = _save_movement(conn, item, draft)
    if found:
        clear_drafts(conn, job_id, keep=adopted)
    add_occurrences(conn, movements, occurrences)
    node = bound(conn)
    if outcome is None:
        fenced(execute(conn, _PLANNED, {"b_job": job_id, "b_node": node}), job_id)
    else:  # its outputs and movements are already written delivered: only the job to close
        params = {"b_job": job_id, "b_outcome": outcome, "b_at": at, "b_node": node}
        fenced(execute(conn, _CLOSE, params), job_id)
    return movements


def _save_output(conn: Connection, item: PlannedOutput, at: datetime, draft: Draft | None) -> None:
    output = item.output
    if item.stored is not None:
        output.delivered_at = at
    output.id = _insert_or_adopt(conn, OUTPUT, output.row(), draft[0] if draft else None)
    if item.stored is not None:
        add_file(conn, output.participant_id, output.name, output.id, item.stored, at)


def _insert_or_adopt(conn: Connection, table: Table, row: dict[str, Any], draft: int | None) -> int:
    """A new row, or the draft's row (`draft`: its id) made this one."""
    if draft is None:
        return insert_row(conn, table, row)
    conn.execute(update(table).where(table.c.id == draft).values(row))
    return draft


def _save_movement(conn: Connection, item: PlannedOutput, draft: Draft | None) -> int:
    movement = item.movement
    assert movement is not None and item.output.id is not None
    movement.output_id = item.output.id
    movement.delivered = item.stored is not None
    movement.id = _insert_or_adopt(conn, MOVEMENT, movement.row(), draft[1] if draft else None)
    if item.content is not None:
        insert_rows(conn, CONTENT, [{"movement_id": movement.id, "data": item.content}])
    return movement.id


def fenced(cursor: Any, job_id: int) -> None:
    """The job moved on only if it is still this node's; else nothing it wrote stays."""
    if cursor.rowcount != 1:
        raise JobTaken(f"job {job_id} is another node's now")


def hold_job(conn: Connection, job_id: int) -> None:
    """Fence a write before the plan: the job must still be this node's, and not planned."""
    fenced(execute(conn, _HELD, {"b_job": job_id, "b_node": bound(conn)}), job_id)


def draft_seq(number: int) -> int:
    """The seq of a job's `number`th draft output (below the quarantine notices')."""
    return -1000 - number


def job_drafts(conn: Connection, job_id: int) -> dict[int, Draft]:
    """The job's drafts, by their outputs' seq."""
    return {seq: (output, movement)
            for seq, output, movement in conn.execute(_DRAFTS, {"b_job": job_id})}  # fmt: skip


def clear_drafts(conn: Connection, job_id: int, keep: Collection[int] = ()) -> None:
    """The job's drafts (`store.drafts`) but the outputs `keep`, with their rows."""
    outputs = [o for o, _ in job_drafts(conn, job_id).values() if o not in keep]
    if not outputs:
        return
    movements = select(MOVEMENT.c.id).where(MOVEMENT.c.output_id.in_(outputs))
    conn.execute(delete(OCCURRENCE).where(OCCURRENCE.c.movement_id.in_(movements)))
    conn.execute(delete(MOVEMENT).where(MOVEMENT.c.output_id.in_(outputs)))
    conn.execute(delete(OUTPUT).where(OUTPUT.c.id.in_(outputs)))


def add_occurrences(
    conn: Connection, movements: Mapping[str, int], batch: Sequence[Occurrence]
) -> None:
    """Flow occurrences, with their flows found or created (one writer: no race on a key)."""
    if not batch:
        return
    new: dict[tuple[str, str], str] = {}
    for _, key, row in batch:
        new.setdefault((row["layout"], key), row["optiflux_key"])
    flows = {pair: _flow_id(conn, *pair, optiflux_key) for pair, optiflux_key in new.items()}
    rows = [
        {**row, "movement_id": movements[recipient], "flow_id": flows[(row["layout"], key)]}
        for recipient, key, row in batch
    ]
    insert_rows(conn, OCCURRENCE, rows)


def _flow_id(conn: Connection, layout: str, key: str, optiflux_key: str) -> int:
    found = execute(conn, _FLOW, {"b_layout": layout, "b_key": key}).fetchall()
    if found:
        return int(found[0][0])
    values = {"layout": layout, "flow_key": key, "optiflux_key": optiflux_key}
    return insert_row(conn, FLOW, values)


def clear_occurrences(conn: Connection, movement_ids: Sequence[int]) -> None:
    """Forget a half-stored index (after a crash) before storing it again."""
    conn.execute(_CLEAR, {"b_ids": list(movement_ids)})


def finish_job(conn: Connection, job_id: int, outcome: str, at: datetime) -> None:
    """Every output of the job is in place: record it, with the job's end."""
    params = {"b_job": job_id, "b_outcome": outcome, "b_at": at, "b_node": bound(conn)}
    fenced(execute(conn, _FINISH[0], params), job_id)
    for statement in _FINISH[1:]:
        execute(conn, statement, params)


# a notice (seq < 0: the INTERNE `.log` of a quarantine) is not one of the job's outputs
_OUTPUTS_HELD = (
    select(*OUTPUT.c, NAMES.c.name.is_not(None).label("held"))
    .outerjoin(NAMES, and_(NAMES.c.participant_id == OUTPUT.c.participant_id,
                           NAMES.c.name == OUTPUT.c.name))
    .where(OUTPUT.c.job_id == bindparam("b_job"), OUTPUT.c.seq >= 0)
    .order_by(OUTPUT.c.seq)
)  # fmt: skip
_PLACED_AND_GONE = datetime(1970, 1, 1, tzinfo=UTC)  # its finish records the real time
_MOVEMENTS = select(MOVEMENT.c.recipient_id, MOVEMENT.c.id).where(
    MOVEMENT.c.job_id == bindparam("b_job")
)


def planned_outputs(conn: Connection, job_id: int) -> list[OutputRef]:
    """A planned job's outputs, in order (a job resumed after a crash, or taken over from
    another node). An output whose name is no longer held was placed, then removed by its
    recipient (its name is released then): it is marked delivered, never placed twice."""
    outputs = []
    for row in conn.execute(_OUTPUTS_HELD, {"b_job": job_id}):
        values = dict(row._mapping)
        held = values.pop("held")
        output = OutputRef(**values)
        if output.delivered_at is None and not held:
            output.delivered_at = _PLACED_AND_GONE
        outputs.append(output)
    return outputs


def job_movements(conn: Connection, job_id: int) -> dict[str, int]:
    """Recipient -> movement id of a job's deliveries."""
    return {row[0]: row[1] for row in conn.execute(_MOVEMENTS, {"b_job": job_id})}


def quarantine_job(
    conn: Connection, job_id: int, error: str, attempts: int, notice: PlannedOutput, at: datetime
) -> None:
    """Set the job aside until an admin retries it, and put the sender's INTERNE `.log` (the
    notice, kept in the store) in its inbox, in one transaction."""
    clear_drafts(conn, job_id)  # rows of its last run: it runs again from its upload
    notices = conn.execute(
        select(func.count()).where(OUTPUT.c.job_id == job_id, OUTPUT.c.seq < 0)
    ).scalar_one()
    notice.output.seq = -1 - int(notices)
    notice.output.delivered_at = at
    hold_names(conn, [(notice.output.participant_id, notice.output.name)])
    notice.output.id = insert_row(conn, OUTPUT, notice.output.row())
    assert notice.stored is not None
    add_file(conn, notice.output.participant_id, notice.output.name, notice.output.id,
             notice.stored, at)  # fmt: skip
    conn.execute(
        update(JOB).where(JOB.c.id == job_id)
        .values(quarantined_at=at, error=error, attempts=attempts, retry_requested_at=None)
    )  # fmt: skip


def record_failure(conn: Connection, job_id: int, error: str, attempts: int) -> None:
    """What went wrong last, for the admin, while the job waits to be tried again."""
    conn.execute(update(JOB).where(JOB.c.id == job_id).values(error=error, attempts=attempts))


def request_retry(conn: Connection, job_id: int, at: datetime) -> bool:
    """An admin's retry of a quarantined job: the running hub picks it up (`retry_requests`).
    False if there is no such quarantined job."""
    cursor = conn.execute(
        update(JOB).where(JOB.c.id == job_id, JOB.c.quarantined_at.is_not(None))
        .values(quarantined_at=None, retry_requested_at=at)
    )  # fmt: skip
    return bool(cursor.rowcount == 1)


_RETRIES = _UNFINISHED.where(JOB.c.retry_requested_at.is_not(None))


def retry_requests(conn: Connection) -> list[JobRef]:
    """The jobs an admin asked to run again, taken once (by one node: it makes them its
    own): the request is cleared here."""
    jobs = _refs(conn.execute(_RETRIES.with_for_update(skip_locked=True)))
    if jobs:
        conn.execute(
            update(JOB).where(JOB.c.id.in_([j.id for j in jobs]))
            .values(retry_requested_at=None, node=bound(conn))
        )  # fmt: skip
    return jobs
