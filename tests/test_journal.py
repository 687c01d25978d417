"""The journal: the pipeline's database work through one connection, committed in groups."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import Connection, func, select
from support import Held

from bdi.store.db import make_engine
from bdi.store.jobs import JOB, JobRef, insert_job, parties
from bdi.store.journal import Journal, sync_url
from bdi.store.models import Participant
from bdi.store.repo import Store
from bdi.store.schema import upgrade_to_head


def a_job(spool_name: str | None = None) -> JobRef:
    return JobRef(
        participant_id="COU010234",
        upload_name="RCOU010234_00311_000001.edi",
        spool_name=spool_name or uuid.uuid4().hex,
        size=10,
        received_at=datetime.now(UTC),
    )


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[Journal]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bdi.db'}"
    await upgrade_to_head(url)
    engine = make_engine(url)
    await engine.dispose()
    journal = Journal.open(url)
    yield journal
    await journal.close()


def count_jobs(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(JOB)).scalar_one())


async def test_items_queued_meanwhile_share_one_transaction(journal: Journal) -> None:
    def transaction(conn: Connection) -> object:
        return conn.get_transaction()

    async with Held(journal):
        runs = [asyncio.create_task(journal.run(transaction)) for _ in range(5)]
    seen = await asyncio.gather(*runs)
    assert seen[0] is not None and all(t is seen[0] for t in seen)


async def test_a_failing_item_fails_alone(journal: Journal) -> None:
    """An item that breaks a constraint is retried alone and fails; its group is committed."""
    jobs = [a_job() for _ in range(5)] + [a_job("twice"), a_job("twice")]
    async with Held(journal):
        runs = [asyncio.create_task(journal.run(partial(insert_job, job=j))) for j in jobs]
    results = await asyncio.gather(*runs, return_exceptions=True)
    ids = [r for r in results if isinstance(r, int)]
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert len(errors) == 1 and isinstance(errors[0], sqlalchemy.exc.IntegrityError)
    assert isinstance(results[-1], sqlalchemy.exc.IntegrityError)  # the second "twice"
    assert await journal.run(count_jobs) == 6


async def test_committed_work_is_visible_to_the_async_store(
    journal: Journal, tmp_path: Path
) -> None:
    job_id = await journal.run(partial(insert_job, job=a_job("seen")))
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'bdi.db'}")
    try:
        job = await Store(engine).job(job_id)
        assert job is not None and job.spool_name == "seen"
    finally:
        await engine.dispose()


async def test_parties_reads_what_the_pipeline_needs(journal: Journal, tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'bdi.db'}")
    try:
        await Store(engine).add_participant(
            Participant(id="CIE000311", name="Cie", role="company", pgp_fingerprint="A" * 40,
                        active=False, created_at=datetime.now(UTC))
        )  # fmt: skip
    finally:
        await engine.dispose()
    found = await journal.run(parties)
    assert found["CIE000311"].fingerprint == "A" * 40 and not found["CIE000311"].active


async def test_parties_are_read_again_once_another_connection_changed_them(
    journal: Journal, tmp_path: Path
) -> None:
    """The journal keeps the participants it read until another connection commits (an
    administrator enabling one, say): its next read then sees the change."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'bdi.db'}")
    store = Store(engine)
    try:
        await store.add_participant(
            Participant(id="CIE000311", name="Cie", role="company", pgp_fingerprint="A" * 40,
                        active=False, created_at=datetime.now(UTC))
        )  # fmt: skip
        first = await journal.run(parties)
        assert await journal.run(parties) is first  # nothing changed: not read again
        await store.update_participant("CIE000311", active=True)
        again = await journal.run(parties)
        assert again is not first and again["CIE000311"].active
    finally:
        await engine.dispose()


async def test_a_closed_journal_refuses_work(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bdi.db'}"
    journal = Journal.open(url)
    await journal.close()
    with pytest.raises(RuntimeError, match="closed"):
        await journal.run(count_jobs)


def test_sync_url() -> None:
    assert sync_url("sqlite+aiosqlite:////srv/bdi.db") == "sqlite+pysqlite:////srv/bdi.db"
    assert sync_url("postgresql+asyncpg://u:p@db/bdi") == "postgresql+psycopg://u:p@db/bdi"
    with pytest.raises(ValueError, match="no synchronous driver"):
        sync_url("mysql+aiomysql://db/bdi")


async def test_work_given_up_before_it_starts_is_not_done(journal: Journal) -> None:
    """An upload whose session dies while its job row waits is never acknowledged: its row
    must not be written either (the spool sweep removes its file)."""
    async with Held(journal):
        given_up = asyncio.create_task(journal.run(partial(insert_job, job=a_job("gone"))))
        await asyncio.sleep(0)
        given_up.cancel()
        with pytest.raises(asyncio.CancelledError):
            await given_up
        await asyncio.sleep(0)  # the cancellation reaches the queued item
    assert await journal.run(count_jobs) == 0


def test_a_worker_thread_waits_for_its_commit(journal: Journal) -> None:
    job_id = journal.call(partial(insert_job, job=a_job()))
    assert isinstance(job_id, int) and journal.call(count_jobs) == 1
