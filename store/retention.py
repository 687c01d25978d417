"""The store's side of retention (issue 15): what an inbox file's archiving notes on its
movement, and the purge of the history older than `history_years`.

The purge goes by batches of movements, each one transaction: their flow occurrences, their
contents kept in the store, the movements, then what they alone kept alive (flows with no
occurrence left and their dismissals; finished jobs with no movement and no inbox file left,
and their outputs). A content file is named in the result once no movement refers to it any
more (a redelivery shares its original's): the caller deletes it after the commit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, case, delete, exists, func, select, update

from bdi.store.inbox import release_name
from bdi.store.models import (
    Dismissal,
    Flow,
    FlowOccurrence,
    InboxFile,
    Job,
    Movement,
    Output,
    Redelivery,
    StoredContent,
)

BATCH = 500  # movements (or jobs) per transaction: a first purge of years stays responsive
DELIVERIES = ("delivery", "redelivery")


def _table(model: Any) -> Table:
    return cast(Table, model.__table__)


MOV, OCC, CONTENT, OUT = (
    _table(Movement),
    _table(FlowOccurrence),
    _table(StoredContent),
    _table(Output),
)
FLOW, DISMISSAL, JOB = _table(Flow), _table(Dismissal), _table(Job)
INBOX, REQUEST = _table(InboxFile), _table(Redelivery)


@dataclass(slots=True)
class Purged:
    """What a purge removed (or, for a dry run, would remove)."""

    movements: int = 0
    flow_occurrences: int = 0
    stored_contents: int = 0
    content_files: list[str] = field(default_factory=list)
    flows: int = 0
    jobs: int = 0

    def add(self, other: Purged) -> None:
        self.movements += other.movements
        self.flow_occurrences += other.flow_occurrences
        self.stored_contents += other.stored_contents
        self.content_files += other.content_files
        self.flows += other.flows
        self.jobs += other.jobs


# --- archiving an inbox file ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OldStored:
    """A file kept in the store's inbox since before the cut-off (its data read apart)."""

    id: int
    participant_id: str
    name: str
    output_id: int
    created_at: datetime


def old_stored_files(conn: Connection, before: datetime) -> list[OldStored]:
    i = INBOX.c
    query = select(i.id, i.participant_id, i.name, i.output_id, i.created_at).where(
        i.created_at < before
    )
    return [OldStored(*row) for row in conn.execute(query.order_by(i.id))]


def stored_data(conn: Connection, file_id: int) -> bytes | None:
    data = conn.execute(select(INBOX.c.data).where(INBOX.c.id == file_id)).scalar_one_or_none()
    return None if data is None else bytes(data)


def remove_stored(conn: Connection, file_id: int) -> bool:
    found = conn.execute(select(INBOX.c.participant_id, INBOX.c.name).where(INBOX.c.id == file_id))
    row = found.first()
    if row is None:
        return False
    release_name(conn, row.participant_id, row.name)
    return bool(conn.execute(delete(INBOX).where(INBOX.c.id == file_id)).rowcount == 1)


def release_archived(conn: Connection, participant: str, name: str) -> None:
    """An inbox file moved to the archive: its name is free in the inbox."""
    release_name(conn, participant, name)


def movement_of_output(conn: Connection, output_id: int) -> int | None:
    found = conn.execute(select(MOV.c.id).where(MOV.c.output_id == output_id)).scalar()
    return None if found is None else int(found)


def movement_of_name(conn: Connection, participant: str, name: str) -> int | None:
    """The movement of the delivery now under this name in the participant's inbox: a name
    is given again only once its file is gone, so it is the latest output of that name."""
    latest = conn.execute(
        select(OUT.c.id).where(OUT.c.participant_id == participant, OUT.c.name == name,
                               OUT.c.kind.in_(DELIVERIES), OUT.c.delivered_at.is_not(None))
        .order_by(OUT.c.id.desc()).limit(1)
    ).scalar()  # fmt: skip
    return None if latest is None else movement_of_output(conn, int(latest))


def note_on_movement(conn: Connection, movement_id: int, note: str) -> None:
    """Append `note` to the comment of each flow of the movement (shown by the Suivi)."""
    comment = case((OCC.c.comment == "", note), else_=OCC.c.comment + " ; " + note)
    conn.execute(update(OCC).where(OCC.c.movement_id == movement_id).values(comment=comment))


# --- purging the history -------------------------------------------------------------


def _old_movements(before: datetime) -> Any:
    return select(MOV.c.id).where(MOV.c.created_at < before)


def count_old(conn: Connection, before: datetime) -> Purged:
    """What `purge_batch` would remove, all batches together (a dry run)."""
    old = _old_movements(before).scalar_subquery()

    def count(query: Any) -> int:
        return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())

    return Purged(
        movements=count(_old_movements(before)),
        flow_occurrences=count(select(OCC.c.id).where(OCC.c.movement_id.in_(old))),
        stored_contents=count(select(CONTENT.c.movement_id).where(CONTENT.c.movement_id.in_(old))),
        content_files=_shared_free_paths(conn, before),
        jobs=count(_old_jobs(before)),
    )


def _shared_free_paths(conn: Connection, before: datetime) -> list[str]:
    """Content files of old movements that no newer movement refers to."""
    kept = MOV.alias("kept")
    query = (
        select(MOV.c.content_path).distinct()
        .where(MOV.c.created_at < before, MOV.c.content_path != "")
        .where(~exists().where(kept.c.content_path == MOV.c.content_path,
                               kept.c.created_at >= before))
    )  # fmt: skip
    return sorted(str(row[0]) for row in conn.execute(query))


def purge_batch(conn: Connection, before: datetime) -> Purged:
    """Purge the oldest BATCH movements created before `before`; zero movements: done."""
    ids = [int(r[0]) for r in conn.execute(_old_movements(before).order_by(MOV.c.id).limit(BATCH))]
    if not ids:
        return Purged()
    paths = {str(r[0]) for r in conn.execute(
        select(MOV.c.content_path).distinct().where(MOV.c.id.in_(ids), MOV.c.content_path != "")
    )}  # fmt: skip
    flows = {int(r[0]) for r in conn.execute(
        select(OCC.c.flow_id).distinct().where(OCC.c.movement_id.in_(ids))
    )}  # fmt: skip
    done = Purged(movements=len(ids))
    done.flow_occurrences = _delete(conn, delete(OCC).where(OCC.c.movement_id.in_(ids)))
    done.stored_contents = _delete(conn, delete(CONTENT).where(CONTENT.c.movement_id.in_(ids)))
    conn.execute(delete(REQUEST).where(REQUEST.c.movement_id.in_(ids)))
    conn.execute(delete(MOV).where(MOV.c.id.in_(ids)))
    done.content_files = sorted(p for p in paths if not _referred(conn, p))
    done.flows = _drop_lone_flows(conn, flows)
    return done


def _delete(conn: Connection, statement: Any) -> int:
    return int(conn.execute(statement).rowcount)


def _referred(conn: Connection, path: str) -> bool:
    return (
        conn.execute(select(MOV.c.id).where(MOV.c.content_path == path).limit(1)).first()
        is not None
    )


def _drop_lone_flows(conn: Connection, candidates: set[int]) -> int:
    """Flows left without any occurrence, with the dismissals that named them."""
    if not candidates:
        return 0
    lone = [
        int(r[0]) for r in conn.execute(
            select(FLOW.c.id).where(FLOW.c.id.in_(candidates))
            .where(~exists().where(OCC.c.flow_id == FLOW.c.id))
        )
    ]  # fmt: skip
    if lone:
        conn.execute(delete(DISMISSAL).where(DISMISSAL.c.flow_id.in_(lone)))
        conn.execute(delete(FLOW).where(FLOW.c.id.in_(lone)))
    return len(lone)


def _old_jobs(before: datetime) -> Any:
    """Finished jobs taken in before `before` that nothing refers to any more."""
    in_inbox = exists().where(INBOX.c.output_id == OUT.c.id, OUT.c.job_id == JOB.c.id)
    return select(JOB.c.id).where(
        JOB.c.received_at < before, JOB.c.state == "done", JOB.c.quarantined_at.is_(None),
        ~exists().where(MOV.c.job_id == JOB.c.id), ~in_inbox,
    )  # fmt: skip


def purge_jobs_batch(conn: Connection, before: datetime) -> int:
    """Purge up to BATCH old jobs with their outputs; 0: done."""
    ids = [int(r[0]) for r in conn.execute(_old_jobs(before).order_by(JOB.c.id).limit(BATCH))]
    if ids:
        conn.execute(delete(OUT).where(OUT.c.job_id.in_(ids)))
        conn.execute(delete(JOB).where(JOB.c.id.in_(ids)))
    return len(ids)
