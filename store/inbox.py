"""Inbox files kept in the store (`InboxFile`): written by the journal with the plan of the
job that owes them, read by the SFTP sessions through the `Store`, removed by their owner."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, bindparam, delete, select
from sqlalchemy.exc import IntegrityError

from bdi.store.compiled import execute, insert_rows
from bdi.store.models import InboxFile, InboxName

INBOX = cast(Table, cast(Any, InboxFile).__table__)
NAMES = cast(Table, cast(Any, InboxName).__table__)
_RELEASE = delete(NAMES).where(
    NAMES.c.participant_id == bindparam("b_participant"), NAMES.c.name == bindparam("b_name")
)
_HELD = select(NAMES.c.name).where(
    NAMES.c.participant_id == bindparam("b_participant"), NAMES.c.name == bindparam("b_name")
)

_AMONG = select(NAMES.c.name).where(
    NAMES.c.participant_id == bindparam("b_participant"),
    NAMES.c.name.in_(bindparam("b_names", expanding=True)),
)
LOOKUP = 500  # names per query


class NameTaken(RuntimeError):
    """A name is held already (another node gave it meanwhile, or a file of it left the
    inbox unseen): the plan is made again, with another name."""


def hold_names(conn: Connection, names: Iterable[tuple[str, str]]) -> None:
    """Record (participant, name) pairs as taken in their inboxes, in the transaction that
    plans their outputs; the primary key refuses a name held already (the names were
    chosen free a moment before: looking again first would cost a read each, to fail the
    same transaction the same way)."""
    rows = [{"participant_id": p, "name": n} for p, n in names]
    try:
        insert_rows(conn, NAMES, rows)
    except IntegrityError as exc:
        raise NameTaken(str(exc.orig).splitlines()[0]) from exc


def release_name(conn: Connection, participant: str, name: str) -> None:
    """The file under this name left the inbox (removed by its owner, archived)."""
    execute(conn, _RELEASE, {"b_participant": participant, "b_name": name})


def held_among(conn: Connection, participant: str, names: Iterable[str]) -> set[str]:
    """Which of `names` are held in the participant's inbox (LOOKUP at a time)."""
    wanted, found = list(names), set[str]()
    for start in range(0, len(wanted), LOOKUP):
        chunk = wanted[start : start + LOOKUP]
        params = {"b_participant": participant, "b_names": chunk}
        found.update(name for (name,) in conn.execute(_AMONG, params))
    return found


def is_held(conn: Connection, participant: str, name: str) -> bool:
    found = execute(conn, _HELD, {"b_participant": participant, "b_name": name})
    return found.fetchone() is not None


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
    """Whether there was such a file; its name is free again."""
    cursor = execute(conn, _REMOVE, {"b_participant": participant, "b_name": name})
    release_name(conn, participant, name)
    return bool(cursor.rowcount == 1)
