"""Taking an upload in: durable spool file, committed job, handed on exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select
from support import Held

from bdi.pipeline.spool import Spool
from bdi.routing.layout import default_layout
from bdi.store.db import make_engine
from bdi.store.jobs import JOB, JobRef, Party
from bdi.store.journal import Journal
from bdi.store.repo import Store
from bdi.store.schema import upgrade_to_head


class Handed(list[tuple[JobRef, dict[str, Party]]]):
    """What the spool handed on to the pipeline."""

    def __init__(self) -> None:
        super().__init__()
        self.some = asyncio.Event()

    def __call__(self, job: JobRef, people: dict[str, Party]) -> None:
        self.append((job, people))
        self.some.set()


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[tuple[Spool, Journal, Handed]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bdi.db'}"
    await upgrade_to_head(url)
    engine = make_engine(url)
    journal = Journal.open(url)
    handed = Handed()
    spool = Spool(tmp_path / "spool", Store(engine), journal, handed,
                  lambda: datetime.now(UTC), default_layout())  # fmt: skip
    spool.prepare()
    yield spool, journal, handed
    await journal.close()
    await engine.dispose()


def upload(tmp_path: Path, name: str = "RCOU010234_00311_000001.edi.pgp") -> Path:
    path = tmp_path / name
    path.write_bytes(b"sealed bytes")
    return path


async def test_an_upload_is_spooled_committed_and_handed_on(
    parts: tuple[Spool, Journal, Handed], tmp_path: Path
) -> None:
    spool, journal, handed = parts
    job_id = await spool.take_in("COU010234", upload(tmp_path), "RCOU010234_00311_000001.edi.pgp")
    [(job, people)] = handed
    assert job.id == job_id and job.upload_name == "RCOU010234_00311_000001.edi"
    assert (spool.folder / job.spool_name).read_bytes() == b"sealed bytes"
    assert job.size == len(b"sealed bytes") and people == {}
    rows = journal.call(lambda conn: conn.execute(select(JOB.c.id, JOB.c.size)).all())
    assert [tuple(r) for r in rows] == [(job_id, job.size)]


async def test_a_small_upload_is_committed_in_its_job_row_without_a_spool_file(
    parts: tuple[Spool, Journal, Handed],
) -> None:
    spool, journal, handed = parts
    job_id = await spool.take_in_bytes("COU010234", b"sealed bytes", "A.edi.pgp")
    [(job, _)] = handed
    assert job.id == job_id and job.upload_name == "A.edi" and job.data == b"sealed bytes"
    assert list(spool.folder.iterdir()) == []
    rows = journal.call(lambda conn: conn.execute(select(JOB.c.size, JOB.c.data)).all())
    assert [tuple(r) for r in rows] == [(len(b"sealed bytes"), b"sealed bytes")]


@pytest.mark.parametrize("in_row", [False, True], ids=["spool-file", "in-row"])
async def test_a_job_committed_after_its_client_gave_up_is_still_handed_on(
    parts: tuple[Spool, Journal, Handed], tmp_path: Path, in_row: bool
) -> None:
    spool, journal, handed = parts
    async with Held(journal):  # the commit waits: the client gives up meanwhile
        if in_row:
            taking = asyncio.create_task(spool.take_in_bytes("COU010234", b"sealed", "A.edi"))
        else:
            taking = asyncio.create_task(spool.take_in("COU010234", upload(tmp_path), "A.edi"))
        await asyncio.sleep(0)  # take_in runs up to its wait for the commit
        taking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await taking
        assert handed == []
    async with asyncio.timeout(10):
        await handed.some.wait()
    [(job, _)] = handed
    assert job.id is not None and job.upload_name == "A.edi"


async def test_the_sweep_keeps_only_the_uploads_of_unfinished_jobs(
    parts: tuple[Spool, Journal, Handed], tmp_path: Path
) -> None:
    spool, journal, handed = parts
    for name in ("waiting.edi", "done.edi"):
        await spool.take_in("COU010234", upload(tmp_path, name), name)
    (waiting, _), (done, _) = handed
    journal.call(
        lambda conn: conn.execute(JOB.update().where(JOB.c.id == done.id).values(state="done"))
    )
    (spool.folder / "never-acknowledged.pgp").write_bytes(b"partial")
    assert await spool.sweep() == 2  # the done job's upload (not forgotten) and the orphan
    assert sorted(p.name for p in spool.folder.iterdir()) == [waiting.spool_name]
