"""What an operator reads of the hub, for the CLI and the console alike: the backlog of each
inbox (files kept in the store and files in the inbox folder) and the audit log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from math import ceil
from typing import Any
from zoneinfo import ZoneInfo

from bdi.mailbox.storage import Mailboxes
from bdi.store import audit
from bdi.store.backlog import Backlog, stored_backlog
from bdi.store.models import AuditEvent
from bdi.store.repo import Store

PARIS = ZoneInfo("Europe/Paris")  # the market's days, as the Suivi counts them
MAX_PAGE_SIZE = 500
FIRST_DAY, LAST_DAY = date(1900, 1, 1), date(9998, 12, 31)


def _folder_backlog(mailboxes: Mailboxes, participant_id: str) -> Backlog:
    """Files in the participant's inbox folder (hidden names are the hub's own work)."""
    folder = mailboxes.inbox(participant_id)
    try:
        found = [p.stat() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    except OSError:
        return Backlog(0, 0, None)
    oldest = min((s.st_mtime for s in found), default=None)
    when = datetime.fromtimestamp(oldest, UTC) if oldest is not None else None
    return Backlog(len(found), sum(s.st_size for s in found), when)


def _folders(mailboxes: Mailboxes, ids: Sequence[str]) -> dict[str, Backlog]:
    return {pid: _folder_backlog(mailboxes, pid) for pid in ids}


async def inbox_backlog(
    store: Store, mailboxes: Mailboxes, ids: Sequence[str]
) -> list[dict[str, Any]]:
    """Per participant, what waits for it to collect; the largest backlog first."""
    stored = await stored_backlog(store)
    on_disk = await asyncio.to_thread(_folders, mailboxes, ids)
    empty = Backlog(0, 0, None)
    rows = [(pid, stored.get(pid, empty).plus(on_disk[pid])) for pid in ids]
    rows.sort(key=lambda r: (-r[1].size, -r[1].files, r[0]))
    return [{"participant": pid, "files": b.files, "bytes": b.size,
             "oldest": b.oldest.isoformat() if b.oldest else None}
            for pid, b in rows]  # fmt: skip


def day_start(day: date) -> datetime:
    """Midnight of a day in Paris, as a UTC time (the audit's days are the market's)."""
    return datetime.combine(day, time(0), PARIS).astimezone(UTC)


def audit_query(
    text: str = "", start: date | None = None, end: date | None = None
) -> audit.AuditQuery:
    """`start` and `end` are days, both included (held within the years the store dates)."""
    return audit.AuditQuery(
        text=text.strip(),
        start=day_start(max(start, FIRST_DAY)) if start else None,
        end=day_start(min(end, LAST_DAY) + timedelta(days=1)) if end else None,
    )


def audit_view(event: AuditEvent) -> dict[str, Any]:
    at = event.at.replace(tzinfo=event.at.tzinfo or UTC)
    return {"id": event.id, "at": at.isoformat(), "actor": event.actor, "action": event.action,
            "target": event.target, "detail": event.detail, "address": event.address}  # fmt: skip


async def audit_page(store: Store, query: audit.AuditQuery, page: int, size: int) -> dict[str, Any]:
    size = max(1, min(size, MAX_PAGE_SIZE))
    total = await audit.count(store, query)
    rows = await audit.page(store, query, (max(1, page) - 1) * size, size)
    return {"total": total, "page": max(1, page), "pages": max(1, ceil(total / size)),
            "size": size, "events": [audit_view(e) for e in rows]}  # fmt: skip


async def audit_stream(store: Store, query: audit.AuditQuery) -> AsyncIterator[dict[str, Any]]:
    async for event in audit.stream(store, query):
        yield audit_view(event)
