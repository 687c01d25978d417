"""Inbox files kept in the store (`InboxFile`): written by the journal with the plan of the
job that owes them, read by the SFTP sessions through the `Store`, removed by their owner."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, select

from bdi.store.compiled import execute, insert_rows
from bdi.store.models import InboxFile

INBOX = cast(Table, cast(Any, InboxFile).__table__)
_REMOVE = delete(INBOX).where(
    INBOX.c.participant_id == bindparam("b_participant"), INBOX.c.name == bindparam("b_name")
)
ENTRIES = select(INBOX.c.name, INBOX.c.size, INBOX.c.created_at)
DATA = select(INBOX.c.data)


@dataclass(frozen=True, slots=True)
class StoredEntry:
    name: str
    size: int
    created_at: datetime


def add_file(
    conn: Connection, participant: str, name: str, output_id: int, data: bytes, at: datetime
) -> None:
    row = {"participant_id": participant, "name": name, "size": len(data), "created_at": at,
           "output_id": output_id, "data": data}  # fmt: skip
    insert_rows(conn, INBOX, [row])


def remove_file(conn: Connection, participant: str, name: str) -> bool:
    """Whether there was such a file."""
    cursor = execute(conn, _REMOVE, {"b_participant": participant, "b_name": name})
    return bool(cursor.rowcount == 1)


def names(conn: Connection) -> dict[str, set[str]]:
    """Per participant, the names of its files kept here."""
    found: dict[str, set[str]] = {}
    for participant, name in conn.execute(select(INBOX.c.participant_id, INBOX.c.name)):
        found.setdefault(participant, set()).add(name)
    return found
