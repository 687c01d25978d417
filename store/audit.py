"""Reading the audit table (`AuditEvent`): a search by words and period, newest first, as a
page for the console or as a stream for its CSV export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, true
from sqlmodel import col, select

from bdi.store.models import AuditEvent
from bdi.store.repo import Store

SEARCHED = (AuditEvent.actor, AuditEvent.action, AuditEvent.target, AuditEvent.detail,
            AuditEvent.address)  # fmt: skip
STREAM_BATCH = 500


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Events whose who, what, target, detail or address holds every word of `text`
    (any case), between `start` (included) and `end` (excluded)."""

    text: str = ""
    start: datetime | None = None
    end: datetime | None = None

    def where(self) -> ColumnElement[bool]:
        conditions = [_holds(word) for word in self.text.split()]
        if self.start is not None:
            conditions.append(col(AuditEvent.at) >= self.start)
        if self.end is not None:
            conditions.append(col(AuditEvent.at) < self.end)
        return and_(true(), *conditions)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _holds(word: str) -> ColumnElement[bool]:
    pattern = f"%{_escape(word.lower())}%"
    return or_(*(func.lower(col(c)).like(pattern, escape="\\") for c in SEARCHED))


async def count(store: Store, query: AuditQuery) -> int:
    stmt = select(func.count()).select_from(AuditEvent).where(query.where())
    async with store.session() as s:
        return int((await s.exec(stmt)).one())


async def page(store: Store, query: AuditQuery, offset: int, limit: int) -> list[AuditEvent]:
    stmt: Any = (
        select(AuditEvent)
        .where(query.where())
        .order_by(col(AuditEvent.at).desc(), col(AuditEvent.id).desc())
        .offset(offset)
        .limit(limit)
    )
    async with store.session() as s:
        return list((await s.exec(stmt)).all())


async def stream(store: Store, query: AuditQuery) -> AsyncIterator[AuditEvent]:
    """Every matching event, newest first, read by batches (an export keeps a flat memory)."""
    offset = 0
    while True:
        rows = await page(store, query, offset, STREAM_BATCH)
        for row in rows:
            yield row
        if len(rows) < STREAM_BATCH:
            return
        offset += len(rows)
