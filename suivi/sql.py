"""SQL building blocks of the Suivi: the access rule and "latest occurrence per flow".

Portable SQL only (SQLite and PostgreSQL): window functions, LIKE with an escape
character, ILIKE through SQLAlchemy (lower() LIKE lower() on SQLite).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Label, Row, Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from bdi.store.models import Flow, FlowOccurrence, Movement
from bdi.store.repo import Store

Occ, Mov = FlowOccurrence, Movement
STREAM_CHUNK = 500

# the columns every result row needs; lines_json only where compte financier lines are read
ROW_COLUMNS: tuple[Label[Any], ...] = (
    col(Occ.id).label("oid"),
    col(Occ.flow_id).label("flow_id"),
    col(Occ.movement_id).label("movement_id"),
    col(Occ.layout).label("layout"),
    col(Occ.flow_code).label("flow_code"),
    col(Occ.optiflux_key).label("optiflux_key"),
    col(Occ.control).label("control"),
    col(Occ.comment).label("comment"),
    col(Occ.fields_json).label("fields_json"),
    col(Mov.created_at).label("created_at"),
    col(Mov.sender_id).label("sender_id"),
    col(Mov.recipient_id).label("recipient_id"),
    col(Mov.file_name).label("file_name"),
    col(Mov.file_type).label("file_type"),
)
LINES: Label[Any] = col(Occ.lines_json).label("lines_json")
# a répartition's grid: where its records are in the content, or its JSON (an older row)
GRID: tuple[Label[Any], ...] = (
    col(Occ.content_start).label("content_start"),
    col(Occ.content_end).label("content_end"),
    col(Occ.grid_json).label("grid_json"),
)
OFFICES: Label[Any] = col(Occ.office_codes).label("office_codes")
# Only movements whose file is in place count: a planned delivery is not yet a passage.
JOIN = and_(col(Mov.id) == col(Occ.movement_id), col(Mov.delivered))
NEWEST_FIRST = (col(Mov.created_at).desc(), col(Mov.id).desc(), col(Occ.id).desc())
OLDEST_FIRST = (col(Mov.created_at), col(Mov.id), col(Occ.id))


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def contains(column: Any, text: str) -> ColumnElement[bool]:
    """Case-sensitive substring (the caller folds both sides)."""
    return column.like(f"%{escape_like(text)}%", escape="\\")  # type: ignore[no-any-return]


def icontains(column: Any, text: str) -> ColumnElement[bool]:
    return column.ilike(f"%{escape_like(text)}%", escape="\\")  # type: ignore[no-any-return]


def party(user: str) -> ColumnElement[bool]:
    """The access rule (§8.1): a movement the user sent or received."""
    return and_(col(Mov.delivered), or_(col(Mov.sender_id) == user, col(Mov.recipient_id) == user))


def clé_contains(text: str) -> ColumnElement[bool]:
    """Flows whose clé contains `text`, looked up in the (smaller) flow table."""
    flows = select(col(Flow.id)).where(contains(col(Flow.optiflux_key), text.upper()))
    flows = flows.correlate(None)
    return col(Occ.flow_id).in_(flows)


def latest_visible(
    user: str,
    where: Sequence[ColumnElement[bool]],
    narrowing: Sequence[ColumnElement[bool]] = (),
) -> Select[Any]:
    """Ids of the latest occurrence, per flow, among the user's own movements.

    `where` restricts the occurrences considered (layout, file type...); `narrowing` keeps
    only flows with at least one such occurrence matching it, before the window runs."""
    base = [party(user), *where]
    rank = (
        func.row_number().over(partition_by=col(Occ.flow_id), order_by=NEWEST_FIRST).label("rank")
    )
    inner = select(col(Occ.id).label("oid"), rank).join(Mov, JOIN).where(*base)
    if narrowing:
        flows = select(col(Occ.flow_id)).join(Mov, JOIN).where(*base, *narrowing).correlate(None)
        inner = inner.where(col(Occ.flow_id).in_(flows))
    ranked = inner.subquery()
    return select(ranked.c.oid).where(ranked.c.rank == 1)


def rows_of(ids: Select[Any], *extra: Any) -> Select[Any]:
    return select(*ROW_COLUMNS, *extra).join(Mov, JOIN).where(col(Occ.id).in_(ids))


def session(store: Store) -> AsyncSession:
    """A plain SQLAlchemy session on the store's engine, for Core selects of rows."""
    return AsyncSession(store.engine, expire_on_commit=False)


async def stream(store: Store, stmt: Select[Any]) -> AsyncIterator[Row[Any]]:
    """Rows in chunks, so that exports of any size keep a flat memory."""
    async with session(store) as s:
        result = await s.stream(stmt.execution_options(yield_per=STREAM_CHUNK))
        async for row in result:
            yield row


async def all_rows(store: Store, stmt: Select[Any]) -> list[Row[Any]]:
    async with session(store) as s:
        return list((await s.execute(stmt)).all())


async def scalar_int(store: Store, stmt: Select[Any]) -> int:
    async with session(store) as s:
        return int((await s.execute(stmt)).scalar_one())


async def count(store: Store, stmt: Select[Any]) -> int:
    return await scalar_int(store, select(func.count()).select_from(stmt.order_by(None).subquery()))


def since(at: datetime) -> ColumnElement[bool]:
    return col(Mov.created_at) >= at


def sent_from(prefixes: Sequence[str], column: Any) -> ColumnElement[bool]:
    """Mailbox class test on an EDI id column (its 3-letter prefix)."""
    return or_(*(column.like(f"{p}%") for p in prefixes))


def both(*conditions: ColumnElement[bool]) -> ColumnElement[bool]:
    return and_(*conditions)
