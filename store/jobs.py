"""A job's reads and writes, as functions of a connection that the journal runs in its transactions.

Core statements only: the ORM's unit of work costs about ten times more per row. Each
function may be run twice (its group failed and it is retried alone), so it sets every value
it derives rather than building on a previous run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, delete, insert, select, tuple_, update
from sqlmodel import col

from bdi.store.models import Flow, FlowOccurrence, Job, Movement, Output, Participant

# (recipient, flow key, occurrence row without its movement and flow ids)
Occurrence = tuple[str, str, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Party:
    """A participant as the pipeline needs it: read afresh for every job, so cheap."""

    id: str
    active: bool
    fingerprint: str  # primary key fingerprint of its OpenPGP key


def parties(conn: Connection) -> dict[str, Party]:
    rows = conn.execute(
        select(col(Participant.id), col(Participant.active), col(Participant.pgp_fingerprint))
    )
    return {row[0]: Party(row[0], bool(row[1]), row[2]) for row in rows}


@dataclass(slots=True)
class PlannedOutput:
    """An output with, for a delivery, its movement."""

    output: Output
    movement: Movement | None = None


def insert_job(conn: Connection, job: Job) -> int:
    row = job.model_dump(exclude={"id"})
    job_id = conn.execute(insert(Job).values(**row)).inserted_primary_key
    assert job_id is not None
    return int(job_id[0])


def _insert(conn: Connection, model: type[Output] | type[Movement], row: Output | Movement) -> int:
    key = conn.execute(insert(model).values(**row.model_dump(exclude={"id"}))).inserted_primary_key
    assert key is not None
    return int(key[0])


def save_plan(
    conn: Connection,
    job_id: int,
    planned: Sequence[PlannedOutput],
    occurrences: Sequence[Occurrence] = (),
) -> dict[str, int]:
    """A job's outputs and movements (and its first flows); the job becomes `planned`.
    Sets the rows' ids; returns each recipient's movement id."""
    movements: dict[str, int] = {}
    for item in planned:
        item.output.id = _insert(conn, Output, item.output)
        if item.movement is not None:
            item.movement.output_id = item.output.id
            item.movement.id = _insert(conn, Movement, item.movement)
            movements[item.movement.recipient_id] = item.movement.id
    conn.execute(update(Job).where(col(Job.id) == job_id).values(state="planned"))
    add_occurrences(conn, movements, occurrences)
    return movements


def add_occurrences(
    conn: Connection, movements: Mapping[str, int], batch: Sequence[Occurrence]
) -> None:
    """Flow occurrences, with their flows found or created (one writer: no race on a key)."""
    if not batch:
        return
    new: dict[tuple[str, str], str] = {}
    for _, key, row in batch:
        new.setdefault((row["layout"], key), row["optiflux_key"])
    found = conn.execute(
        select(col(Flow.id), col(Flow.layout), col(Flow.flow_key)).where(
            tuple_(col(Flow.layout), col(Flow.flow_key)).in_(list(new))
        )
    )
    flows = {(layout, key): flow_id for flow_id, layout, key in found}
    for (layout, key), optiflux_key in new.items():
        if (layout, key) not in flows:
            values = {"layout": layout, "flow_key": key, "optiflux_key": optiflux_key}
            created = conn.execute(insert(Flow).values(**values)).inserted_primary_key
            assert created is not None
            flows[(layout, key)] = created[0]
    rows = [
        {**row, "movement_id": movements[recipient], "flow_id": flows[(row["layout"], key)]}
        for recipient, key, row in batch
    ]
    conn.execute(insert(FlowOccurrence), rows)


def clear_occurrences(conn: Connection, movement_ids: Sequence[int]) -> None:
    """Forget a half-stored index (after a crash) before storing it again."""
    conn.execute(delete(FlowOccurrence).where(col(FlowOccurrence.movement_id).in_(movement_ids)))


def finish_job(conn: Connection, job_id: int, outcome: str, at: datetime) -> None:
    """Every output of the job is in place: record it, with the job's end."""
    conn.execute(
        update(Job)
        .where(col(Job.id) == job_id)
        .values(state="done", outcome=outcome, finished_at=at)
    )
    conn.execute(
        update(Output)
        .where(col(Output.job_id) == job_id, col(Output.delivered_at).is_(None))
        .values(delivered_at=at)
    )
    conn.execute(update(Movement).where(col(Movement.job_id) == job_id).values(delivered=True))
