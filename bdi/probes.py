"""What the hub reads of itself: the figures of `/metrics` (`state`) and the checks of
`/readyz` (`readiness`): database answers, spool writable, free space above its floor, no
job waiting too long. Each check says what failed, in a few words."""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, text

from bdi.hub import Hub, utcnow
from bdi.metrics import State
from bdi.pipeline.workers import Pipeline
from bdi.ssh import Sessions
from bdi.store.inbox import INBOX
from bdi.store.jobs import JOB


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


async def state(hub: Hub, pipeline: Pipeline, sessions: Sessions, banned: int) -> State:
    queued, running, waiting = pipeline.counts()
    files, size = await _backlog(hub)
    return State(
        jobs_queued=queued, jobs_running=running, jobs_waiting=waiting,
        jobs_quarantined=await _quarantined(hub), sessions=sum(map(len, sessions.open.values())),
        banned=banned, backlog_files=files, backlog_bytes=size,
        free_bytes=free_bytes(hub), database_bytes=await _database_bytes(hub),
    )  # fmt: skip


async def readiness(hub: Hub, floor_bytes: int, stale_after_s: float) -> list[Check]:
    return [
        await _database(hub),
        await asyncio.to_thread(_spool_writable, hub),
        _free_space(hub, floor_bytes),
        await _stale_jobs(hub, stale_after_s),
    ]


def free_bytes(hub: Hub) -> int:
    try:
        found = os.statvfs(hub.settings.data)
    except OSError:
        return 0
    return found.f_bavail * found.f_frsize


async def _database(hub: Hub) -> Check:
    try:
        async with asyncio.timeout(5), hub.store.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        return Check("database", False, type(exc).__name__)
    return Check("database", True)


def _spool_writable(hub: Hub) -> Check:
    try:
        with tempfile.TemporaryFile(dir=hub.settings.spool) as probe:
            probe.write(b"ok")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        return Check("spool", False, exc.strerror or type(exc).__name__)
    return Check("spool", True)


def _free_space(hub: Hub, floor_bytes: int) -> Check:
    free = free_bytes(hub)
    ok = free >= floor_bytes
    return Check("free_space", ok, "" if ok else f"{free} bytes free, floor {floor_bytes}")


async def _stale_jobs(hub: Hub, stale_after_s: float) -> Check:
    """A job not set aside and not done long after its take-in: the pipeline is stuck."""
    query = select(func.min(JOB.c.received_at)).where(
        JOB.c.state != "done", JOB.c.quarantined_at.is_(None)
    )
    async with hub.store.engine.connect() as conn:
        oldest = (await conn.execute(query)).scalar()
    if isinstance(oldest, datetime) and _aware(oldest) < utcnow() - timedelta(
        seconds=stale_after_s
    ):
        return Check("jobs", False, f"a job waits since {_aware(oldest).isoformat()}")
    return Check("jobs", True)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def _quarantined(hub: Hub) -> int:
    query = select(func.count()).where(JOB.c.quarantined_at.is_not(None))
    async with hub.store.engine.connect() as conn:
        return int((await conn.execute(query)).scalar() or 0)


async def _backlog(hub: Hub) -> tuple[dict[str, int], dict[str, int]]:
    """Files and bytes waiting in inboxes, by participant class (the id's prefix)."""
    files: Counter[str] = Counter()
    size: Counter[str] = Counter()
    query = select(INBOX.c.participant_id, func.count(), func.sum(INBOX.c.size)).group_by(
        INBOX.c.participant_id
    )
    async with hub.store.engine.connect() as conn:
        for participant, count, total in await conn.execute(query):
            files[participant[:3]] += int(count)
            size[participant[:3]] += int(total or 0)
    on_disk = await asyncio.to_thread(_inbox_folders, hub)
    for participant, (count, total) in on_disk.items():
        files[participant[:3]] += count
        size[participant[:3]] += total
    return dict(files), dict(size)


def _inbox_folders(hub: Hub) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    root = hub.settings.mailboxes
    if not root.is_dir():
        return found
    for folder in root.iterdir():
        inbox = folder / "inbox"
        if inbox.is_dir():
            sizes = [p.stat().st_size for p in inbox.iterdir() if p.is_file()]
            found[folder.name] = (len(sizes), sum(sizes))
    return found


async def _database_bytes(hub: Hub) -> int:
    """The SQLite file and its WAL; PostgreSQL's own count of its database."""
    if hub.store.engine.dialect.name == "postgresql":
        async with hub.store.engine.connect() as conn:
            found = await conn.execute(text("SELECT pg_database_size(current_database())"))
            return int(found.scalar_one())
    base = hub.settings.data / "bdi.sqlite3"
    return sum(p.stat().st_size for p in (base, base.with_name("bdi.sqlite3-wal")) if p.exists())
