"""A big upload's rows, many at a time: its flow occurrences and its `.log` files kept in the
store, as functions of a connection that the journal runs in its transactions.

`jobs.add_occurrences` looks each new flow up and inserts it with a statement of its own, and
`jobs.save_plan` inserts each output alone for its id: a few statements per row, which for
the 84 000 flows of a 256 MiB file (or its 60 000 refused sections) took seconds of the
journal's thread. Here flows are looked up by the hundred and every insert is one
`executemany` per batch (the DBAPI's bulk path: on PostgreSQL psycopg pipelines it).
Each function may run twice (its group failed, it is retried alone): it only inserts.

On SQLite the flows and occurrences go in as multi-row `INSERT … VALUES` statements of a
few thousand rows, and the flow ids come back as one JSON row: `executemany` (and a result
read row by row) releases the interpreter lock at each row's step, and while the job's
thread builds the next batch each taking it back waits the switch interval (measured on
20 000 occurrence rows with a Python thread busy beside: 157 µs a row by `executemany`,
35 µs by statements of 2 000 rows, 21-22 µs either way alone).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import DBAPIError

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


# the occurrence's columns in the order of the SQLite statement's values
_OCCURRENCE = ("movement_id", "flow_id", "seq", "layout", "flow_code", "optiflux_key", "control",
               "comment", "fields_json", "lines_json", "grid_json", "producer_code",
               "insured_folded", "content_start", "content_end", "office_codes")  # fmt: skip
_ROW = _OCCURRENCE[2:]  # those of the row as the pipeline makes it
ROWS_PER_STATEMENT = 500  # SQLite keeps a statement's last values (its copies): 1.5 MB
_NEW_FLOWS = (
    "INSERT INTO flow (layout, flow_key, optiflux_key) VALUES {} "
    "ON CONFLICT (layout, flow_key) DO NOTHING"
)
_FLOW_IDS = (
    "SELECT json_group_array(json_array(flow_key, id)) FROM flow "
    "WHERE layout = ? AND flow_key IN (SELECT value FROM json_each(?))"
)


def add_occurrences(
    conn: Connection, movements: Mapping[str, int], batch: Sequence[Occurrence]
) -> None:
    """Flow occurrences, with their flows found or created (one writer: no race on a key);
    the same rows as `jobs.add_occurrences`."""
    if not batch:
        return
    if conn.dialect.name == "sqlite":
        _add_sqlite(conn, movements, batch)
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


def _add_sqlite(
    conn: Connection, movements: Mapping[str, int], batch: Sequence[Occurrence]
) -> None:
    """`add_occurrences` on SQLite, a statement per ROWS_PER_STATEMENT rows: the new flows
    (a key already there is left as it is; the first row of a key gives its clé, as
    elsewhere), their ids, the occurrences."""
    wanted: dict[tuple[str, str], str] = {}
    for _, key, row in batch:
        wanted.setdefault((row["layout"], key), row["optiflux_key"])
    cursor = conn.connection.cursor()
    try:
        _values(cursor, _NEW_FLOWS, [(layout, key, clé) for (layout, key), clé in wanted.items()])
        flows = _sqlite_flow_ids(cursor, wanted)
        rows = [
            (movements[recipient], flows[(row["layout"], key)], *[row[c] for c in _ROW])
            for recipient, key, row in batch
        ]
        insert = f"INSERT INTO flowoccurrence ({', '.join(_OCCURRENCE)}) VALUES {{}}"
        _values(cursor, insert, rows)
    finally:
        cursor.close()


def _values(cursor: Any, statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """`statement` (its VALUES as `{}`) run for `rows`, ROWS_PER_STATEMENT at a time."""
    if not rows:
        return
    one = "(" + ", ".join("?" * len(rows[0])) + ")"
    for start in range(0, len(rows), ROWS_PER_STATEMENT):
        chunk = rows[start : start + ROWS_PER_STATEMENT]
        sql = statement.format(", ".join([one] * len(chunk)))
        params = [value for row in chunk for value in row]
        _run(cursor, sql, params)


def _sqlite_flow_ids(
    cursor: Any, pairs: Mapping[tuple[str, str], str]
) -> dict[tuple[str, str], int]:
    """The ids of those (layout, flow key) pairs, in one result row per layout."""
    by_layout: dict[str, list[str]] = {}
    for layout, key in pairs:
        by_layout.setdefault(layout, []).append(key)
    found: dict[tuple[str, str], int] = {}
    for layout, keys in by_layout.items():
        (text,) = _run(cursor, _FLOW_IDS, (layout, json.dumps(keys))).fetchone()
        for key, flow_id in json.loads(text):
            found[(layout, key)] = int(flow_id)
    return found


def _run(cursor: Any, sql: str, params: Sequence[Any]) -> Any:
    """Errors raised as SQLAlchemy raises them (IntegrityError...), as `compiled` does."""
    try:
        return cursor.execute(sql, params)
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, params, exc, sqlite3.Error) from exc


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
