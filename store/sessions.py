"""The Suivi's logged-in sessions, kept server-side so that a logout, a disabled participant
or a new password ends them at once (a copied cookie is worth nothing after that)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete
from sqlmodel import col, select

from bdi.store.models import Participant, WebSession
from bdi.store.repo import Store


async def open_session(store: Store, session: WebSession) -> None:
    """Record a new session; the expired ones of anybody go at the same time."""
    async with store.session() as s:
        await s.exec(delete(WebSession).where(col(WebSession.expires_at) <= session.created_at))
        s.add(session)
        await s.commit()


async def session_of(
    store: Store, session_id: str, now: datetime
) -> tuple[WebSession, Participant] | None:
    """The session and its participant, if the session exists and has not expired."""
    query = (
        select(WebSession, Participant)
        .join(Participant, col(Participant.id) == col(WebSession.participant_id))
        .where(col(WebSession.id) == session_id, col(WebSession.expires_at) > now)
    )
    async with store.session() as s:
        row = (await s.exec(query)).first()
    return None if row is None else (row[0], row[1])


async def close_session(store: Store, session_id: str) -> None:
    async with store.session() as s:
        await s.exec(delete(WebSession).where(col(WebSession.id) == session_id))
        await s.commit()


async def close_sessions_of(store: Store, participant_id: str) -> int:
    """End every session of a participant; how many there were."""
    async with store.session() as s:
        result = await s.exec(
            delete(WebSession).where(col(WebSession.participant_id) == participant_id)
        )
        await s.commit()
    return int(result.rowcount)
