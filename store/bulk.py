"""A big upload's rows, many at a time: its flow occurrences and its `.log` files kept in the
store, as functions of a connection that the journal runs in its transactions.

`jobs.add_occurrences` looks each new flow up and inserts it with a statement of its own, and
`jobs.save_plan` inserts each output alone for its id: a few statements per row, which for
the 84 000 flows of a 256 MiB file (or its 60 000 refused sections) took seconds of the
journal's thread. Here flows are looked up by the hundred and every insert is one
`executemany` per batch (the DBAPI's bulk path: on PostgreSQL psycopg pipelines it).
Each function may run twice (its group failed, it is retried alone): it only inserts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from sqlalchemy import Connection, bindparam, select

from bdi.store.compiled import insert_rows
from bdi.store.inbox import INBOX, hold_names
from bdi.store.jobs import FLOW, OCCURRENCE, OUTPUT, Occurrence, OutputRef

LOOKUP = 500  # flow keys per query (bound parameters: well under any database's limit)
_FLOWS = select(FLOW.c.flow_key, FLOW.c.id).where(
    FLOW.c.layout == bindparam("b_layout"), FLOW.c.flow_key.in_(bindparam("b_keys", expanding=True))
)
_IDS = select(OUTPUT.c.seq, OUTPUT.c.id).where(
    OUTPUT.c.job_id == bindparam("b_job"),
    OUTPUT.c.seq >= bindparam("b_first"),
    OUTPUT.c.seq <= bindparam("b_last"),
)


def add_occurrences(
    conn: Connection, movements: Mapping[str, int], batch: Sequence[Occurrence]
) -> None:
    """Flow occurrences, with their flows found or created (one writer: no race on a key);
    the same rows as `jobs.add_occurrences`."""
    if not batch:
        return
    wanted: dict[tuple[str, str], str] = {}
    for _, key, row in batch:
        wanted.setdefault((row["layout"], key), row["optiflux_key"])
    flows = _flow_ids(conn, wanted)
    missing = [pair for pair in wanted if pair not in flows]
    if missing:
        rows = [{"layout": layout, "flow_key": key, "optiflux_key": wanted[(layout, key)]}
                for layout, key in missing]  # fmt: skip
        insert_rows(conn, FLOW, rows)
        flows.update(_flow_ids(conn, dict.fromkeys(missing, "")))
    insert_rows(conn, OCCURRENCE, [
        {**row, "movement_id": movements[recipient], "flow_id": flows[(row["layout"], key)]}
        for recipient, key, row in batch
    ])  # fmt: skip


def _flow_ids(conn: Connection, pairs: Mapping[tuple[str, str], str]) -> dict[tuple[str, str], int]:
    """The ids of those (layout, flow key) pairs that already have a flow."""
    by_layout: dict[str, list[str]] = {}
    for layout, key in pairs:
        by_layout.setdefault(layout, []).append(key)
    found: dict[tuple[str, str], int] = {}
    for layout, keys in by_layout.items():
        for start in range(0, len(keys), LOOKUP):
            chunk = keys[start : start + LOOKUP]
            for key, flow_id in conn.execute(_FLOWS, {"b_layout": layout, "b_keys": chunk}):
                found[(layout, key)] = int(flow_id)
    return found


def add_stored_outputs(
    conn: Connection, outputs: Sequence[tuple[OutputRef, bytes]], at: datetime
) -> None:
    """Outputs kept in the store's inbox (a job's many `.log` files, their seq numbers one
    run), delivered `at`: the rows `jobs.save_plan` writes for them, by the batch."""
    if not outputs:
        return
    for output, _ in outputs:
        output.delivered_at = at
    hold_names(conn, ((output.participant_id, output.name) for output, _ in outputs))
    insert_rows(conn, OUTPUT, [output.row() for output, _ in outputs])
    job = outputs[0][0].job_id
    first, last = outputs[0][0].seq, outputs[-1][0].seq
    ids = dict(conn.execute(_IDS, {"b_job": job, "b_first": first, "b_last": last}).all())
    rows = []
    for output, data in outputs:
        output.id = ids[output.seq]
        rows.append({"participant_id": output.participant_id, "name": output.name,
                     "size": len(data), "created_at": at, "output_id": output.id,
                     "data": data})  # fmt: skip
    insert_rows(conn, INBOX, rows)
