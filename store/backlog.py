"""The inbox files kept in the store, per recipient: how many, their bytes, the oldest."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func
from sqlmodel import col, select

from bdi.store.models import InboxFile
from bdi.store.repo import Store


@dataclass(frozen=True, slots=True)
class Backlog:
    files: int
    size: int
    oldest: datetime | None

    def plus(self, other: Backlog) -> Backlog:
        dates = [d for d in (self.oldest, other.oldest) if d is not None]
        return Backlog(self.files + other.files, self.size + other.size, min(dates, default=None))


def _utc(at: datetime | None) -> datetime | None:
    """Stored times are UTC; SQLite hands them back naive."""
    return None if at is None else at.replace(tzinfo=at.tzinfo or UTC)


async def stored_backlog(store: Store) -> dict[str, Backlog]:
    stmt = select(
        col(InboxFile.participant_id),
        func.count(),
        func.sum(col(InboxFile.size)),
        func.min(col(InboxFile.created_at)),
    ).group_by(col(InboxFile.participant_id))
    async with store.session() as s:
        rows = (await s.exec(stmt)).all()
    return {pid: Backlog(int(n), int(size or 0), _utc(oldest)) for pid, n, size, oldest in rows}
