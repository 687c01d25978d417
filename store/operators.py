"""The console's operators and their logged-in sessions (table `Operator`, `OperatorSession`).

Kept apart from the participants' `WebSession`s: a participant's cookie can never name an
operator's session, nor the reverse, whatever the two tables hold."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, or_, update
from sqlmodel import col, select

from bdi.store.models import Operator, OperatorSession
from bdi.store.repo import Store


async def add_operator(store: Store, operator: Operator) -> None:
    async with store.session() as s:
        s.add(operator)
        await s.commit()


async def operator(store: Store, name: str) -> Operator | None:
    async with store.session() as s:
        return await s.get(Operator, name)


async def operators(store: Store) -> list[Operator]:
    async with store.session() as s:
        return list((await s.exec(select(Operator).order_by(col(Operator.name)))).all())


async def update_operator(store: Store, name: str, **values: object) -> Operator:
    async with store.session() as s:
        row = await s.get(Operator, name)
        if row is None:
            raise KeyError(name)
        for key, value in values.items():
            setattr(row, key, value)
        await s.commit()
        return row


async def take_totp_step(store: Store, name: str, step: int) -> bool:
    """Record `step` as the operator's last TOTP code, if no later or equal one was taken:
    one transaction, so that a code seen twice (replayed, or raced) works only once."""
    stmt = (
        update(Operator)
        .where(col(Operator.name) == name)
        .where(or_(col(Operator.totp_last_step).is_(None), col(Operator.totp_last_step) < step))
        .values(totp_last_step=step)
    )
    async with store.engine.begin() as conn:
        return int((await conn.execute(stmt)).rowcount) == 1


async def open_session(store: Store, row: OperatorSession) -> None:
    """Record a new session; the expired ones of every operator go at the same time."""
    async with store.session() as s:
        expired = col(OperatorSession.expires_at) <= row.created_at
        await s.exec(delete(OperatorSession).where(expired))
        s.add(row)
        await s.commit()


async def session_of(
    store: Store, session_id: str, now: datetime
) -> tuple[OperatorSession, Operator] | None:
    """The session and its operator, if the session exists and has not expired."""
    query = (
        select(OperatorSession, Operator)
        .join(Operator, col(Operator.name) == col(OperatorSession.operator_name))
        .where(col(OperatorSession.id) == session_id, col(OperatorSession.expires_at) > now)
    )
    async with store.session() as s:
        row = (await s.exec(query)).first()
    return None if row is None else (row[0], row[1])


async def close_session(store: Store, session_id: str) -> None:
    async with store.session() as s:
        await s.exec(delete(OperatorSession).where(col(OperatorSession.id) == session_id))
        await s.commit()


async def close_sessions_of(store: Store, name: str) -> int:
    """End every console session of an operator; how many there were."""
    async with store.session() as s:
        found = col(OperatorSession.operator_name) == name
        result = await s.exec(delete(OperatorSession).where(found))
        await s.commit()
    return int(result.rowcount)
