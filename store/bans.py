"""Bans of source addresses (the defender's, HUB.md "Limits that protect the market").

Kept in the store so that a restart keeps them, and so that a lift by `bdi admin bans lift`
(another process) reaches the running hub, which reads the active bans every second or so.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import ColumnElement, and_, func, update
from sqlmodel import col, select

from bdi.store.models import Ban
from bdi.store.repo import Store


def as_utc(at: datetime) -> datetime:
    """Stored times are UTC; SQLite hands them back naive."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _active(now: datetime) -> ColumnElement[bool]:
    return and_(col(Ban.lifted_at).is_(None), col(Ban.until) > now)


async def add_ban(store: Store, ban: Ban) -> None:
    async with store.session() as s:
        s.add(ban)
        await s.commit()


async def active_bans(store: Store, now: datetime) -> list[Ban]:
    """The bans in force at `now`, the latest ending first (one row per address)."""
    query = select(Ban).where(_active(now)).order_by(col(Ban.until).desc())
    async with store.session() as s:
        rows = list((await s.exec(query)).all())
    latest: dict[str, Ban] = {}
    for row in rows:
        latest.setdefault(row.address, row)
    return list(latest.values())


async def offences(store: Store, since: datetime) -> dict[str, int]:
    """Bans per address since `since`, those an admin lifted left out (forgiven)."""
    query = (
        select(Ban.address, func.count())
        .where(col(Ban.lifted_at).is_(None), col(Ban.banned_at) >= since)
        .group_by(col(Ban.address))
    )
    async with store.session() as s:
        return {address: int(n) for address, n in (await s.exec(query)).all()}


async def lift(store: Store, address: str, at: datetime, actor: str) -> int:
    """Lift the bans in force on `address`; how many were."""
    stmt = (
        update(Ban)
        .where(col(Ban.address) == address, _active(at))
        .values(lifted_at=at, lifted_by=actor)
    )
    async with store.engine.begin() as conn:
        result = await conn.execute(stmt)
    return int(result.rowcount)
